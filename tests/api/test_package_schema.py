"""The API's package answers carry what the staff package form sets: the ISO quota (customer and staff) and the
included addresses per named pool (staff, keyed by the pool's UUID as /staff/pools lists it)."""

from hostbay.core import ipam
from hostbay.core.db import db

from .conftest import bearer


def test_package_schema_has_pool_addresses_and_iso_quota(app, client, make_user, make_package, make_token):
    a = ipam.create_pool(name="pool-a", cidr="203.0.113.0/28")
    b = ipam.create_pool(name="pool-b", cidr="192.0.2.0/28")
    named = make_package(slug="named", pool_addresses={str(a.id): 2, str(b.id): 1}, iso_quota_count=5,
                         iso_quota_bytes=2 * 1024**3)
    plain = make_package(slug="plain")
    db.session.commit()
    staff = bearer(make_token(make_user(role="admin"), "read"))
    resp = client.get("/api/v1/staff/packages", headers=staff)
    assert resp.status_code == 200, resp.data
    got = {p["slug"]: p for p in resp.get_json()}
    assert got["named"]["pool_addresses"] == {a.uuid: 2, b.uuid: 1}
    assert (got["named"]["iso_quota_count"], got["named"]["iso_quota_bytes"]) == (5, 2 * 1024**3)
    assert got["plain"]["pool_addresses"] == {} and got["plain"]["iso_quota_count"] is None
    assert got["plain"]["iso_quota_bytes"] is None
    customer = client.get("/api/v1/packages", headers=bearer(make_token(make_user(), "read")))
    assert customer.status_code == 200, customer.data
    mine = {p["slug"]: p for p in customer.get_json()["items"]}
    assert (mine["named"]["iso_quota_count"], mine["named"]["iso_quota_bytes"]) == (5, 2 * 1024**3)
    assert "pool_addresses" not in mine["named"]  # pools are staff information
    spec = client.get("/api/v1/openapi.json").get_json()["components"]["schemas"]
    staff_schema = next(v for k, v in spec.items() if k.startswith("StaffPackage"))
    assert {"pool_addresses", "iso_quota_count", "iso_quota_bytes"} <= set(staff_schema["properties"])
    assert {"iso_quota_count", "iso_quota_bytes"} <= set(spec["Package"]["properties"])
