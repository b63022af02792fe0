"""The prepaid USD wallet: an append-only ledger of integer-cent entries.

Every movement is one ``LedgerEntry`` with a unique idempotency key. ``Wallet.balance_cents`` is a cache of the
sum of its entries, kept in the same transaction as each insert: a debit is one conditional UPDATE
(``balance >= amount``) so two concurrent debits can never overdraw, on PostgreSQL and SQLite alike. Replaying an
operation with the same key returns the first entry and changes nothing.

Every new entry also writes one ``billing`` event in the customer's activity log (plain words, in the same
savepoint), so the activity log and the ledger can never disagree. Committed entries are counted for Prometheus
(``hostbay_wallet_movements_total``, ``hostbay_wallet_cents_total``) after their transaction commits. A mistaken entry is never edited or deleted:
:func:`reverse` appends its opposite (kind ``reversal``), once per entry.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, String, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from . import clock, metrics
from .activity import log_activity
from .db import db, new_uuid
from .errors import InsufficientFunds, UserError

CREDIT_KINDS = {"topup", "downgrade_credit", "bonus", "refund_credit", "correction_credit", "reversal"}
DEBIT_KINDS = {"order", "renewal", "upgrade", "admin_charge", "correction_debit", "refund_payout", "reversal"}
KINDS = CREDIT_KINDS | DEBIT_KINDS

# Customer-facing names of the kinds (billing history, CSV export).
KIND_LABELS = {
    "topup": "Top-up", "order": "Order", "renewal": "Renewal", "upgrade": "Upgrade",
    "downgrade_credit": "Downgrade credit", "admin_charge": "Charge", "bonus": "Bonus",
    "refund_credit": "Refund credit", "correction_credit": "Correction", "correction_debit": "Correction",
    "refund_payout": "External refund", "reversal": "Reversal",
}


class Wallet(db.Model):
    __tablename__ = "wallets"
    __table_args__ = (CheckConstraint("balance_cents >= 0", name="balance_not_negative"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), unique=True)
    balance_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    currency: Mapped[str] = mapped_column(String(3), default="USD")


class LedgerEntry(db.Model):
    __tablename__ = "ledger_entries"

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True, default=new_uuid)
    wallet_id: Mapped[int] = mapped_column(ForeignKey("wallets.id"), index=True)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    amount_cents: Mapped[int] = mapped_column(BigInteger)  # signed: + credit, - debit
    balance_after_cents: Mapped[int] = mapped_column(BigInteger)
    reference_type: Mapped[str | None] = mapped_column(String(32))  # service, payment, refund, admin
    reference_id: Mapped[str | None] = mapped_column(String(64))
    actor_type: Mapped[str] = mapped_column(String(16), default="system")  # customer, staff, system, gateway
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    description: Mapped[str] = mapped_column(String(255))  # customer-safe
    note: Mapped[str | None] = mapped_column(String(500))  # staff-only
    created_at: Mapped[datetime] = mapped_column(default=lambda: clock.now(), index=True)


def wallet_for(user_id: int) -> Wallet:
    """The user's wallet, created on first use (race-safe)."""
    wallet = db.session.scalar(select(Wallet).filter_by(user_id=user_id))
    if wallet is None:
        try:
            with db.session.begin_nested():
                wallet = Wallet(user_id=user_id, balance_cents=0)
                db.session.add(wallet)
        except IntegrityError:
            wallet = db.session.scalar(select(Wallet).filter_by(user_id=user_id))
    return wallet


def balance_cents(user_id: int) -> int:
    return db.session.scalar(select(Wallet.balance_cents).filter_by(user_id=user_id)) or 0


def ledger_sum_cents(user_id: int) -> int:
    """The balance derived from the entries alone (for audits and tests)."""
    return db.session.scalar(
        select(func.coalesce(func.sum(LedgerEntry.amount_cents), 0))
        .join(Wallet, Wallet.id == LedgerEntry.wallet_id).where(Wallet.user_id == user_id)) or 0


def find_entry(key: str) -> LedgerEntry | None:
    return db.session.scalar(select(LedgerEntry).filter_by(idempotency_key=key))


def post(user_id: int, amount_cents: int, *, kind: str, key: str, description: str,
         reference: tuple[str, str | int] | None = None, actor_type: str = "system", actor_id: int | None = None,
         note: str | None = None, service_id: int | None = None) -> LedgerEntry:
    """Append one entry: positive credits, negative debits. Idempotent on ``key``.

    Runs inside the caller's transaction (a SAVEPOINT), so a caller can make a debit and the work it pays for
    all-or-nothing. Raises InsufficientFunds for a debit the balance does not cover; nothing is written then.
    ``description`` is what the customer reads; ``note`` is for staff only. ``service_id`` ties the activity
    log event to a service.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown ledger kind {kind!r}")
    if not isinstance(amount_cents, int) or isinstance(amount_cents, bool):
        raise TypeError("amount_cents must be an int")
    if amount_cents == 0:
        raise UserError("An amount of zero is not a ledger movement.")
    if amount_cents > 0 and kind not in CREDIT_KINDS or amount_cents < 0 and kind not in DEBIT_KINDS:
        raise ValueError(f"{kind} cannot move money in that direction")
    existing = find_entry(key)
    if existing is not None:
        return existing
    wallet = wallet_for(user_id)
    try:
        with db.session.begin_nested():
            stmt = (update(Wallet).where(Wallet.id == wallet.id)
                    .values(balance_cents=Wallet.balance_cents + amount_cents)
                    .returning(Wallet.balance_cents))
            if amount_cents < 0:
                stmt = stmt.where(Wallet.balance_cents >= -amount_cents)
            new_balance = db.session.execute(stmt.execution_options(synchronize_session=False)).scalar()
            if new_balance is None:
                raise InsufficientFunds(-amount_cents, balance_cents(user_id))
            entry = LedgerEntry(
                wallet_id=wallet.id, idempotency_key=key, kind=kind, amount_cents=amount_cents,
                balance_after_cents=new_balance, description=description[:255],
                reference_type=reference[0] if reference else None,
                reference_id=str(reference[1]) if reference else None,
                actor_type=actor_type, actor_id=actor_id, note=note)
            db.session.add(entry)
            log_activity(user_id, "billing", activity_message(entry), service_id)
            db.session.flush()
    except InsufficientFunds:
        # A concurrent request with the same key may have committed the debit while we waited for the row.
        existing = find_entry(key)
        if existing is not None:
            return existing
        raise
    except IntegrityError:
        # The same key was written concurrently: the savepoint rolled our update back; return theirs.
        existing = find_entry(key)
        if existing is None:
            raise
        return existing
    db.session.refresh(wallet)
    metrics.count_ledger_entry(db.session(), entry)  # counted when (and only if) the transaction commits
    if amount_cents > 0:
        _notify_credited(user_id, entry)
    return entry


def activity_message(entry: LedgerEntry) -> str:
    """The customer activity log line for a ledger entry: plain words, amount and resulting balance."""
    from .money import format_cents

    verb = "added to" if entry.amount_cents > 0 else "charged from"
    return (f"{format_cents(abs(entry.amount_cents))} {verb} your wallet: {entry.description}. "
            f"Balance: {format_cents(entry.balance_after_cents)}.")


def _notify_credited(user_id: int, entry: LedgerEntry) -> None:
    from flask import current_app, has_app_context

    from .accounts import User

    if has_app_context() and "hostbay" in current_app.extensions:
        from .jobs import notify_after_commit

        entry_id = entry.id
        notify_after_commit("hostbay_wallet_credited", lambda: {"user": db.session.get(User, user_id),
                                                                "entry": db.session.get(LedgerEntry, entry_id)})


def credit(user_id: int, amount_cents: int, **kw) -> LedgerEntry:
    if amount_cents <= 0:
        raise UserError("A credit must be a positive amount.")
    return post(user_id, amount_cents, **kw)


def debit(user_id: int, amount_cents: int, **kw) -> LedgerEntry:
    if amount_cents <= 0:
        raise UserError("A charge must be a positive amount.")
    return post(user_id, -amount_cents, **kw)


def entries_for(user_id: int, newest_first: bool = True):
    """A select of the user's ledger entries, for history pages and exports."""
    order = (LedgerEntry.created_at.desc(), LedgerEntry.id.desc()) if newest_first else \
        (LedgerEntry.created_at, LedgerEntry.id)
    return (select(LedgerEntry).join(Wallet, Wallet.id == LedgerEntry.wallet_id)
            .where(Wallet.user_id == user_id).order_by(*order))


def owner_id(entry: LedgerEntry) -> int:
    return db.session.scalar(select(Wallet.user_id).where(Wallet.id == entry.wallet_id))


def reverse(entry: LedgerEntry, *, reason: str, actor_type: str = "staff", actor_id: int | None = None,
            description: str | None = None) -> LedgerEntry:
    """Append the opposite of ``entry`` (kind ``reversal``). An entry is reversed at most once: the key is derived
    from the entry, so a second call returns the first reversal. Reversing a credit the customer has already spent
    is refused with InsufficientFunds (the balance never goes negative); a reversal itself is not reversible
    (post a correction instead)."""
    reason = (reason or "").strip()
    if not reason:
        raise UserError("Give a reason for the reversal.")
    if entry.kind == "reversal":
        raise UserError("A reversal cannot itself be reversed; post a correction instead.")
    return post(owner_id(entry), -entry.amount_cents, kind="reversal", key=f"reversal:{entry.uuid}",
                description=description or f"Reversal of: {entry.description}"[:255],
                reference=("ledger", entry.uuid), actor_type=actor_type, actor_id=actor_id, note=reason)
