"""Endpoints done successfully through the API, with their effect checked where it lands: ISO upload (the file and
its row), mount and eject (the fake server's drive, the mount row, the operations), reverse DNS (the DNS backend,
the address's PTR, the approval queue), and the staff lists of nodes, packages, pools and a pool's addresses."""

import hashlib

import pytest
from sqlalchemy import select

from hostbay.core import ipam, jobs
from hostbay.core import iso as iso_mod
from hostbay.core.db import db
from hostbay.testing import FakeVirtDriver

from .conftest import bearer


def test_iso_upload_mount_and_eject(app, client, make_user, make_token, make_iso, active_service):
    owner, support = make_user(), make_user(role="support")
    svc = active_service(owner)
    h = bearer(make_token(owner))
    data = make_iso()
    up = client.post("/api/v1/isos?filename=rescue.iso", headers=h | {"Content-Type": "application/octet-stream"},
                     data=data)
    assert up.status_code == 201, up.data
    body = up.get_json()
    assert body["name"] == "rescue.iso" and body["state"] == "pending" and body["size_bytes"] == len(data)
    assert body["sha256"] == hashlib.sha256(data).hexdigest()
    row = db.session.scalar(select(iso_mod.IsoImage).filter_by(uuid=body["uuid"]))
    assert row.user_id == owner.id and row.path.read_bytes() == data
    assert [i["uuid"] for i in client.get("/api/v1/isos", headers=h).get_json()] == [body["uuid"]]

    # pending: refused, nothing in the drive
    refused = client.put(f"/api/v1/services/{svc.uuid}/iso", headers=h, json={"iso": body["uuid"]})
    assert refused.status_code == 400 and "approved" in refused.get_json()["detail"]
    assert db.session.scalar(select(iso_mod.IsoMount)) is None
    iso_mod.decide(row, True, support)
    db.session.commit()

    mount = client.put(f"/api/v1/services/{svc.uuid}/iso", headers=h, json={"iso": body["uuid"]})
    assert mount.status_code == 202, mount.data
    assert mount.get_json()["title"] == "Mount ISO"
    op = db.session.get(jobs.Operation, mount.get_json()["id"])
    assert op.kind == "service.mount_iso" and op.state == "succeeded"
    db.session.expire_all()
    m = db.session.scalar(select(iso_mod.IsoMount).filter_by(service_id=svc.id))
    assert m.state == iso_mod.MOUNTED and m.iso_id == row.id
    assert FakeVirtDriver.servers[svc.uuid]["iso"] == str(row.path)

    eject = client.delete(f"/api/v1/services/{svc.uuid}/iso", headers=h)
    assert eject.status_code == 202, eject.data
    op = db.session.get(jobs.Operation, eject.get_json()["id"])
    assert op.kind == "service.eject_iso" and op.state == "succeeded"
    db.session.expire_all()
    assert db.session.scalar(select(iso_mod.IsoMount).filter_by(service_id=svc.id)) is None
    assert not FakeVirtDriver.servers[svc.uuid]["iso"]
    again = client.delete(f"/api/v1/services/{svc.uuid}/iso", headers=h)
    assert again.status_code == 400 and "No ISO is mounted" in again.get_json()["detail"]


@pytest.fixture
def ordered(app, client, make_user, make_token, make_node, make_package, make_image):
    """A customer with a service ordered through the API on a node with an address pool, and the in-memory DNS
    backend configured."""
    from hostbay.core.rdns import DnsBackendConfig
    from hostbay.testing.fakes import FakeDns

    node = make_node(name="hv-effects-1", vcpus=16, memory_mib=65536, disk_gib=1000)
    pool = ipam.create_pool(name="effects-v4", cidr="198.51.100.0/24", gateway="198.51.100.1", node_ids=[node.id])
    FakeDns.records.clear()
    db.session.add(DnsBackendConfig(driver="fake", label="In-memory DNS"))
    db.session.commit()
    user = make_user(balance_cents=20000)
    pkg = make_package(slug="eff-small", monthly_cents=1000, vcpus=2)
    h = bearer(make_token(user))
    resp = client.post("/api/v1/orders", headers=h | {"Idempotency-Key": "eff-1"},
                       json={"package": pkg.uuid, "cycle": "monthly", "hostname": "web1.example.test",
                             "image": make_image().uuid})
    assert resp.status_code == 201, resp.data
    yield {"user": user, "h": h, "service": resp.get_json()["uuid"], "pool": pool, "node": node, "pkg": pkg,
           "dns": FakeDns}
    FakeDns.records.clear()


def test_set_rdns_applies_it_or_queues_it_for_approval(app, client, make_user, make_token, ordered):
    uuid, h, dns = ordered["service"], ordered["h"], ordered["dns"]
    addrs = client.get(f"/api/v1/services/{uuid}/addresses", headers=h).get_json()
    assert len(addrs) == 1 and addrs[0]["ptr"] is None
    address = addrs[0]["address"]
    resp = client.put(f"/api/v1/services/{uuid}/addresses/{address}/rdns", headers=h,
                      json={"hostname": "mail.example.test"})
    assert resp.status_code == 202, resp.data
    assert resp.get_json()["address"] == address and resp.get_json()["hostname"] == "mail.example.test"
    op = db.session.scalar(select(jobs.Operation).filter_by(kind="rdns.apply"))
    assert op is not None and op.state == "succeeded" and op.payload["address"] == address
    assert dns.records[address] == "mail.example.test"
    db.session.expire_all()
    assert db.session.scalar(select(ipam.IpAddress.ptr).filter_by(address=address)) == "mail.example.test"
    assert client.get(f"/api/v1/services/{uuid}/addresses", headers=h).get_json()[0]["ptr"] == "mail.example.test"

    # a pool whose policy is staff approval: nothing reaches DNS, the request waits in the staff queue
    ordered["pool"].rdns_policy = "approval"
    db.session.commit()
    resp = client.put(f"/api/v1/services/{uuid}/addresses/{address}/rdns", headers=h,
                      json={"hostname": "other.example.test"})
    assert resp.status_code == 202 and resp.get_json()["state"] == "pending", resp.data
    assert dns.records[address] == "mail.example.test"
    queue = client.get("/api/v1/staff/queues/approvals", headers=bearer(make_token(make_user(role="admin"))))
    assert [(e["type"], e["uuid"]) for e in queue.get_json()] == [("rdns", resp.get_json()["uuid"])]
    # an address that is not the service's: 404, nothing written
    other = client.put(f"/api/v1/services/{uuid}/addresses/192.0.2.77/rdns", headers=h, json={"hostname": "x.test"})
    assert other.status_code == 404


def test_staff_lists_nodes_packages_pools_and_a_pools_addresses(app, client, make_user, make_token, ordered):
    staff = bearer(make_token(make_user(role="admin"), "read"))
    nodes = client.get("/api/v1/staff/nodes", headers=staff)
    assert nodes.status_code == 200, nodes.data
    (node,) = [n for n in nodes.get_json() if n["name"] == "hv-effects-1"]
    assert node["vcpus"] == 16 and node["used_vcpus"] == 2 and node["driver"] == "fake" and node["enabled"]

    pkgs = client.get("/api/v1/staff/packages", headers=staff)
    assert pkgs.status_code == 200
    (pkg,) = [p for p in pkgs.get_json() if p["uuid"] == ordered["pkg"].uuid]
    assert pkg["driver"] == "fake" and pkg["retired"] is False

    pools = client.get("/api/v1/staff/pools", headers=staff)
    assert pools.status_code == 200
    (pool,) = pools.get_json()
    assert (pool["uuid"], pool["name"], pool["cidr"], pool["gateway"]) == \
        (ordered["pool"].uuid, "effects-v4", "198.51.100.0/24", "198.51.100.1")
    assert pool["usage"].get("assigned") == 1, pool["usage"]

    page = client.get(f"/api/v1/staff/pools/{pool['uuid']}/addresses?per_page=100", headers=staff)
    assert page.status_code == 200
    items = page.get_json()["items"]
    assigned = [a for a in items if a["state"] == "assigned"]
    assert [a["service"] for a in assigned] == [ordered["service"]]
    customer_view = client.get(f"/api/v1/services/{ordered['service']}/addresses", headers=ordered["h"]).get_json()
    assert assigned[0]["address"] == customer_view[0]["address"]
    assert all(a["service"] is None for a in items if a["state"] != "assigned")
    assert page.get_json()["total"] == len(items) or page.get_json()["next_page"] == 2
    # the permission of each list: a billing token has none of them
    billing = bearer(make_token(make_user(role="billing"), "read"))
    for url in ("/api/v1/staff/nodes", "/api/v1/staff/pools", f"/api/v1/staff/pools/{pool['uuid']}/addresses"):
        assert client.get(url, headers=billing).status_code == 403, url
