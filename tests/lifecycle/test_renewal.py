"""Clock-driven walk through every transition of the renewal, suspension, recovery and removal cycle."""
from datetime import timedelta

import pytest

from hostbay.core import ipam, jobs, ledger, lifecycle, renewals
from hostbay.core.actions import request_action
from hostbay.core.activity import AuditEntry
from hostbay.core.catalog import Node, add_cycle
from hostbay.core.errors import ActionNotAllowed, InsufficientFunds
from hostbay.core.ledger import LedgerEntry
from hostbay.core.services import Service, get_customer_service
from hostbay.testing.fakes import FakeVirtDriver
from hostbay.testing.pytest_plugin import login


def _fresh(db, svc):
    db.session.expire_all()
    return db.session.get(Service, svc.id)


def _renewals(db, svc):
    return db.session.scalars(db.select(LedgerEntry).filter_by(kind="renewal", reference_id=svc.uuid)
                              .order_by(LedgerEntry.id)).all()


def test_full_lifecycle(db, app, client, clock, setup, order, make_user, monkeypatch):
    released = []
    real_release = ipam.release_for_service
    monkeypatch.setattr(ipam, "release_for_service", lambda s: (released.append(s.uuid), real_release(s))[1])
    ledger.credit(setup.user.id, 1500, kind="topup", key="t1", description="Top-up")
    db.session.commit()
    svc, _ = order()
    svc = _fresh(db, svc)
    assert svc.state == "active"
    first_due = svc.renews_at

    # 1. renew: at the renewal date the wallet pays and the service runs one more cycle
    clock.set(first_due)
    assert renewals.renewal_sweep() == {"renewed": 1, "suspended": 0, "cancelled": 0, "batches": 1}
    svc = _fresh(db, svc)
    assert svc.state == "active" and svc.renews_at == add_cycle(first_due, "monthly")
    assert svc.period_start == first_due
    assert ledger.balance_cents(setup.user.id) == 500 == ledger.ledger_sum_cents(setup.user.id)
    [entry] = _renewals(db, svc)
    assert entry.idempotency_key == renewals.renewal_key(svc.uuid, first_due) and entry.amount_cents == -1000
    assert entry.balance_after_cents == 500

    # 2. fail to renew: not enough money -> suspended, server stopped, console refused, customer told why
    clock.set(svc.renews_at)
    second_due = svc.renews_at
    assert renewals.renewal_sweep()["suspended"] == 1
    svc = _fresh(db, svc)
    assert svc.state == "suspended" and svc.suspended_at == second_due and svc.renews_at == second_due
    assert FakeVirtDriver.servers[svc.uuid]["state"].value == "stopped"
    with pytest.raises(ActionNotAllowed, match="suspended for non-payment"):
        request_action(svc, "console", setup.user)
    login(client, setup.user)
    page = client.get(f"/panel/services/{svc.uuid}").get_data(as_text=True)
    assert "This service is suspended" in page and "Add at least $5.00" in page
    assert "fake-node" not in page and svc.infra_ref["domain"] not in page
    with pytest.raises(InsufficientFunds):
        request_action(svc, "renew", setup.user)
    db.session.rollback()

    # 3. recover inside the window: a top-up retries the renewal automatically, the driver unsuspends
    clock.advance(days=2)
    entry = ledger.credit(setup.user.id, 2000, kind="topup", key="t2", description="Top-up")
    db.session.commit()
    app.extensions["hostbay"].notify("hostbay_wallet_credited", user=setup.user, entry=entry)
    svc = _fresh(db, svc)
    assert svc.state == "active" and svc.suspended_at is None
    assert svc.renews_at == add_cycle(second_due, "monthly")
    assert FakeVirtDriver.servers[svc.uuid]["state"].value == "running"
    assert ledger.balance_cents(setup.user.id) == 1500
    assert len(_renewals(db, svc)) == 2

    # 4. fail to recover: suspended again, the retention window passes, queued for removal, removed
    ledger.debit(setup.user.id, 1500, kind="admin_charge", key="drain", description="Correction")
    db.session.commit()
    clock.set(svc.renews_at)
    suspended_at = svc.renews_at
    renewals.renewal_sweep()
    clock.set(suspended_at + timedelta(days=3) - timedelta(seconds=1))
    assert renewals.retention_sweep() == 0
    assert _fresh(db, svc).state == "suspended"
    clock.set(suspended_at + timedelta(days=3))
    assert renewals.retention_sweep() == 1  # sync jobs: the removal job runs at commit
    svc = _fresh(db, svc)
    assert svc.state == "terminated" and svc.removal_queued_at == suspended_at + timedelta(days=3)
    assert svc.ended_at is not None
    assert svc.uuid not in FakeVirtDriver.servers
    assert released == [svc.uuid]  # IPs released through ipam
    node = db.session.get(Node, setup.node.id)
    assert node.used_memory_mib == 0 and node.used_vcpus == 0

    # 5. hidden from the customer, visible to staff
    assert get_customer_service(setup.user.id, svc.uuid) is None
    login(client, setup.user)  # months have passed on the clock: the first login session has expired
    assert client.get(f"/panel/services/{svc.uuid}").status_code == 404
    assert svc.hostname not in client.get("/panel/services/").get_data(as_text=True)
    assert svc.hostname not in client.get("/panel/").get_data(as_text=True)
    staff = make_user(role="support")
    client.post("/logout")
    login(client, staff)
    assert svc.hostname in client.get("/staff/services/").get_data(as_text=True)
    detail = client.get(f"/staff/services/{svc.uuid}").get_data(as_text=True)
    assert "terminated" in detail and "service.removal_queued" in detail and "service.removed" in detail
    assert "is suspended: renew within 3 days" in detail and "waiting" in detail  # the notice (no SMTP set)
    assert svc.infra_ref["domain"] in detail  # staff see the driver reference

    # the customer's activity log (activity entries and the wallet movements of the service) tells the story
    history = list(reversed(lifecycle.service_history(svc)))
    events = [h["event"] for h in history]
    assert events == ["create", "billing", "suspend", "billing", "unsuspend", "suspend", "remove", "remove"]
    assert history[1]["message"].startswith(f"Renewal of {svc.hostname} until") and "-$10.00" in history[1]["message"]
    assert not any("fake-" in h["message"] or "node" in h["message"] for h in history)
    # the staff trail has every system step, the renewals from the ledger included
    trail = [a["action"] for a in lifecycle.audit_trail(svc)]
    assert trail.count("ledger.renewal") == 2 and "service.suspended" in trail and "service.renewed" in trail


def test_removal_queued_refuses_recovery(db, clock, setup, order, job_runner):
    svc, _ = order()
    job_runner.run_all()
    svc = _fresh(db, svc)
    clock.set(svc.renews_at)
    renewals.renewal_sweep()
    job_runner.run_all()
    clock.advance(days=3)
    renewals.retention_sweep()
    svc = _fresh(db, svc)
    assert svc.state == "removal_queued"
    ledger.credit(setup.user.id, 5000, kind="topup", key="late", description="Top-up")
    db.session.commit()
    with pytest.raises(ActionNotAllowed, match="queued for removal"):
        request_action(svc, "renew", setup.user)
    with pytest.raises(ActionNotAllowed, match="queued for removal and can no longer be recovered"):
        renewals.renew_service(svc)
    db.session.rollback()
    job_runner.run_all()
    assert _fresh(db, svc).state == "terminated"
    assert ledger.balance_cents(setup.user.id) == 5000


def test_customer_renews_suspended_service_by_hand(db, clock, setup, order, job_runner):
    svc, _ = order()
    job_runner.run_all()
    svc = _fresh(db, svc)
    clock.set(svc.renews_at)
    due = svc.renews_at
    renewals.renewal_sweep()
    job_runner.run_all()
    # the top-up's automatic renewal retry stays queued: the customer renews first, by hand
    ledger.credit(setup.user.id, 1000, kind="topup", key="t", description="Top-up")
    db.session.commit()
    svc = _fresh(db, svc)
    op = request_action(svc, "renew", setup.user)
    db.session.commit()
    job_runner.run_all()  # the unsuspend runs; the retry finds nothing left to renew
    svc = _fresh(db, svc)
    assert op.kind == "service.unsuspend" and svc.state == "active"
    assert svc.renews_at == add_cycle(due, "monthly")
    assert ledger.balance_cents(setup.user.id) == 0
    # a gateway-triggered renewal for the same period shares the key: no second charge
    ledger.credit(setup.user.id, 1000, kind="topup", key="t-2", description="Top-up")
    e = ledger.debit(setup.user.id, 1000, kind="renewal", key=renewals.renewal_key(svc.uuid, due),
                     description="again")
    db.session.commit()
    assert ledger.balance_cents(setup.user.id) == 1000 and e.amount_cents == -1000
    assert len(_renewals(db, svc)) == 1


def test_sweep_twice_at_same_instant_charges_once(db, clock, setup, make_service, make_user):
    users = [make_user(balance_cents=2500) for _ in range(3)]
    svcs = [make_service(u, setup.package) for u in users for _ in range(3)]  # 3 x $10 each, $25 each
    clock.set(svcs[0].renews_at)
    first = renewals.renewal_sweep(batch_size=4)
    second = renewals.renewal_sweep(batch_size=4)
    assert first["renewed"] == 6 and first["suspended"] == 3
    assert second == {"renewed": 0, "suspended": 0, "cancelled": 0, "batches": 0}
    for u in users:
        assert ledger.balance_cents(u.id) == 500 == ledger.ledger_sum_cents(u.id)
    keys = db.session.scalars(db.select(LedgerEntry.idempotency_key).filter_by(kind="renewal")).all()
    assert len(keys) == len(set(keys)) == 6
    # balances after are a consistent running sequence per wallet
    for u in users:
        entries = db.session.scalars(db.select(LedgerEntry).join(ledger.Wallet)
                                     .where(ledger.Wallet.user_id == u.id).order_by(LedgerEntry.id)).all()
        bal = 0
        for e in entries:
            bal += e.amount_cents
            assert e.balance_after_cents == bal


def test_cancel_at_period_end_and_now(db, clock, setup, order, make_user):
    ledger.credit(setup.user.id, 5000, kind="topup", key="t", description="Top-up")
    db.session.commit()
    a, _ = order(hostname="a.example.test")
    b, _ = order(hostname="b.example.test")
    a, b = _fresh(db, a), _fresh(db, b)
    assert request_action(a, "cancel", setup.user, when="end") is None
    db.session.commit()
    request_action(b, "cancel", setup.user, when="now")
    db.session.commit()
    b = _fresh(db, b)
    assert b.state == "cancelled" and b.uuid not in FakeVirtDriver.servers
    assert get_customer_service(setup.user.id, b.uuid) is None
    clock.set(a.renews_at)
    assert renewals.renewal_sweep()["cancelled"] == 1
    a = _fresh(db, a)
    assert a.state == "cancelled" and a.uuid not in FakeVirtDriver.servers
    assert ledger.balance_cents(setup.user.id) == 5000  # nothing charged for the ended period
    assert db.session.get(Node, setup.node.id).used_memory_mib == 0


def test_staff_suspension_of_paid_service_is_not_removed(db, clock, setup, order, make_user):
    staff = make_user(role="admin")
    svc, _ = order()
    svc = _fresh(db, svc)
    request_action(svc, "suspend", staff, reason="abuse report")
    db.session.commit()
    assert _fresh(db, svc).state == "suspended"
    clock.advance(days=5)
    assert renewals.retention_sweep() == 0
    request_action(_fresh(db, svc), "unsuspend", staff)
    db.session.commit()
    assert _fresh(db, svc).state == "active"
    trail = [a.action for a in db.session.scalars(db.select(AuditEntry).filter_by(target_id=svc.uuid))]
    assert "service.suspended" in trail and "service.unsuspended" in trail
    sus = db.session.scalar(db.select(AuditEntry).filter_by(target_id=svc.uuid, action="service.suspended"))
    assert sus.actor_id == staff.id and sus.actor_type == "staff" and sus.detail == "abuse report"


def test_scheduled_sweep_is_enqueued_once_per_period(db, app, setup):
    ops1 = jobs.schedule_due(now_ts=1_000_000)
    ops2 = jobs.schedule_due(now_ts=1_000_001)
    kinds = {o.kind for o in ops1}
    assert {"lifecycle.renewal_sweep", "lifecycle.retention_sweep", "lifecycle.notices"} <= kinds
    assert {o.id for o in ops1} == {o.id for o in ops2}


def test_period_paid_elsewhere_is_extended_without_second_charge(db, clock, setup, make_service, make_user):
    """A payment path charged the period with the shared key but did not extend the service yet: the sweep
    renews it without charging again, and charges the customer's other services normally."""
    user = make_user(balance_cents=3000)
    a = make_service(user, setup.package)
    b = make_service(user, setup.package)
    ledger.debit(user.id, 1000, kind="renewal", key=renewals.renewal_key(a.uuid, a.renews_at),
                 description="Renewal paid by the gateway", reference=("service", a.uuid))
    db.session.commit()
    due = a.renews_at
    clock.set(due)
    assert renewals.renewal_sweep()["renewed"] == 2
    assert ledger.balance_cents(user.id) == 1000 == ledger.ledger_sum_cents(user.id)
    assert len(_renewals(db, a)) == 1 and len(_renewals(db, b)) == 1
    assert _fresh(db, a).renews_at == _fresh(db, b).renews_at == add_cycle(due, "monthly")
