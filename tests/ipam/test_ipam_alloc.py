"""Pools, allocation for services, idempotency, binding, exhaustion and the cooldown."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from hostbay.core import ipam
from hostbay.core.activity import AuditEntry
from hostbay.core.ipam import IpAddress, PoolExhausted


def test_ipv4_pool_materialises_rows_with_reserved_addresses(db):
    pool = ipam.create_pool(name="v4", cidr="203.0.113.0/24", gateway="203.0.113.1",
                            reserved=["203.0.113.2-203.0.113.5", "203.0.113.248/29"],
                            nameservers=["192.0.2.53"])
    usage = ipam.pool_usage(pool)
    assert usage["size"] == 256
    # network, broadcast, gateway, .2-.5 (4), .248-.255 (8, broadcast included) -> 1 + 1 + 4 + 7 = 14 reserved
    assert usage["reserved"] == 14 and usage["free"] == 242 and usage["assigned"] == 0
    notes = dict(db.session.execute(select(IpAddress.address, IpAddress.note)
                                    .where(IpAddress.state == "reserved")).all())
    assert notes["203.0.113.1"] == "gateway" and notes["203.0.113.0"] == "network/broadcast"
    assert notes["203.0.113.3"] == "reserved range"


@pytest.mark.parametrize("kwargs, message", [
    (dict(cidr="203.0.113.5/24"), "not a subnet"),
    (dict(cidr="10.0.0.0/15"), "at most a /16"),
    (dict(cidr="203.0.113.0/24", gateway="198.51.100.1"), "inside"),
    (dict(cidr="203.0.113.0/24", reserved=["203.0.114.1"]), "not inside"),
    (dict(cidr="2001:db8::/48", prefix=40), "longer than"),
])
def test_bad_pools_are_refused_with_a_clear_message(db, kwargs, message):
    with pytest.raises(ipam.PoolError, match=message):
        ipam.create_pool(name="bad", **kwargs)


def test_overlapping_pools_are_refused(db):
    ipam.create_pool(name="a", cidr="10.1.0.0/24")
    with pytest.raises(ipam.PoolError, match="overlaps"):
        ipam.create_pool(name="b", cidr="10.1.0.128/25")


def test_allocate_package_addresses_is_idempotent(db, running_service, make_package):
    ipam.create_pool(name="v4", cidr="203.0.113.0/28", gateway="203.0.113.1", nameservers=["192.0.2.53"])
    ipam.create_pool(name="v6", cidr="2001:db8:10::/48", gateway="2001:db8:10::1", prefix=64)
    svc = running_service(ipv4_count=2, ipv6=True)
    first = ipam.allocate_for_service(svc)
    assert [a.version for a in first] == [4, 4, 6]
    assert {a.address for a in first if a.version == 4} == {"203.0.113.2", "203.0.113.3"}
    v6 = [a for a in first if a.version == 6][0]
    # index 0 of the /48 holds the gateway's /64; the first service prefix is 2001:db8:10:1::/64
    assert v6.address == "2001:db8:10:1::1" and v6.prefix == 64 and v6.gateway == "2001:db8:10::1"
    assert first[0].gateway == "203.0.113.1" and first[0].prefix == 28
    again = ipam.allocate_for_service(svc)
    assert again == first == ipam.addresses_for(svc)
    assert ipam.nameservers_for(svc) == ["192.0.2.53"]
    other = running_service(ipv4_count=1, ipv6=True)
    assert [a.address for a in ipam.allocate_for_service(other)] == ["203.0.113.4", "2001:db8:10:2::1"]


def test_package_without_ipv6_or_without_a_v6_pool_gets_only_ipv4(db, running_service):
    ipam.create_pool(name="v4", cidr="203.0.113.0/28")
    svc = running_service(ipv4_count=1, ipv6=True)  # no IPv6 pool: IPv6 is skipped, not an error
    assert [a.version for a in ipam.allocate_for_service(svc)] == [4]


def test_pools_bound_to_node_then_location_then_general(db, running_service, make_node):
    node_a = make_node(location="ams")
    node_b = make_node(location="ams")
    node_c = make_node(location="fra")
    ipam.create_pool(name="general", cidr="10.9.0.0/28")
    ipam.create_pool(name="ams", cidr="10.8.0.0/28", location="ams")
    ipam.create_pool(name="node-a", cidr="10.7.0.0/28", node_ids=[node_a.id])
    assert ipam.allocate_for_service(running_service(node=node_a))[0].address.startswith("10.7.")
    assert ipam.allocate_for_service(running_service(node=node_b))[0].address.startswith("10.8.")
    assert ipam.allocate_for_service(running_service(node=node_c))[0].address.startswith("10.9.")


def test_exhausted_pool_takes_nothing_and_raises_a_transient_error(db, running_service):
    ipam.create_pool(name="tiny", cidr="10.0.0.0/30")  # .1 and .2 usable
    svc = running_service(ipv4_count=3)
    svc.hostname = "kept.example.test"  # the caller's own pending change survives the failed allocation
    with pytest.raises(PoolExhausted) as exc:
        ipam.allocate_for_service(svc)
    assert "staff" in exc.value.customer_message and "10.0.0" not in exc.value.customer_message
    db.session.commit()
    assert db.session.scalar(select(func.count()).where(IpAddress.state == "assigned")) == 0
    assert ipam.addresses_for(svc) == []
    db.session.expire_all()
    assert svc.hostname == "kept.example.test"


def test_released_address_is_not_reused_inside_its_cooldown(app, db, clock, running_service):
    app.config["HOSTBAY_IP_COOLDOWN_HOURS"] = 24
    ipam.create_pool(name="small", cidr="10.0.0.0/29", gateway="10.0.0.1")  # .2-.6 free: 5 addresses
    svcs = [running_service(ipv4_count=1) for _ in range(5)]
    addrs = [ipam.allocate_for_service(s)[0].address for s in svcs]
    assert len(set(addrs)) == 5
    ipam.release_for_service(svcs[2])
    db.session.commit()
    assert ipam.addresses_for(svcs[2]) == []
    audit = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "ip.release"))
    assert audit.before == {"addresses": [addrs[2]]}
    newcomer = running_service(ipv4_count=1)
    clock.advance(hours=23, minutes=59)
    with pytest.raises(PoolExhausted):
        ipam.allocate_for_service(newcomer)
    clock.advance(minutes=1)
    assert [a.address for a in ipam.allocate_for_service(newcomer)] == [addrs[2]]


def test_never_used_addresses_go_before_cooled_down_ones(app, db, clock, running_service):
    app.config["HOSTBAY_IP_COOLDOWN_HOURS"] = 1
    ipam.create_pool(name="p", cidr="10.0.0.0/28")
    first = running_service()
    a = ipam.allocate_for_service(first)[0].address
    ipam.release_for_service(first)
    db.session.commit()
    clock.advance(hours=2)
    b = ipam.allocate_for_service(running_service())[0].address
    assert a == "10.0.0.1" and b == "10.0.0.2"  # the released one waits at the back of the queue


def test_pool_cooldown_overrides_the_default(app, db, clock, running_service):
    app.config["HOSTBAY_IP_COOLDOWN_HOURS"] = 24
    ipam.create_pool(name="p", cidr="10.0.0.0/30", cooldown_hours=0)  # .1, .2
    a, b = running_service(), running_service()
    ipam.allocate_for_service(a), ipam.allocate_for_service(b)
    ipam.release_for_service(a)
    db.session.commit()
    assert ipam.allocate_for_service(running_service())[0].address == "10.0.0.1"


def test_released_ipv6_prefix_is_retired_not_reused(db, running_service):
    ipam.create_pool(name="v6", cidr="2001:db8::/126", prefix=128)  # 4 single addresses, index 0..3
    s1 = running_service(ipv4_count=0, ipv6=True)
    got = ipam.allocate_for_service(s1)
    assert [a.address for a in got] == ["2001:db8::1"]
    ipam.release_for_service(s1)
    db.session.commit()
    s2 = running_service(ipv4_count=0, ipv6=True)
    assert [a.address for a in ipam.allocate_for_service(s2)] == ["2001:db8::2"]
    assert db.session.scalar(select(IpAddress.state).where(IpAddress.address == "2001:db8::1")) == "released"
