"""Staff reserve/assign/move/release: audited, and the network filter follows every change."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from hostbay.core import ipam, network
from hostbay.core.activity import AuditEntry
from hostbay.core.errors import UserError
from hostbay.testing.fakes import FakeVirtDriver
from hostbay.testing.pytest_plugin import login


def _filter(svc):
    return FakeVirtDriver.servers[svc.infra_ref["id"]]["filter"]


def _audits(db, action):
    return db.session.scalars(select(AuditEntry).where(AuditEntry.action == action)).all()


@pytest.fixture
def admin(make_user):
    return make_user(role="admin")


def test_provisioned_filter_then_staff_assign_move_release_update_it(db, running_service, admin, clock):
    ipam.create_pool(name="p", cidr="198.51.100.0/28", gateway="198.51.100.1")
    a, b = running_service(), running_service()
    ipam.allocate_for_service(a), ipam.allocate_for_service(b)
    assert network.apply_network_filter(a) == 1 and network.apply_network_filter(b) == 1
    assert _filter(a) == ["198.51.100.2"] and _filter(b) == ["198.51.100.3"]

    ipam.assign("198.51.100.9", a.uuid, admin)
    db.session.commit()  # the caller commits; the filter updates run after it
    assert _filter(a) == ["198.51.100.2", "198.51.100.9"]
    ipam.move("198.51.100.9", b.uuid, admin)
    db.session.commit()
    assert _filter(a) == ["198.51.100.2"] and _filter(b) == ["198.51.100.3", "198.51.100.9"]
    ipam.release("198.51.100.3", admin)
    db.session.commit()
    assert _filter(b) == ["198.51.100.9"]
    row = ipam.get_address("198.51.100.3")
    assert row.state == "free" and row.cooling and row.service_id is None

    (assign,) = _audits(db, "ip.assign")
    assert assign.actor_id == admin.id and assign.after == {"state": "assigned", "service": a.uuid}
    (mv,) = _audits(db, "ip.move")
    assert mv.before == {"service": a.uuid} and mv.after == {"service": b.uuid}
    (rel,) = _audits(db, "ip.release")
    assert rel.before["service"] == b.uuid


def test_reserve_keeps_an_address_out_of_allocation(db, running_service, admin):
    ipam.create_pool(name="p", cidr="10.0.0.0/30")  # .1, .2
    ipam.reserve("10.0.0.1", "core router", admin)
    assert ipam.allocate_for_service(running_service())[0].address == "10.0.0.2"
    with pytest.raises(UserError, match="not free"):
        ipam.reserve("10.0.0.2", "x", admin)
    svc = running_service()
    ipam.assign("10.0.0.1", svc.uuid, admin)  # a reserved address can be assigned on purpose
    assert [a.address for a in ipam.addresses_for(svc)] == ["10.0.0.1"]
    assert _audits(db, "ip.reserve")[0].after["note"] == "core router"


def test_assign_refuses_cooling_addresses_unless_forced(db, running_service, admin, clock):
    ipam.create_pool(name="p", cidr="10.0.0.0/29")
    svc, other = running_service(), running_service()
    ipam.assign("10.0.0.3", svc.uuid, admin)
    ipam.release("10.0.0.3", admin)
    with pytest.raises(UserError, match="cooldown"):
        ipam.assign("10.0.0.3", other.uuid, admin)
    ipam.assign("10.0.0.3", other.uuid, admin, force_cooldown=True)
    assert [a.address for a in ipam.addresses_for(other)] == ["10.0.0.3"]


def test_gateway_stays_reserved_and_bad_input_is_explained(db, running_service, admin):
    ipam.create_pool(name="p", cidr="10.0.0.0/29", gateway="10.0.0.1")
    with pytest.raises(UserError, match="gateway"):
        ipam.release("10.0.0.1", admin)
    with pytest.raises(UserError, match="not an IP address"):
        ipam.assign("nonsense", running_service().uuid, admin)
    with pytest.raises(UserError, match="No service"):
        ipam.assign("10.0.0.2", "no-such-uuid", admin)
    with pytest.raises(UserError, match="not in any pool"):
        ipam.assign("192.0.2.1", running_service().uuid, admin)


def test_staff_pages_need_the_network_permission(client, db, make_user, running_service, admin):
    pool = ipam.create_pool(name="web", cidr="10.50.0.0/28")
    svc = running_service()
    ipam.allocate_for_service(svc)
    support = make_user(role="support")
    login(client, support)
    assert client.get("/staff/network/").status_code == 404
    assert client.get("/staff/network/rdns").status_code == 200  # support may review reverse DNS
    client.post("/logout")
    login(client, admin)
    page = client.get("/staff/network/")
    assert page.status_code == 200 and b"10.50.0.0/28" in page.data
    detail = client.get(f"/staff/network/pools/{pool.uuid}?state=assigned")
    assert svc.uuid.encode() in detail.data and svc.user.email.encode() in detail.data
    resp = client.post("/staff/network/addresses", data={"action": "reserve", "address": "10.50.0.9",
                                                         "note": "spare"})
    assert resp.status_code == 302
    assert ipam.get_address("10.50.0.9").state == "reserved"
    resp = client.post("/staff/network/pools", data={"name": "v6", "cidr": "2001:db8:50::/48", "prefix": "64",
                                                     "rdns_policy": "approval"})
    assert resp.status_code == 302
    v6 = db.session.scalar(select(ipam.IpPool).where(ipam.IpPool.name == "v6"))
    assert v6.rdns_policy == "approval"
    listing = client.get("/staff/network/")
    assert b"2001:db8:50::/48" in listing.data and b"65535 left" in listing.data
    assert client.get(f"/staff/network/pools/{v6.uuid}").status_code == 200
    bad = client.post("/staff/network/pools", data={"name": "x", "cidr": "10.50.0.0/29"}, follow_redirects=True)
    assert b"overlaps" in bad.data
