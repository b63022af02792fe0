"""The PowerDNS backend against a real PowerDNS Authoritative server on loopback.

Start it with ``start_extra_pdns`` (scripts/services.d/pdns.sh), which exports HOSTBAY_TEST_PDNS_URL and
HOSTBAY_TEST_PDNS_KEY (and HOSTBAY_TEST_PDNS_DNS for ``dig``). Without them these tests skip.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import uuid

import pytest

from hostbay.core.errors import FatalDriverError, TransientDriverError
from hostbay.plugins.powerdns import PowerDnsBackend, reverse_name, reverse_zone
from hostbay.testing import DnsBackendConformance

URL = os.environ.get("HOSTBAY_TEST_PDNS_URL")
KEY = os.environ.get("HOSTBAY_TEST_PDNS_KEY")
DNS = os.environ.get("HOSTBAY_TEST_PDNS_DNS", "")
pytestmark = pytest.mark.skipif(not (URL and KEY), reason="PowerDNS not running (start_extra_pdns)")


def backend(**extra) -> PowerDnsBackend:
    return PowerDnsBackend({"api_url": URL, "api_key": KEY, "ttl": 60, **extra})


def dig_ptr(address: str) -> str | None:
    """Ask the PowerDNS DNS listener itself (not the API)."""
    host, port = DNS.rsplit(":", 1)
    out = subprocess.run(["dig", "+short", "+time=2", "+tries=1", "-p", port, f"@{host}", "-x", address],
                         capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    return out.rstrip(".") or None


def lookup(drv, address):
    if DNS and shutil.which("dig"):
        return dig_ptr(address)
    return drv.get_ptr(address)


@pytest.fixture
def subnet():
    """A random /28 in 198.18.0.0/15 (benchmarking space) and the cleanup of the zones a test created."""
    second, third, fourth = random.choice((18, 19)), random.randrange(256), random.randrange(16) * 16
    made: list[str] = [f"{third}.{second}.198.in-addr.arpa."]
    yield f"198.{second}.{third}.{fourth}/28", made
    drv = backend()
    for zone in made:
        try:
            drv._request("DELETE", f"/servers/localhost/zones/{zone}")
        except FatalDriverError:
            pass


class TestConformance(DnsBackendConformance):
    def make_driver(self):
        return backend()

    def make_unreachable_driver(self):
        return backend(api_url="http://127.0.0.1:1/api/v1")  # nothing listens there

    def lookup_ptr(self, drv, address):
        return lookup(drv, address)


def test_names_and_zones():
    assert reverse_name("192.0.2.5") == "5.2.0.192.in-addr.arpa."
    assert reverse_zone("192.0.2.5") == "2.0.192.in-addr.arpa."
    assert reverse_zone("192.0.2.5", v4_prefix=16) == "0.192.in-addr.arpa."
    assert reverse_zone("2001:db8:1::1") == "1.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa."


def test_creates_missing_reverse_zones_and_uses_the_longest_existing_one(subnet):
    cidr, made = subnet
    drv = backend()
    base = cidr.split("/")[0].rsplit(".", 1)[0]
    address = f"{base}.{int(cidr.split('/')[0].rsplit('.', 1)[1]) + 1}"
    zone = reverse_zone(address)
    assert not any(z["name"] == zone for z in drv.zones())
    drv.set_ptr(address, "z.example.test")
    assert any(z["name"] == zone for z in drv.zones())
    assert lookup(drv, address) == "z.example.test"
    # IPv6: a /48 zone appears, and a record is replaced, not duplicated
    v6 = f"2001:db8:{random.randrange(1, 0xffff):x}::5"
    made.append(reverse_zone(v6))
    drv.set_ptr(v6, "six.example.test")
    drv.set_ptr(v6, "six-b.example.test")
    assert drv.get_ptr(v6) == "six-b.example.test"
    drv.set_ptr(v6, None)
    assert drv.get_ptr(v6) is None


def test_errors_are_classified():
    with pytest.raises(FatalDriverError, match="401|Unauthorized|key"):
        PowerDnsBackend({"api_url": URL, "api_key": "wrong"}).validate()
    with pytest.raises(TransientDriverError):
        PowerDnsBackend({"api_url": "http://127.0.0.1:9", "api_key": "x", "timeout": 2}).validate()


def test_api_key_is_a_secret_setting():
    assert {s.key: s.type for s in PowerDnsBackend.settings}["api_key"] == "secret"


# -- end to end: a customer's PTR change under each pool policy ---------------------------------------------------

@pytest.fixture
def world(app, db, subnet, make_user, make_package, make_node, make_service):
    from hostbay.core import ipam
    from hostbay.core.rdns import DnsBackendConfig

    cidr, made = subnet
    forward = f"t{uuid.uuid4().hex[:10]}.example.test."
    made.append(forward)
    db.session.add(DnsBackendConfig(driver="powerdns", settings=backend().config))
    db.session.commit()
    drv = backend()
    drv.ensure_zone(forward)

    def make(policy):
        ipam.create_pool(name=policy, cidr=cidr, rdns_policy=policy)
        svc = make_service(make_user(), make_package(), node=make_node())
        return svc, ipam.allocate_for_service(svc)[0].address

    def set_a(name, address):
        drv._request("PATCH", f"/servers/localhost/zones/{forward}", {"rrsets": [
            {"name": name + ".", "type": "A", "ttl": 60, "changetype": "REPLACE",
             "records": [{"content": address, "disabled": False}]}]})

    return make, forward.rstrip("."), drv, set_a


def test_immediate_policy_reaches_powerdns_at_once(world, db):
    from hostbay.core import ipam, rdns

    make, zone, drv, _ = world
    svc, addr = make("immediate")
    rdns.request_ptr(svc, addr, f"web.{zone}", svc.user)
    db.session.commit()  # the caller owns the transaction; the apply job runs after its commit
    assert lookup(drv, addr) == f"web.{zone}"
    ipam.release_for_service(svc)
    db.session.commit()
    assert lookup(drv, addr) is None


def test_forward_match_policy_reaches_powerdns_when_the_a_record_matches(world, db, job_runner):
    from hostbay.core import jobs, rdns

    make, zone, drv, set_a = world
    svc, addr = make("forward_match")
    name = f"fwd.{zone}"
    req = rdns.request_ptr(svc, addr, name, svc.user)
    db.session.commit()
    job_runner.run_all()
    assert req.state == rdns.WAITING and lookup(drv, addr) is None
    set_a(name, "198.51.100.200")  # a forward record, but for another address
    jobs.enqueue("rdns.recheck", key="pdns-recheck-1")
    db.session.commit()
    job_runner.run_all()
    assert lookup(drv, addr) is None
    set_a(name, addr)
    jobs.enqueue("rdns.recheck", key="pdns-recheck-2")
    db.session.commit()
    job_runner.run_all()
    db.session.refresh(req)
    assert req.state == rdns.APPLIED and lookup(drv, addr) == name


def test_approval_policy_reaches_powerdns_only_when_approved(world, db, make_user):
    from hostbay.core import rdns

    make, zone, drv, _ = world
    svc, addr = make("approval")
    staff = make_user(role="support")
    req = rdns.request_ptr(svc, addr, f"mail.{zone}", svc.user)
    db.session.commit()
    assert lookup(drv, addr) is None
    rdns.approve(req.uuid, staff, "ok")
    db.session.commit()
    assert lookup(drv, addr) == f"mail.{zone}"
    later = rdns.request_ptr(svc, addr, f"other.{zone}", svc.user)
    rdns.reject(later.uuid, staff, "not yours")
    db.session.commit()
    assert lookup(drv, addr) == f"mail.{zone}"
