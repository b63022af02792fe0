"""Reverse DNS requests: validation, the three policies, staff review, tenancy (with the in-memory backend)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from hostbay.core import ipam, rdns
from hostbay.core.activity import ActivityEntry
from hostbay.core.errors import NotFound
from hostbay.testing.pytest_plugin import login


@pytest.mark.parametrize("raw, expected", [
    ("Server1.Example.COM.", "server1.example.com"),
    ("a-b.example.net", "a-b.example.net"),
    ("", None), ("   ", None),
])
def test_valid_hostnames(raw, expected):
    assert rdns.validate_hostname(raw) == expected


@pytest.mark.parametrize("raw", ["localhost", "-bad.example.com", "bad-.example.com", "under_score.example.com",
                                 "a..example.com", "x" * 64 + ".example.com", "host.123", "sp ace.example.com",
                                 ("a" * 60 + ".") * 5 + "com", "ünïcode.example.com"])
def test_invalid_hostnames_are_refused_with_a_message(raw):
    with pytest.raises(rdns.HostnameError) as exc:
        rdns.validate_hostname(raw)
    assert exc.value.customer_message


@pytest.fixture
def setup(db, running_service, fake_dns):
    def _make(policy):
        ipam.create_pool(name=f"p-{policy}", cidr="192.0.2.0/28", rdns_policy=policy)
        svc = running_service()
        addr = ipam.allocate_for_service(svc)[0].address
        return svc, addr
    return _make


def test_immediate_policy_applies_at_once(setup, fake_dns, db):
    svc, addr = setup("immediate")
    req = rdns.request_ptr(svc, addr, "web.example.com", svc.user)
    db.session.commit()  # the caller owns the transaction; the apply job runs after its commit
    db.session.refresh(req)
    assert req.state == rdns.APPLIED and fake_dns.records == {addr: "web.example.com"}
    assert ipam.get_address(addr).ptr == "web.example.com"
    rdns.request_ptr(svc, addr, "", svc.user)  # remove
    db.session.commit()
    assert fake_dns.records == {} and ipam.get_address(addr).ptr is None


def test_forward_match_waits_for_the_forward_record(setup, fake_dns, db, job_runner):
    svc, addr = setup("forward_match")
    fake_dns.forward["web.example.com"] = ["198.51.100.77"]  # points elsewhere
    req = rdns.request_ptr(svc, addr, "web.example.com", svc.user)
    assert req.state == rdns.WAITING
    job_runner.run_all()
    assert fake_dns.records == {}
    from hostbay.core import jobs
    jobs.enqueue("rdns.recheck", key="recheck-1")
    db.session.commit()
    job_runner.run_all()
    assert fake_dns.records == {}  # still not matching
    fake_dns.forward["web.example.com"] = [addr]
    jobs.enqueue("rdns.recheck", key="recheck-2")
    db.session.commit()
    job_runner.run_all()
    db.session.refresh(req)
    assert req.state == rdns.APPLIED and fake_dns.records == {addr: "web.example.com"}


def test_forward_match_that_already_matches_applies_at_once(setup, fake_dns, db):
    svc, addr = setup("forward_match")
    fake_dns.forward["ok.example.com"] = [addr]
    req = rdns.request_ptr(svc, addr, "ok.example.com", svc.user)
    db.session.commit()
    assert req.state == rdns.APPLIED
    assert fake_dns.records == {addr: "ok.example.com"}


def test_forward_match_expires_after_a_week(setup, fake_dns, db, clock, job_runner):
    from hostbay.core import jobs

    svc, addr = setup("forward_match")
    req = rdns.request_ptr(svc, addr, "never.example.com", svc.user)
    clock.advance(days=8)
    jobs.enqueue("rdns.recheck", key="recheck-x")
    db.session.commit()
    job_runner.run_all()
    db.session.refresh(req)
    assert req.state == rdns.EXPIRED and fake_dns.records == {}


def test_approval_policy_waits_for_staff(setup, fake_dns, db, make_user):
    svc, addr = setup("approval")
    staff = make_user(role="support")
    req = rdns.request_ptr(svc, addr, "mail.example.com", svc.user)
    assert req.state == rdns.PENDING and fake_dns.records == {}
    assert [r.uuid for r in rdns.pending_queue()] == [req.uuid]
    rdns.approve(req.uuid, staff, "looks fine")
    db.session.commit()
    assert fake_dns.records == {addr: "mail.example.com"}
    second = rdns.request_ptr(svc, addr, "spam.example.com", svc.user)
    with pytest.raises(rdns.UserError, match="note"):
        rdns.reject(second.uuid, staff, "")
    rdns.reject(second.uuid, staff, "Not a name you hold")
    assert fake_dns.records == {addr: "mail.example.com"}
    msgs = db.session.scalars(select(ActivityEntry.message).where(ActivityEntry.user_id == svc.user_id)).all()
    assert any("Not a name you hold" in m for m in msgs)
    with pytest.raises(rdns.UserError, match="already decided"):
        rdns.approve(second.uuid, staff)


def test_newer_request_supersedes_a_pending_one(setup, fake_dns, db, make_user):
    svc, addr = setup("approval")
    first = rdns.request_ptr(svc, addr, "one.example.com", svc.user)
    rdns.request_ptr(svc, addr, "two.example.com", svc.user)
    db.session.refresh(first)
    assert first.state == rdns.SUPERSEDED
    assert [r.hostname for r in rdns.pending_queue()] == ["two.example.com"]


def test_customer_cannot_set_ptr_of_an_address_not_theirs(setup, fake_dns, running_service, db):
    svc, addr = setup("immediate")
    other = running_service()
    other_addr = ipam.allocate_for_service(other)[0].address
    with pytest.raises(NotFound):
        rdns.request_ptr(svc, other_addr, "steal.example.com", svc.user)
    with pytest.raises(NotFound):
        rdns.request_ptr(svc, "192.0.2.14", "free.example.com", svc.user)  # free, in the pool
    assert fake_dns.records == {}


def test_release_removes_the_ptr_and_cancels_open_requests(setup, fake_dns, db, make_user):
    svc, addr = setup("immediate")
    rdns.request_ptr(svc, addr, "gone.example.com", svc.user)
    db.session.commit()
    assert fake_dns.records == {addr: "gone.example.com"}
    ipam.release_for_service(svc)
    db.session.commit()
    assert fake_dns.records == {}


def test_moved_address_drops_the_old_holders_pending_request(setup, fake_dns, db, running_service, make_user):
    svc, addr = setup("approval")
    staff = make_user(role="admin")
    req = rdns.request_ptr(svc, addr, "old.example.com", svc.user)
    other = running_service()
    ipam.move(addr, other.uuid, staff)
    db.session.refresh(req)
    assert req.state == rdns.CANCELLED and rdns.pending_queue() == []


# -- web ----------------------------------------------------------------------------------------------------------

def test_customer_page_shows_own_addresses_only_and_sets_ptr(client, setup, fake_dns, running_service, db):
    svc, addr = setup("immediate")
    other = running_service()
    other_addr = ipam.allocate_for_service(other)[0].address
    login(client, svc.user)
    page = client.get(f"/panel/services/{svc.uuid}/addresses")
    assert page.status_code == 200 and addr.encode() in page.data and other_addr.encode() not in page.data
    assert b"Unmetered at 1,000 Mbit/s" in page.data
    assert client.get(f"/panel/services/{other.uuid}/addresses").status_code == 404
    resp = client.post(f"/panel/services/{svc.uuid}/rdns", data={"address": addr, "hostname": "web.example.com"})
    assert resp.status_code == 302 and resp.headers["Location"].endswith(f"/panel/services/{svc.uuid}#addresses")
    assert fake_dns.records == {addr: "web.example.com"}
    # the address of another tenant, through the customer's own service or through the other service: 404
    assert client.post(f"/panel/services/{svc.uuid}/rdns",
                       data={"address": other_addr, "hostname": "x.example.com"}).status_code == 404
    assert client.post(f"/panel/services/{other.uuid}/rdns",
                       data={"address": other_addr, "hostname": "x.example.com"}).status_code == 404
    assert other_addr not in fake_dns.records
    bad = client.post(f"/panel/services/{svc.uuid}/rdns", data={"address": addr, "hostname": "bad_name"},
                      follow_redirects=False)
    assert bad.status_code == 302 and fake_dns.records == {addr: "web.example.com"}
    api = client.post(f"/panel/services/{svc.uuid}/rdns", json={"address": addr, "hostname": "bad_name"})
    assert api.status_code == 400 and "host name" in api.json["error"]


def test_quota_package_shows_its_quota(client, setup, fake_dns, running_service, make_package):
    svc = running_service(traffic_quota_gib=2000, port_speed_mbit=500)
    login(client, svc.user)
    page = client.get(f"/panel/services/{svc.uuid}/addresses")
    assert b"2,000 GiB traffic at 500 Mbit/s" in page.data and b"Unmetered" not in page.data


def test_staff_review_queue(client, setup, fake_dns, db, make_user):
    svc, addr = setup("approval")
    req = rdns.request_ptr(svc, addr, "queued.example.com", svc.user)
    support = make_user(role="support")
    login(client, support)
    page = client.get("/staff/network/rdns")
    assert b"queued.example.com" in page.data
    client.post(f"/staff/network/rdns/{req.uuid}/approve", data={"note": "ok"})
    assert fake_dns.records == {addr: "queued.example.com"}
    client.post("/logout")
    login(client, svc.user)
    assert client.get("/staff/network/rdns").status_code == 404


def test_staff_retry_of_a_failed_apply_sets_the_record(setup, fake_dns, db, job_runner, monkeypatch, make_user):
    """Retrying a failed rdns.apply runs it again: the PTR is set, the request applied, and only then does the
    activity log say so (before: the retry was marked succeeded with the PTR still unset)."""
    from hostbay.core import jobs
    from hostbay.core.errors import FatalDriverError

    svc, addr = setup("immediate")
    broken = {"on": True}
    original = fake_dns.set_ptr

    def flaky_set_ptr(self, address, hostname):
        if broken["on"]:
            raise FatalDriverError("pdns answered 422")
        return original(self, address, hostname)

    monkeypatch.setattr(fake_dns, "set_ptr", flaky_set_ptr)
    req = rdns.request_ptr(svc, addr, "web.example.com", svc.user)
    job_runner.run_all()
    op = db.session.scalar(select(jobs.Operation).filter_by(kind="rdns.apply"))
    db.session.refresh(req)
    assert op.state == jobs.FAILED and req.state == rdns.FAILED and fake_dns.records == {}
    messages = lambda: db.session.scalars(select(ActivityEntry.message).filter_by(service_id=svc.id)).all()  # noqa: E731
    assert not any("set to" in m for m in messages())  # a request is not an outcome
    broken["on"] = False
    jobs.retry(op, actor=make_user(role="admin"))
    db.session.commit()
    job_runner.run_all()
    db.session.refresh(op)
    db.session.refresh(req)
    assert op.state == jobs.SUCCEEDED and op.attempts == 1 and op.progress_text == "Reverse DNS set"
    assert req.state == rdns.APPLIED and fake_dns.records == {addr: "web.example.com"}
    assert ipam.get_address(addr).ptr == "web.example.com"
    assert f"Reverse DNS of {addr} set to web.example.com." in messages()
