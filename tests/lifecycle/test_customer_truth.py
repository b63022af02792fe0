"""What the service page tells the customer is true: a staff suspension has its own reason (and texts), a payment
does not lift it and the retention sweep keeps it; the power state comes from the driver with its age and only
the power actions that make sense are offered; destructive actions need the hostname typed in."""

from __future__ import annotations

from datetime import timedelta

from hostbay.core import ledger, renewals
from hostbay.core.actions import request_action
from hostbay.core.db import db
from hostbay.core.drivers import PowerState
from hostbay.core.services import Service
from hostbay.testing.fakes import FakeVirtDriver
from hostbay.testing.pytest_plugin import login


def _fresh(svc):
    db.session.expire_all()
    return db.session.get(Service, svc.id)


def _page(client, svc) -> str:
    return client.get(f"/panel/services/{svc.uuid}").get_data(as_text=True)


def test_staff_suspension_has_its_own_reason_and_honest_texts(client, setup, order, make_user, clock):
    svc, _ = order()
    staff = make_user(role="support")
    request_action(_fresh(svc), "suspend", staff, reason="abuse report")
    db.session.commit()
    svc = _fresh(svc)
    assert svc.state == "suspended" and svc.suspension_reason == "staff"
    login(client, setup.user)
    page = _page(client, svc)
    assert "suspended by our staff" in page and "could not be paid" not in page
    assert f"/panel/services/{svc.uuid}/action/renew" not in page  # a payment would not lift it
    resp = client.post(f"/panel/services/{svc.uuid}/action/renew", follow_redirects=True)
    text = resp.get_data(as_text=True)
    assert "Payment received" not in text and "being reactivated" not in text
    assert "suspended by our staff" in text
    # a top-up does not lift it, and nothing is charged
    ledger.credit(setup.user.id, 5000, kind="topup", key="t-after", description="Top-up")
    db.session.commit()
    clock.set(svc.renews_at + timedelta(days=30))
    renewals.renewal_sweep()
    svc = _fresh(svc)
    assert svc.state == "suspended" and ledger.balance_cents(setup.user.id) == 5000
    # the retention sweep keeps a service staff hold, however long
    clock.set(svc.renews_at + timedelta(days=90))
    assert renewals.retention_sweep() == 0
    assert _fresh(svc).state == "suspended"


def test_unpaid_suspension_keeps_its_reason_and_text(client, setup, order, clock):
    svc, _ = order()
    clock.set(_fresh(svc).renews_at)
    renewals.renewal_sweep()
    svc = _fresh(svc)
    assert svc.state == "suspended" and svc.suspension_reason == "unpaid"
    login(client, setup.user)
    assert "could not be paid" in _page(client, svc)
    ledger.credit(setup.user.id, 1000, kind="topup", key="t-pay", description="Top-up")
    db.session.commit()
    svc = _fresh(svc)
    assert svc.state == "active" and svc.suspension_reason is None


def test_power_state_comes_from_the_driver_with_its_age(client, setup, order, clock):
    svc, _ = order()
    svc = _fresh(svc)
    login(client, setup.user)
    page = _page(client, svc)
    assert 'data-power-state="running"' in page and "checked 0 s ago" in page
    assert f"/action/stop" in page and f"/action/restart" in page and f"/action/start" not in page
    # the server stops by itself (e.g. shut down inside): the page shows it once the reading is older than 30 s
    FakeVirtDriver.servers[svc.uuid]["state"] = PowerState.STOPPED
    clock.advance(seconds=10)
    assert "checked 10 s ago" in _page(client, svc)  # cached reading
    clock.advance(seconds=25)
    page = _page(client, svc)
    assert 'data-power-state="stopped"' in page and "checked 0 s ago" in page
    assert f"/action/start" in page and f"/action/stop" not in page and f"/action/restart" not in page
    # Stop is refused while it is stopped, Start goes through and the next page reads the driver again
    resp = client.post(f"/panel/services/{svc.uuid}/action/stop", follow_redirects=True)
    assert "The server is stopped; start it instead." in resp.get_data(as_text=True)
    client.post(f"/panel/services/{svc.uuid}/action/start")
    assert FakeVirtDriver.servers[svc.uuid]["state"] == PowerState.RUNNING
    assert 'data-power-state="running"' in _page(client, svc)


def test_destructive_actions_need_the_hostname(client, setup, order):
    svc, _ = order()
    svc = _fresh(svc)
    login(client, setup.user)
    page = _page(client, svc)
    assert page.count('class="danger"') >= 2 and "Type the hostname" in page
    resp = client.post(f"/panel/services/{svc.uuid}/action/reinstall", data={"image": setup.image.uuid},
                       follow_redirects=True)
    assert "Type the hostname web1.example.test to confirm" in resp.get_data(as_text=True)
    assert _fresh(svc).state == "active"
    resp = client.post(f"/panel/services/{svc.uuid}/action/cancel", data={"when": "now", "confirm_hostname": "x"},
                       follow_redirects=True)
    assert "Cancelling now removes the server" in resp.get_data(as_text=True) and _fresh(svc).state == "active"
    # cancelling at the end of the period destroys nothing and needs no confirmation
    client.post(f"/panel/services/{svc.uuid}/action/cancel", data={"when": "end"})
    assert _fresh(svc).cancel_at_period_end


def test_staff_terminate_needs_the_hostname(client, setup, order, make_user):
    svc, _ = order()
    admin = make_user(role="admin", password="admin password 1")
    login(client, admin, "admin password 1")
    page = client.get(f"/staff/services/{svc.uuid}").get_data(as_text=True)
    assert 'class="danger">Terminate' in page
    client.post(f"/staff/services/{svc.uuid}/action/terminate", data={"reason": "x"})
    assert _fresh(svc).state == "active"
    client.post(f"/staff/services/{svc.uuid}/action/terminate", data={"reason": "x",
                                                                      "confirm_hostname": "web1.example.test"})
    assert _fresh(svc).state in ("removal_queued", "terminated")
