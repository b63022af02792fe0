"""Staff administration pages on the real app and database: catalogue, customers and "view as customer", failed
work, the audit trail, node placement."""

import csv
import io

from sqlalchemy import select

from hostbay.core import jobs, placement
from hostbay.core.activity import ActivityEntry, AuditEntry
from hostbay.core.catalog import Image, Node, Package
from hostbay.core.db import db
from hostbay.core.errors import FatalDriverError
from hostbay.core.services import Service
from hostbay.testing.pytest_plugin import login


def _staff(app, make_user, role="admin"):
    client = app.test_client()
    user = make_user(role=role)
    login(client, user)
    return client, user


def _audits(action):
    return db.session.scalars(select(AuditEntry).where(AuditEntry.action == action)
                              .order_by(AuditEntry.id)).all()


PKG_FORM = {"name": "Standard 2", "slug": "std-2", "kind": "vps", "driver": "fake", "vcpus": "2",
            "memory_mib": "2048", "disk_gib": "40", "ipv4_count": "1", "port_speed_mbit": "1000",
            "price_monthly": "12.50", "price_annual": "125", "sort": "3", "visible": "1"}


def test_package_create_validates_each_field_and_is_audited(app, make_user):
    client, staff = _staff(app, make_user)
    bad = client.post("/staff/catalogue/packages/", data={**PKG_FORM, "vcpus": "two"}, follow_redirects=True)
    assert b"vCPUs must be a whole number." in bad.data
    bad = client.post("/staff/catalogue/packages/", data={**PKG_FORM, "price_monthly": "12.505"},
                      follow_redirects=True)
    assert b"The monthly price must be an amount in dollars" in bad.data
    assert db.session.scalar(select(Package).filter_by(slug="std-2")) is None
    resp = client.post("/staff/catalogue/packages/", data=PKG_FORM)
    assert resp.status_code == 302
    pkg = db.session.scalar(select(Package).filter_by(slug="std-2"))
    assert (pkg.vcpus, pkg.memory_mib, pkg.disk_gib, pkg.sort, pkg.visible) == (2, 2048, 40, 3, True)
    assert pkg.price_cents("monthly") == 1250 and pkg.price_cents("annual") == 12500
    assert pkg.price_cents("quarterly") is None
    (entry,) = _audits("package.create")
    assert entry.actor_id == staff.id and entry.after["prices"] == {"monthly": 1250, "annual": 12500}
    assert entry.address == "127.0.0.1"
    dup = client.post("/staff/catalogue/packages/", data=PKG_FORM, follow_redirects=True)
    assert b"A package with the slug std-2 exists already." in dup.data



def test_package_form_saves_addresses_per_pool_and_iso_quota(app, make_user):
    from hostbay.core import ipam

    client, staff = _staff(app, make_user)
    a = ipam.create_pool(name="pool-a", cidr="203.0.113.0/28")
    b = ipam.create_pool(name="pool-b", cidr="192.0.2.0/28")
    db.session.commit()
    page = client.get("/staff/catalogue/packages/").data
    assert f'name="pool_{a.id}"'.encode() in page and f'name="pool_{b.id}"'.encode() in page
    assert b'name="iso_quota_count"' in page
    for bad, message in (({f"pool_{a.id}": "-1"}, b"Addresses from pool pool-a must be at least 0."),
                         ({f"pool_{a.id}": "two"}, b"must be whole numbers."),
                         ({"pool_99999": "1"}, b"There is no IP pool #99999."),
                         ({"iso_quota_count": "-2"}, b"ISO images must be at least 0."),
                         ({"iso_quota_mib": "many"}, b"ISO space must be a whole number.")):
        resp = client.post("/staff/catalogue/packages/", data={**PKG_FORM, **bad}, follow_redirects=True)
        assert message in resp.data, message
    assert db.session.scalar(select(Package).filter_by(slug="std-2")) is None
    resp = client.post("/staff/catalogue/packages/", data={**PKG_FORM, f"pool_{a.id}": "2", f"pool_{b.id}": "1",
                                                           "iso_quota_count": "5", "iso_quota_mib": "2048"})
    assert resp.status_code == 302
    pkg = db.session.scalar(select(Package).filter_by(slug="std-2"))
    assert pkg.pool_counts() == {a.id: 2, b.id: 1}
    assert (pkg.iso_quota_count, pkg.iso_quota_bytes) == (5, 2048 * 1024 * 1024)
    (entry,) = _audits("package.create")
    assert entry.after["pool_addresses"] == {"pool-a": 2, "pool-b": 1}
    assert (entry.after["iso_quota_count"], entry.after["iso_quota_bytes"]) == (5, 2048 * 1024 * 1024)
    page = client.get(f"/staff/catalogue/packages/{pkg.uuid}").data
    assert f'name="pool_{a.id}" type="number" min="0" value="2"'.encode() in page
    assert f'name="pool_{b.id}" type="number" min="0" value="1"'.encode() in page
    assert b'name="iso_quota_count" type="number" min="0" value="5"' in page
    assert b'name="iso_quota_mib" type="number" min="0" value="2048"' in page
    # a refused change keeps the saved counts; then pool B is dropped (blank) and the quota cleared
    client.post(f"/staff/catalogue/packages/{pkg.uuid}", data={**PKG_FORM, f"pool_{b.id}": "-1"})
    db.session.expire_all()
    assert db.session.get(Package, pkg.id).pool_counts() == {a.id: 2, b.id: 1}
    client.post(f"/staff/catalogue/packages/{pkg.uuid}", data={**PKG_FORM, f"pool_{a.id}": "3",
                                                               f"pool_{b.id}": ""})
    db.session.expire_all()
    pkg = db.session.get(Package, pkg.id)
    assert pkg.pool_counts() == {a.id: 3} and pkg.iso_quota_count is None and pkg.iso_quota_bytes is None
    (update,) = _audits("package.update")
    assert update.before["pool_addresses"] == {"pool-a": 2, "pool-b": 1}
    assert update.after["pool_addresses"] == {"pool-a": 3} and update.after["iso_quota_count"] is None


def test_price_change_reaches_existing_services_only_when_staff_say_so(app, make_user, make_package,
                                                                         make_service):
    client, staff = _staff(app, make_user)
    pkg = make_package(slug="p", monthly_cents=1000)
    cust = make_user()
    svc = make_service(cust, pkg)
    form = {**PKG_FORM, "slug": "p", "driver": pkg.driver, "price_monthly": "15.00"}
    client.post(f"/staff/catalogue/packages/{pkg.uuid}", data={**form, "apply_existing": "0"})
    db.session.expire_all()
    assert db.session.get(Package, pkg.id).price_cents("monthly") == 1500
    assert db.session.get(Service, svc.id).price_cents == 1000  # existing service keeps its price
    client.post(f"/staff/catalogue/packages/{pkg.uuid}", data={**form, "price_monthly": "16.00",
                                                               "apply_existing": "1"})
    db.session.expire_all()
    assert db.session.get(Service, svc.id).price_cents == 1600
    told = db.session.scalars(select(ActivityEntry).where(ActivityEntry.user_id == cust.id)).all()
    assert any("changes from $10.00 to $16.00" in a.message and "next renewal" in a.message for a in told)
    (change,) = _audits("service.price")
    assert (change.before, change.after) == ({"price_cents": 1000}, {"price_cents": 1600})


def test_image_per_driver(app, make_user):
    client, _ = _staff(app, make_user)
    bad = client.post("/staff/catalogue/images/", data={"driver": "nope", "name": "x", "slug": "x", "source": "x",
                                                        "min_disk_gib": "1"}, follow_redirects=True)
    assert b"Choose the virtualization driver" in bad.data
    bad = client.post("/staff/catalogue/images/", data={"driver": "fake", "name": "Debian", "slug": "deb",
                                                        "source": "", "min_disk_gib": "1"}, follow_redirects=True)
    assert b"needs a template reference" in bad.data
    client.post("/staff/catalogue/images/", data={"driver": "fake", "name": "Debian 12", "slug": "debian-12",
                                                  "source": "debian-12.qcow2", "min_disk_gib": "4", "enabled": "1"})
    img = db.session.scalar(select(Image).filter_by(slug="debian-12"))
    assert (img.driver, img.source, img.min_disk_gib, img.enabled) == ("fake", "debian-12.qcow2", 4, True)
    assert _audits("image.create")[0].after["source"] == "debian-12.qcow2"


def test_customer_search_detail_and_view_as(app, make_user, make_package, make_service):
    from hostbay.core import ipam

    client, staff = _staff(app, make_user, role="support")
    cust = make_user(email="alice@example.test", balance_cents=2500)
    other = make_user(email="bob@example.test")
    svc = make_service(cust, make_package(), hostname="alice-web.example.test")
    ipam.create_pool(name="pub4", cidr="192.0.2.0/28", gateway="192.0.2.1")
    (addr,) = ipam.allocate_for_service(db.session.get(Service, svc.id))
    for q in ("alice", svc.uuid, addr.address):
        page = client.get("/staff/customers/", query_string={"q": q}).get_data(as_text=True)
        assert "alice@example.test" in page and "bob@example.test" not in page, q
    detail = client.get(f"/staff/customers/{cust.uuid}").get_data(as_text=True)
    assert "alice-web.example.test" in detail and "$25.00" in detail
    assert client.get(f"/staff/customers/{staff.uuid}").status_code == 404  # staff are not customers
    view = client.get(f"/staff/customers/{cust.uuid}/view-as").get_data(as_text=True)
    assert "alice-web.example.test" in view and "Read-only" in view and "<form" not in view.split("view-as")[1]
    (entry,) = _audits("customer.view_as")
    assert entry.actor_id == staff.id and entry.target_id == cust.uuid
    cust_client = app.test_client()
    login(cust_client, cust)
    assert "viewed your dashboard (read-only)" in cust_client.get("/panel/activity").get_data(as_text=True)
    assert other.id != cust.id


def _failed_op(svc):
    op = jobs.Operation(key=f"t:{svc.id}", kind="core.ping", service_id=svc.id, user_id=svc.user_id, state=jobs.FAILED,
                        attempts=4, error="libvirt: domain hbx-1 not found (staff detail)", payload={})
    db.session.add(op)
    db.session.commit()
    return op


def test_failed_work_retry_bulk_and_abandon(app, make_user, make_package, make_service):
    client, staff = _staff(app, make_user)
    cust = make_user()
    pkg = make_package()
    a, b, c = (_failed_op(make_service(cust, pkg)) for _ in range(3))
    page = client.get("/staff/operations/").get_data(as_text=True)
    assert "libvirt: domain hbx-1 not found (staff detail)" in page and "4 / 4" in page
    client.post(f"/staff/operations/{a.id}/retry")
    db.session.expire_all()
    assert db.session.get(jobs.Operation, a.id).state == jobs.SUCCEEDED  # re-ran to success
    assert [e.target_id for e in _audits("operation.retry")] == [a.id]
    confirm = client.get(f"/staff/operations/{b.id}/abandon").get_data(as_text=True)
    assert "stays in state" in confirm and "No money moves" in confirm
    client.post(f"/staff/operations/{b.id}/abandon", data={"reason": "host replaced"})  # no confirmation
    db.session.expire_all()
    assert db.session.get(jobs.Operation, b.id).state == jobs.FAILED
    client.post(f"/staff/operations/{b.id}/abandon", data={"reason": "host replaced", "confirm": "yes"})
    db.session.expire_all()
    assert db.session.get(jobs.Operation, b.id).state == "abandoned"
    (ab,) = _audits("operation.abandon")
    assert ab.before == {"state": "failed"} and "host replaced" in ab.detail and "stays in state" in ab.detail
    resp = client.post("/staff/operations/retry", data={"op": [b.id, c.id]}, follow_redirects=True)
    assert b"1 operation queued again; 1 skipped" in resp.data
    db.session.expire_all()
    assert db.session.get(jobs.Operation, b.id).state == "abandoned"
    assert db.session.get(jobs.Operation, c.id).state == jobs.SUCCEEDED


def test_audit_trail_filters_difference_and_csv(app, make_user, make_package):
    client, staff = _staff(app, make_user)
    client.post("/staff/catalogue/packages/", data=PKG_FORM)
    pkg = db.session.scalar(select(Package).filter_by(slug="std-2"))
    client.post(f"/staff/catalogue/packages/{pkg.uuid}", data={**PKG_FORM, "name": "Standard Two",
                                                               "price_monthly": "13.00"})
    page = client.get("/staff/audit/", query_string={"kind": "package.update"}).get_data(as_text=True)
    assert "package.update" in page and "package.create" not in page
    assert "<del>Standard 2</del> → <ins>Standard Two</ins>" in page
    assert "<del>1250</del> → <ins>1300</ins>" in page
    assert staff.email in page and "from 127.0.0.1" in page
    assert "package.update" not in client.get("/staff/audit/", query_string={"actor": "nobody@"}).get_data(True)
    resp = client.get("/staff/audit/export.csv", query_string={"kind": "package."})
    rows = list(csv.DictReader(io.StringIO(resp.get_data(as_text=True))))
    assert resp.mimetype == "text/csv" and [r["action"] for r in rows] == ["package.update", "package.create"]
    assert "name: Standard 2 → Standard Two" in rows[0]["difference"] and rows[0]["actor"] == staff.email
    assert client.get("/staff/audit/", query_string={"since": "yesterday"}).status_code == 400


def test_staff_home_counts_link_to_queues(app, make_user, make_package, make_service):
    client, _ = _staff(app, make_user)
    _failed_op(make_service(make_user(), make_package()))
    page = client.get("/staff/").get_data(as_text=True)
    assert '<a href="/staff/operations/"><strong>1</strong> Failed operations</a>' in page
    assert "Recent audit entries" in page
    billing, _ = _staff(app, make_user, role="billing")
    page = billing.get("/staff/").get_data(as_text=True)
    assert "Refund requests" in page and "Failed operations" not in page  # only what the role may open


def test_drained_node_takes_no_new_services(app, make_user, make_package, make_node, make_service):
    client, _ = _staff(app, make_user)
    node = make_node()
    client.post(f"/staff/nodes/{node.id}/placement", data={"set": "drain"})
    db.session.expire_all()
    assert db.session.get(Node, node.id).draining is True
    svc = make_service(make_user(), make_package(), state="pending")
    try:
        placement.place(svc)
        raise AssertionError("a draining node took a new service")
    except FatalDriverError:
        db.session.rollback()
    page = client.get(f"/staff/nodes/{node.id}").get_data(as_text=True)
    assert "Draining: no new services" in page and "Capacity and use" in page
    client.post(f"/staff/nodes/{node.id}/placement", data={"set": "undrain"})
    svc = db.session.get(Service, svc.id)
    assert placement.place(svc).id == node.id
    assert [e.after["draining"] for e in _audits("node.placement")] == [True, False]


def test_services_filter_by_package_and_show_ended_ones(app, make_user, make_package, make_service):
    client, _ = _staff(app, make_user, role="support")
    a, b = make_package(slug="small"), make_package(slug="large")
    cust = make_user()
    make_service(cust, a, hostname="small-one.example.test", state="terminated")
    make_service(cust, b, hostname="large-one.example.test")
    page = client.get("/staff/services/", query_string={"package": "small"}).get_data(as_text=True)
    assert "small-one.example.test" in page and "large-one.example.test" not in page  # ended ones included


def test_staff_create_a_dedicated_package_and_retire_a_vps_package_through_the_form(app, make_user, make_service):
    import pytest

    from hostbay.core import billing
    from hostbay.core.errors import UserError

    client, _ = _staff(app, make_user)
    power = sorted(app.extensions["hostbay"].drivers.get("power", {}))
    assert power, "a power driver (dedicated servers) is loaded in the test app"
    resp = client.post("/staff/catalogue/packages/", data={
        **PKG_FORM, "name": "Dedicated E", "slug": "ded-e", "kind": "dedicated", "driver": power[0], "vcpus": "8",
        "memory_mib": "65536", "disk_gib": "960", "price_monthly": "99", "price_annual": ""})
    assert resp.status_code == 302, resp.get_data(as_text=True)[:2000]
    ded = db.session.scalar(select(Package).filter_by(slug="ded-e"))
    assert (ded.kind, ded.driver, ded.price_cents("monthly"), ded.memory_mib) == ("dedicated", power[0], 9900, 65536)

    assert client.post("/staff/catalogue/packages/", data=PKG_FORM).status_code == 302
    vps = db.session.scalar(select(Package).filter_by(slug="std-2"))
    customer = make_user(balance_cents=10000)
    running = make_service(customer, vps, state="active")
    edit = {k: v for k, v in PKG_FORM.items() if k not in ("slug", "kind")}
    resp = client.post(f"/staff/catalogue/packages/{vps.uuid}", data={**edit, "retired": "1"})
    assert resp.status_code == 302
    db.session.expire_all()
    vps = db.session.get(Package, vps.id)
    assert (vps.retired, vps.orderable) == (True, False)
    (entry,) = _audits("package.update")
    assert entry.before["retired"] is False and entry.after["retired"] is True
    shopper = app.test_client()
    login(shopper, customer)
    order_page = shopper.get("/panel/order").get_data(as_text=True)
    assert "Standard 2" not in order_page and "Dedicated E" in order_page
    with pytest.raises(UserError):
        billing.place_order(customer, vps, "monthly", "late.example.test", key="retired-order")
    db.session.rollback()
    assert db.session.get(Service, running.id).state == "active"  # existing services keep running
