import pytest

from hostbay.core import ledger
from hostbay.core.activity import ActivityEntry
from hostbay.core.db import db
from hostbay.core.errors import InsufficientFunds, UserError


def _activity(user):
    return db.session.scalars(db.select(ActivityEntry).filter_by(user_id=user.id, event="billing")
                              .order_by(ActivityEntry.id)).all()


def test_every_entry_logs_one_billing_event(make_user):
    user = make_user(balance_cents=1000)
    ledger.debit(user.id, 250, kind="renewal", key="r1", description="Renewal of web1.example.com")
    db.session.commit()
    events = _activity(user)
    assert [e.message for e in events] == [
        "$10.00 added to your wallet: Test top-up. Balance: $10.00.",
        "$2.50 charged from your wallet: Renewal of web1.example.com. Balance: $7.50.",
    ]
    # a replay writes neither an entry nor an event
    again = ledger.debit(user.id, 250, kind="renewal", key="r1", description="Renewal of web1.example.com")
    db.session.commit()
    assert again.balance_after_cents == 750 and len(_activity(user)) == 2
    assert ledger.balance_cents(user.id) == ledger.ledger_sum_cents(user.id) == 750


def test_refused_debit_writes_nothing(make_user):
    user = make_user(balance_cents=100)
    with pytest.raises(InsufficientFunds) as exc:
        ledger.debit(user.id, 101, kind="order", key="o1", description="Order")
    assert exc.value.shortfall_cents == 1 and "$0.01" in str(exc.value)
    db.session.commit()
    assert ledger.find_entry("o1") is None and len(_activity(user)) == 1
    assert ledger.balance_cents(user.id) == 100


def test_reversal_once_and_never_negative(make_user):
    user = make_user(balance_cents=1000)
    topup = ledger.find_entry(f"test-topup:{user.id}")
    ledger.debit(user.id, 600, kind="order", key="o1", description="Order")
    db.session.commit()
    with pytest.raises(InsufficientFunds):  # the credit has been spent in part
        ledger.reverse(topup, reason="charged back")
    assert ledger.find_entry(f"reversal:{topup.uuid}") is None
    charge = ledger.find_entry("o1")
    rev = ledger.reverse(charge, reason="ordered by mistake", actor_id=None)
    again = ledger.reverse(charge, reason="twice")
    db.session.commit()
    assert rev.id == again.id and rev.amount_cents == 600 and rev.kind == "reversal"
    assert rev.reference_type == "ledger" and rev.reference_id == charge.uuid
    assert ledger.balance_cents(user.id) == ledger.ledger_sum_cents(user.id) == 1000
    with pytest.raises(UserError):
        ledger.reverse(rev, reason="undo the undo")
    with pytest.raises(UserError):
        ledger.reverse(charge, reason="  ")


def test_kind_direction_and_types(make_user):
    user = make_user()
    with pytest.raises(ValueError):
        ledger.post(user.id, -5, kind="topup", key="x", description="x")
    with pytest.raises(ValueError):
        ledger.post(user.id, 5, kind="order", key="x", description="x")
    with pytest.raises(TypeError):
        ledger.post(user.id, 5.0, kind="topup", key="x", description="x")
    with pytest.raises(UserError):
        ledger.post(user.id, 0, kind="topup", key="x", description="x")


def test_credit_fires_wallet_credited_hook(make_user, register_plugin):
    from hostbay.core.hookspecs import hookimpl

    seen = []

    class Listener:
        @hookimpl
        def hostbay_wallet_credited(self, user, entry):
            seen.append((user.email, entry.amount_cents))

    user = make_user()
    with register_plugin(Listener()):
        ledger.credit(user.id, 500, kind="bonus", key="b1", description="Welcome bonus")
        ledger.credit(user.id, 500, kind="bonus", key="b1", description="Welcome bonus")  # replay: no event
        ledger.debit(user.id, 100, kind="order", key="o1", description="Order")
        assert seen == []  # event hooks fire after the commit, never inside the transaction
        db.session.commit()
        assert seen == [(user.email, 500)]
        ledger.credit(user.id, 700, kind="bonus", key="b2", description="Rolled back")
        db.session.rollback()
        db.session.commit()
        assert seen == [(user.email, 500)]  # a rolled-back credit announces nothing
