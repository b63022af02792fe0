"""What the customer is told after a reverse DNS change is what happened: queued, applied, or failed with a
customer-safe reason (never the DNS server's own words)."""

from __future__ import annotations

import pytest

from hostbay.core import ipam, rdns
from hostbay.core.activity import ActivityEntry
from hostbay.core.errors import FatalDriverError
from hostbay.testing.pytest_plugin import login


@pytest.fixture
def svc_addr(db, running_service, fake_dns):
    ipam.create_pool(name="p-outcome", cidr="192.0.2.0/28", rdns_policy="immediate")
    svc = running_service()
    return svc, ipam.allocate_for_service(svc)[0].address


def _flash(client):
    with client.session_transaction() as s:
        return s.get("_flashes", [])


def _post(client, svc, addr, name):
    return client.post(f"/panel/services/{svc.uuid}/rdns", data={"address": addr, "hostname": name})


def test_applied_says_updated(client, db, svc_addr, fake_dns):
    svc, addr = svc_addr
    login(client, svc.user)
    _post(client, svc, addr, "web.example.com")
    page = client.get(f"/panel/services/{svc.uuid}").get_data(as_text=True)
    assert "Reverse DNS updated." in page and fake_dns.records == {addr: "web.example.com"}


def test_a_failure_is_said_with_a_safe_reason(client, db, svc_addr, fake_dns, monkeypatch):
    svc, addr = svc_addr

    def refuse(self, address, hostname):
        raise FatalDriverError("pdns 422 at ns1.internal.example:8081 zone 2.0.192.in-addr.arpa: RRset broken")

    monkeypatch.setattr(type(fake_dns()), "set_ptr", refuse)
    login(client, svc.user)
    _post(client, svc, addr, "web.example.com")
    page = client.get(f"/panel/services/{svc.uuid}").get_data(as_text=True)
    assert "Reverse DNS updated." not in page
    assert "The reverse DNS change could not be applied: the DNS server did not accept the change." in page
    assert "pdns" not in page and "ns1.internal" not in page and "RRset" not in page
    assert "Could not be applied: the DNS server did not accept the change" in page  # the address table agrees
    msgs = db.session.scalars(db.select(ActivityEntry.message).filter_by(service_id=svc.id)).all()
    assert not any("set to web.example.com" in m for m in msgs)
    assert any("could not be applied" in m for m in msgs)


def test_queued_says_queued(client, db, svc_addr, fake_dns, job_runner):
    svc, addr = svc_addr
    login(client, svc.user)
    _post(client, svc, addr, "web.example.com")
    page = client.get(f"/panel/services/{svc.uuid}").get_data(as_text=True)
    assert "Reverse DNS change queued" in page and "Reverse DNS updated." not in page
    assert "Queued: being applied" in page and fake_dns.records == {}
    job_runner.run_all()
    assert fake_dns.records == {addr: "web.example.com"}
