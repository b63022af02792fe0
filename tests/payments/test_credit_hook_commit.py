"""Wallet-credit listeners run after the credit commits (never for one rolled back), so they cannot commit a caller's
half-done work."""

import pytest

from hostbay.core import billing, jobs, ledger, services
from hostbay.core.db import db
from hostbay.core.errors import ActionNotAllowed


@pytest.fixture
def setup(client, make_user, make_package, make_image, make_node, clock):
    make_node()
    user = make_user(balance_cents=10000)
    big = make_package(slug="big", monthly_cents=2000, disk_gib=40, ipv4_count=0)
    small = make_package(slug="small", monthly_cents=1000, disk_gib=40, ipv4_count=0)
    svc = billing.place_order(user, big, "monthly", "web1.example.com", make_image(), key="order")
    db.session.commit()  # the test owns the unit of work; the set-up job runs after this commit
    db.session.refresh(svc)
    assert svc.state == services.ACTIVE
    return user, small, svc


def test_failed_downgrade_leaves_no_credit(setup, clock, monkeypatch):
    """A downgrade credits the wallet, then moves the service to resizing. When the move fails (the service
    changed meanwhile) the whole change is rolled back: no credit, no retry job."""
    user, small, svc = setup
    clock.advance(days=10)
    before = ledger.balance_cents(user.id)
    monkeypatch.setattr(billing, "transition", lambda *a, **kw: False)
    with pytest.raises(ActionNotAllowed):
        billing.change_package(svc, small, user, key="c1")
    db.session.rollback()
    assert ledger.find_entry(f"ledger:change:{svc.uuid}:c1") is None
    assert ledger.balance_cents(user.id) == ledger.ledger_sum_cents(user.id) == before
    assert db.session.get(services.Service, svc.id).state == services.ACTIVE
    assert db.session.scalar(db.select(jobs.Operation).filter_by(kind="lifecycle.retry_renewals")) is None


def test_credit_rolled_back_by_caller_leaves_nothing(setup):
    user, small, svc = setup
    before = ledger.balance_cents(user.id)
    ledger.credit(user.id, 700, kind="bonus", key="bonus-1", description="Bonus")
    db.session.rollback()
    assert ledger.find_entry("bonus-1") is None
    assert ledger.balance_cents(user.id) == before


def test_credit_schedules_renewal_retry_only_when_something_is_suspended(setup, clock):
    user, small, svc = setup
    ledger.credit(user.id, 700, kind="bonus", key="bonus-2", description="Bonus")
    db.session.commit()
    assert db.session.scalar(db.select(jobs.Operation).filter_by(kind="lifecycle.retry_renewals")) is None
    # the service falls due with a drained wallet: suspended; a credit then renews it at commit
    ledger.debit(user.id, ledger.balance_cents(user.id), kind="admin_charge", key="drain", description="Drain")
    db.session.commit()
    clock.set(svc.renews_at)
    from hostbay.core import renewals
    renewals.renewal_sweep()
    assert db.session.get(services.Service, svc.id).state == services.SUSPENDED
    ledger.credit(user.id, 5000, kind="bonus", key="bonus-3", description="Bonus")
    op = db.session.scalar(db.select(jobs.Operation).filter_by(kind="lifecycle.retry_renewals"))
    assert op is None  # the listener has not run: the credit is not committed yet
    db.session.commit()
    op = db.session.scalar(db.select(jobs.Operation).filter_by(kind="lifecycle.retry_renewals"))
    assert op is not None and op.state == jobs.SUCCEEDED
    db.session.expire_all()
    assert db.session.get(services.Service, svc.id).state == services.ACTIVE
