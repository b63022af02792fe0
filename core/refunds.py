"""How much of a wallet may be paid back externally.

Only money that came into the wallet from outside (a top-up, ledger kind ``topup``) and is not yet spent can be
refunded externally. Bonuses, downgrade credits, refund credits and corrections are wallet credit: they can pay
for services, never be paid out. The rule, with the ledger as its only input:

* every credit is a *lot* in the order the entries were written: a ``topup`` lot is refundable, every other
  credit is wallet credit;
* spending (orders, renewals, upgrades, staff charges, debit corrections) uses the oldest lots first
  (first in, first out), whatever their kind;
* an external refund payout uses refundable lots only, oldest first;
* the reversal of a top-up (a charge-back) takes what is left of that top-up's own lot first, then the oldest lots;
  the reversal of a debit gives the amount back as wallet credit.

``refundable_cents(user_id)`` is what remains in refundable lots, never more than the balance. The refund form
shows it; :func:`hostbay.core.billing.request_refund` and :func:`~hostbay.core.billing.approve_refund` refuse
more (approval checks again, because the customer may have spent the money since asking). Worked examples are
in docs/billing.md.
"""

from __future__ import annotations

from sqlalchemy import select

from . import ledger
from .db import db

REFUNDABLE_KINDS = frozenset({"topup"})


def _take(lots: list[list], amount: int, *, refundable_only: bool = False, first: int | None = None) -> None:
    """Remove ``amount`` cents from ``lots`` ([entry uuid, cents, refundable] in arrival order)."""
    order = sorted(range(len(lots)), key=lambda i: (lots[i][0] != first, i)) if first is not None \
        else range(len(lots))
    for i in order:
        if amount <= 0:
            break
        lot = lots[i]
        if refundable_only and not lot[2]:
            continue
        used = min(lot[1], amount)
        lot[1] -= used
        amount -= used


def lots(user_id: int) -> list[list]:
    """The wallet's remaining lots, oldest first: ``[entry uuid, cents left, refundable]``."""
    out: list[list] = []
    entries = db.session.scalars(ledger.entries_for(user_id, newest_first=False)).all()
    for e in entries:
        if e.amount_cents > 0:
            out.append([e.uuid, e.amount_cents, e.kind in REFUNDABLE_KINDS])
        elif e.kind == "refund_payout":
            _take(out, -e.amount_cents, refundable_only=True)
        elif e.kind == "reversal" and e.reference_type == "ledger":
            _take(out, -e.amount_cents, first=e.reference_id)
        else:
            _take(out, -e.amount_cents)
        out = [lot for lot in out if lot[1] > 0]
    return out


def refundable_cents(user_id: int) -> int:
    """Top-up money in the wallet not yet spent: the most an external refund may pay out now."""
    total = sum(cents for _uuid, cents, refundable in lots(user_id) if refundable)
    return max(0, min(total, ledger.balance_cents(user_id)))


def pending_refund_cents(user_id: int, exclude_id: int | None = None) -> int:
    from .billing import REFUND_PENDING, RefundRequest

    q = select(RefundRequest.amount_cents).filter_by(user_id=user_id, state=REFUND_PENDING)
    if exclude_id is not None:
        q = q.where(RefundRequest.id != exclude_id)
    return sum(db.session.scalars(q).all())
