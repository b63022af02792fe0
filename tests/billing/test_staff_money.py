import pytest

from hostbay.core import billing, ledger
from hostbay.core.activity import ActivityEntry, AuditEntry
from hostbay.core.db import db
from hostbay.core.errors import ActionNotAllowed, InsufficientFunds, UserError


def _audit(action):
    return db.session.scalars(db.select(AuditEntry).filter_by(action=action)).all()


def test_charge_bonus_correction(make_user):
    user = make_user(balance_cents=1000)
    staff = make_user(role="billing")
    b = billing.bonus(user, 500, staff, "Loyalty bonus", key="b1", note="ticket 12")
    c = billing.admin_charge(user, 300, staff, "Extra IPv4 address", key="c1")
    k = billing.correction(user, -200, staff, "double top-up credited", key="k1")
    assert (b.kind, c.kind, k.kind) == ("bonus", "admin_charge", "correction_debit")
    assert all(e.actor_type == "staff" and e.actor_id == staff.id for e in (b, c, k))
    assert k.note == "double top-up credited" and k.description == "Balance correction"
    assert ledger.balance_cents(user.id) == ledger.ledger_sum_cents(user.id) == 1000
    assert len(_audit("wallet.bonus")) == len(_audit("wallet.admin_charge")) == len(_audit("wallet.correction")) == 1
    # replays change nothing
    assert billing.bonus(user, 500, staff, "Loyalty bonus", key="b1").id == b.id
    assert billing.correction(user, -200, staff, "again", key="k1").id == k.id
    assert ledger.balance_cents(user.id) == 1000 and len(_audit("wallet.bonus")) == 1
    # the customer's log says it in plain words, without the staff note
    msgs = db.session.scalars(db.select(ActivityEntry.message).filter_by(user_id=user.id)).all()
    assert "$5.00 added to your wallet: Loyalty bonus. Balance: $15.00." in msgs
    assert not any("ticket 12" in m for m in msgs)


def test_staff_rules(make_user):
    user = make_user(balance_cents=100)
    support = make_user(role="support")
    admin = make_user(role="admin")
    with pytest.raises(ActionNotAllowed):
        billing.bonus(user, 500, support, "x", key="s")
    with pytest.raises(ActionNotAllowed):
        billing.bonus(user, 500, user, "x", key="s")
    with pytest.raises(UserError):
        billing.correction(user, 100, admin, "  ", key="c")
    with pytest.raises(UserError):
        billing.admin_charge(user, -5, admin, "x", key="c")
    with pytest.raises(UserError):
        billing.bonus(user, 5, admin, "", key="c")
    with pytest.raises(InsufficientFunds):
        billing.admin_charge(user, 101, admin, "Too much", key="c")
    assert ledger.balance_cents(user.id) == 100 and not _audit("wallet.admin_charge")


def test_reverse_entry(make_user):
    user = make_user(balance_cents=1000)
    admin = make_user(role="admin")
    b = billing.bonus(user, 500, admin, "Bonus", key="b")
    rev = billing.reverse_entry(b, admin, "given to the wrong customer")
    assert rev.amount_cents == -500 and ledger.balance_cents(user.id) == 1000
    assert billing.reverse_entry(b, admin, "again").id == rev.id and ledger.balance_cents(user.id) == 1000
    assert len(_audit("wallet.reversal")) == 1


def test_refund_request_approve(make_user):
    user = make_user(balance_cents=2000)
    staff = make_user(role="billing")
    with pytest.raises(UserError):
        billing.request_refund(user, 2001, "leaving")
    with pytest.raises(UserError):
        billing.request_refund(user, 500, " ")
    req = billing.request_refund(user, 1500, "Moving to another provider", "BTC bc1q...")
    with pytest.raises(UserError):
        billing.request_refund(user, 100, "one more")
    assert db.session.scalars(billing.pending_refunds()).all() == [req]
    with pytest.raises(UserError):
        billing.approve_refund(req, staff, "  ")
    billing.approve_refund(req, staff, "txid 4f3c", note="paid by hand")
    assert req.state == billing.REFUND_APPROVED and req.external_reference == "txid 4f3c"
    entry = req.ledger_entry
    assert entry.kind == "refund_payout" and entry.amount_cents == -1500 and "txid 4f3c" in entry.description
    assert ledger.balance_cents(user.id) == ledger.ledger_sum_cents(user.id) == 500
    with pytest.raises(UserError):  # decided already: no second payout
        billing.approve_refund(req, staff, "txid 4f3c")
    with pytest.raises(UserError):
        billing.reject_refund(req, staff, "no")
    assert ledger.balance_cents(user.id) == 500 and _audit("refund.approve")


def test_refund_request_reject_and_short_wallet(make_user):
    user = make_user(balance_cents=2000)
    staff = make_user(role="admin")
    req = billing.request_refund(user, 2000, "Not needed")
    ledger.debit(user.id, 100, kind="renewal", key="r", description="Renewal")
    db.session.commit()
    with pytest.raises(UserError, match=r"Only \$19.00 of this wallet is unspent top-up money"):
        billing.approve_refund(req, staff, "tx")  # $1 of the top-up was spent since the request
    db.session.refresh(req)
    assert req.state == billing.REFUND_PENDING and ledger.balance_cents(user.id) == 1900
    with pytest.raises(UserError):
        billing.reject_refund(req, staff, "")
    billing.reject_refund(req, staff, "Bonus credit is not refundable under the Terms of Service.")
    assert req.state == billing.REFUND_REJECTED and ledger.balance_cents(user.id) == 1900
    msgs = db.session.scalars(db.select(ActivityEntry.message).filter_by(user_id=user.id)).all()
    assert any("declined: Bonus credit is not refundable" in m for m in msgs)
    with pytest.raises(ActionNotAllowed):
        billing.approve_refund(req, make_user(role="support"), "tx")
