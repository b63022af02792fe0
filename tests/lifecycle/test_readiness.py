"""Ready means ready (core/readiness.py): a service whose image reports readiness becomes Active only after its
guest's own report to its single-use signed URL; forged, replayed, expired or another service's tokens change
nothing; no report within HOSTBAY_READY_TIMEOUT fails the operation for staff with an honest customer message,
for set-up, reinstall and rebuild alike; images that cannot report skip the wait.

The fake driver keeps the URL it was given (``servers[uuid]["ready_url"]``); the test plays the guest and POSTs
to it through the real app, exactly as cloud-init's phone_home does (form fields instance_id, hostname, fqdn)."""

from __future__ import annotations

import threading
import time
from urllib.parse import urlsplit

import pytest

from hostbay.core import jobs, readiness
from hostbay.core.actions import request_action
from hostbay.core.activity import ActivityEntry
from hostbay.core.services import Service, transition
from hostbay.testing.pytest_plugin import login
from hostbay.testing.fakes import FakeVirtDriver

from .conftest import ops_of

PHONE_HOME = {"instance_id": "iid-1", "hostname": "web1", "fqdn": "web1.example.test", "pub_key_rsa": "x"}


def _path(url: str) -> str:
    return urlsplit(url).path


def _run_in_thread(app, op_id):
    out = {}

    def run():
        with app.app_context():
            out["state"] = jobs.run_operation(op_id)

    t = threading.Thread(target=run)
    t.start()
    return t, out


def _wait_for(cond, seconds=20.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def reporting(db, setup):
    setup.image.reports_readiness = True
    db.session.commit()
    return setup


def _state(db, svc_id):
    """The service's state, read in a transaction of its own (SQLite: an open one would block the worker)."""
    db.session.commit()
    state = db.session.scalar(db.select(Service.state).filter_by(id=svc_id))
    db.session.commit()
    return state


def test_active_only_after_the_guests_report_and_tokens_are_single_use(app, db, reporting, order, job_runner,
                                                                        client):
    app.config["HOSTBAY_READY_TIMEOUT"] = 30
    svc, op = order()
    other, _other_op = order(hostname="other.example.test")
    svc_id, op_id, uuid = svc.id, op.id, svc.uuid
    db.session.commit()
    thread, out = _run_in_thread(app, op_id)
    try:
        assert _wait_for(lambda: (FakeVirtDriver.servers.get(uuid) or {}).get("ready_url"))
        url = FakeVirtDriver.servers[uuid]["ready_url"]
        assert url.startswith(f"{app.config['HOSTBAY_READY_URL']}/guest/{uuid}/ready/")

        def waiting():
            db.session.commit()
            text = db.session.scalar(db.select(jobs.Operation.progress_text).filter_by(id=op_id))
            db.session.commit()
            return text == readiness.WAITING_TEXT
        assert _wait_for(waiting)
        assert _state(db, svc_id) == "provisioning"  # the driver says running: not enough

        token = url.rsplit("/", 1)[1]
        forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
        assert client.post(f"/guest/{uuid}/ready/{forged}", data=PHONE_HOME).status_code == 404
        # the genuine token of this service, presented at another service's URL
        assert client.post(f"/guest/{other.uuid}/ready/{token}", data=PHONE_HOME).status_code == 404
        # a token signed with another key (someone guessing the format)
        from itsdangerous import URLSafeSerializer
        check = db.session.scalar(db.select(readiness.ReadinessCheck).filter_by(service_id=svc_id))
        foreign = URLSafeSerializer("not-the-secret", salt=readiness.SALT).dumps({"s": uuid, "n": check.nonce})
        assert client.post(f"/guest/{uuid}/ready/{foreign}", data=PHONE_HOME).status_code == 404
        time.sleep(1.5)
        assert _state(db, svc_id) == "provisioning"  # none of that counted

        assert client.post(_path(url), data=PHONE_HOME).status_code == 200
        thread.join(20)
        assert not thread.is_alive() and out["state"] == jobs.SUCCEEDED
    finally:
        thread.join(30)
    assert _state(db, svc_id) == "active"
    check = db.session.scalar(db.select(readiness.ReadinessCheck).filter_by(service_id=svc_id))
    assert check.reported_at is not None and check.report == {"instance_id": "iid-1", "hostname": "web1",
                                                              "fqdn": "web1.example.test"}
    # a replay does nothing: same 404 as any unknown token, the report is unchanged
    first = check.reported_at
    assert client.post(_path(url), data={"instance_id": "evil"}).status_code == 404
    db.session.refresh(check)
    assert check.reported_at == first and check.report["instance_id"] == "iid-1"
    acts = db.session.scalars(db.select(ActivityEntry).filter_by(service_id=svc_id)).all()
    assert [a.event for a in acts] == ["create"]


def test_no_report_fails_visibly_for_staff_and_honestly_for_the_customer(app, db, reporting, order, client,
                                                                          make_user):
    app.config["HOSTBAY_READY_TIMEOUT"] = 1
    svc, op = order()  # sync job mode: runs now, waits 1 s, gives up
    db.session.refresh(op)
    db.session.refresh(svc)
    assert op.state == jobs.FAILED and svc.state == "provisioning"
    assert "no readiness report from the guest" in op.error
    assert op.customer_error == readiness.CUSTOMER_MESSAGE["create"]
    assert "taking longer than usual" in op.customer_error

    login(client, reporting.user)
    page = client.get(f"/panel/services/{svc.uuid}").get_data(as_text=True)
    assert "taking longer than usual" in page
    assert "Your server is ready" not in page and "was set up and is running" not in page
    staff = make_user(role="admin")
    staff_client = app.test_client()
    login(staff_client, staff)
    staff_page = staff_client.get(f"/staff/services/{svc.uuid}").get_data(as_text=True)
    assert "no readiness report from the guest" in staff_page
    assert f"/operations/{op.id}/retry" in staff_page  # a failed operation with its retry button

    # the guest was only slow: its late report is kept, and the staff retry finishes at once
    url = FakeVirtDriver.servers[svc.uuid]["ready_url"]
    assert client.post(_path(url), data=PHONE_HOME).status_code == 200
    started = time.monotonic()
    request_action(svc, "retry", staff)
    db.session.commit()
    db.session.refresh(svc)
    db.session.refresh(op)
    assert op.state == jobs.SUCCEEDED and svc.state == "active"
    assert time.monotonic() - started < 1.0  # no second wait
    assert FakeVirtDriver.servers[svc.uuid]["ready_url"] == url  # the retry kept the guest's URL


def _run_with_report(app, db, client, op_id, uuid, previous=None):
    """Run the operation in a worker thread; once it waits for a new guest URL, report to it as the guest."""
    thread, out = _run_in_thread(app, op_id)
    try:
        assert _wait_for(lambda: (FakeVirtDriver.servers.get(uuid) or {}).get("ready_url") not in (None, previous))
        url = FakeVirtDriver.servers[uuid]["ready_url"]

        def waiting():
            db.session.commit()
            text = db.session.scalar(db.select(jobs.Operation.progress_text).filter_by(id=op_id))
            db.session.commit()
            return text == readiness.WAITING_TEXT
        assert _wait_for(waiting)
        assert client.post(_path(url), data=PHONE_HOME).status_code == 200
    finally:
        thread.join(30)
    return out.get("state"), url


@pytest.mark.parametrize("action,busy", [("reinstall", "reinstalling"), ("rebuild", "rebuilding")])
def test_reinstall_and_rebuild_wait_for_the_new_guest(app, db, reporting, order, job_runner, client, make_user,
                                                      action, busy):
    app.config["HOSTBAY_READY_TIMEOUT"] = 30
    svc, op = order()
    svc_id, uuid, op_id = svc.id, svc.uuid, op.id
    db.session.commit()
    state, first_url = _run_with_report(app, db, client, op_id, uuid)
    assert state == jobs.SUCCEEDED and _state(db, svc_id) == "active"

    # the new system never reports: the operation fails for staff, the customer reads an honest sentence
    app.config["HOSTBAY_READY_TIMEOUT"] = 1
    svc = db.session.get(Service, svc_id)
    transition(svc, busy, expect="active")
    kind = f"service.{action}"
    rop = jobs.enqueue(kind, service=svc, title=action.title(), payload={"old_package_id": svc.package_id})
    db.session.commit()
    job_runner.run_all()
    db.session.expire_all()
    rop = db.session.get(jobs.Operation, rop.id)
    assert rop.state == jobs.FAILED and _state(db, svc_id) == busy  # not active
    assert rop.customer_error == readiness.CUSTOMER_MESSAGE[action]
    assert "taking longer than usual" in rop.customer_error and action in rop.error
    new_url = FakeVirtDriver.servers[uuid]["ready_url"]
    assert new_url and new_url != first_url  # a fresh disk gets a fresh single-use URL
    assert client.post(_path(first_url), data=PHONE_HOME).status_code == 404  # the old guest's URL is used up

    # staff retry: another fresh disk and URL; this time its guest reports and the service is active again
    app.config["HOSTBAY_READY_TIMEOUT"] = 30
    staff = make_user(role="admin")
    request_action(db.session.get(Service, svc_id), "retry", staff)
    rop_id = rop.id
    db.session.commit()
    state, third_url = _run_with_report(app, db, client, rop_id, uuid, previous=new_url)
    assert state == jobs.SUCCEEDED and _state(db, svc_id) == "active"
    assert client.post(_path(new_url), data=PHONE_HOME).status_code == 404  # the failed attempt's URL is dead


def test_image_that_cannot_report_skips_the_wait(app, db, setup, order):
    app.config["HOSTBAY_READY_TIMEOUT"] = 30
    assert setup.image.reports_readiness is False
    started = time.monotonic()
    svc, op = order()
    db.session.refresh(op)
    db.session.refresh(svc)
    assert op.state == jobs.SUCCEEDED and svc.state == "active"
    assert time.monotonic() - started < 10
    assert FakeVirtDriver.servers[svc.uuid]["ready_url"] is None
    assert op.result.get("readiness") is None or "readiness_check" not in op.result


def test_expired_token_does_nothing(app, db, reporting, order, job_runner, client, clock):
    app.config["HOSTBAY_READY_TIMEOUT"] = 30
    app.config["HOSTBAY_READY_TOKEN_SECONDS"] = 60
    svc, op = order()
    svc_id, op_id, uuid = svc.id, op.id, svc.uuid
    db.session.commit()
    app.config["HOSTBAY_READY_TIMEOUT"] = 2
    thread, out = _run_in_thread(app, op_id)
    assert _wait_for(lambda: (FakeVirtDriver.servers.get(uuid) or {}).get("ready_url"))
    url = FakeVirtDriver.servers[uuid]["ready_url"]
    clock.advance(seconds=61)
    assert client.post(_path(url), data=PHONE_HOME).status_code == 404
    thread.join(30)
    assert out["state"] == jobs.FAILED and _state(db, svc_id) == "provisioning"


def test_demo_images_report_through_the_simulated_guest(app, db, order, setup):
    """The demo's fake node simulates the guest's phone-home (guest_boot_seconds): a reporting image's order is
    Active after that report, through the same endpoint a real guest uses."""
    setup.image.reports_readiness = True
    setup.node.settings = {"guest_boot_seconds": 1}
    db.session.commit()
    app.config["HOSTBAY_READY_TIMEOUT"] = 30
    svc, op = order()
    db.session.refresh(op)
    db.session.refresh(svc)
    assert op.state == jobs.SUCCEEDED and svc.state == "active"
    check = db.session.scalar(db.select(readiness.ReadinessCheck).filter_by(service_id=svc.id))
    assert check.reported_at is not None and check.report["fqdn"] == "web1.example.test"
