"""Staff billing pages: a customer's wallet and ledger, the money actions (charge, bonus, correction, reversal)
and the refund request queue. Every action is a ledger entry with the staff actor and an audit entry."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import func, or_, select

from hostbay.core import billing, ledger
from hostbay.core.accounts import User
from hostbay.core.db import db, new_uuid
from hostbay.core.errors import UserError
from hostbay.core.money import format_cents

from .billing import parse_amount
from .staff import staff_required

bp = Blueprint("staff_billing", __name__, url_prefix="/staff/billing")



def _customer(user_uuid: str) -> User:
    user = db.session.scalar(select(User).filter_by(uuid=user_uuid))
    if user is None:
        abort(404)
    return user


@bp.get("/")
@staff_required("money.view")
def home():
    q = (request.args.get("q") or "").strip()
    users = []
    if q:
        like = f"%{q.lower()}%"
        users = db.session.scalars(select(User).where(or_(func.lower(User.email).like(like),
                                                          func.lower(User.name).like(like), User.uuid == q))
                                   .order_by(User.email).limit(50)).all()
    pending = db.session.scalar(select(func.count()).select_from(billing.RefundRequest)
                                .filter_by(state=billing.REFUND_PENDING))
    return render_template("billing/staff_home.html", q=q, users=users, pending=pending,
                           balances={u.id: ledger.balance_cents(u.id) for u in users})


@bp.get("/customers/<user_uuid>")
@staff_required("money.view")
def customer(user_uuid):
    user = _customer(user_uuid)
    entries = db.session.scalars(ledger.entries_for(user.id).limit(500)).all()
    actors = {u.id: u for u in db.session.scalars(select(User).where(
        User.id.in_({e.actor_id for e in entries if e.actor_id})))}
    reversed_ = set(db.session.scalars(select(ledger.LedgerEntry.reference_id).where(
        ledger.LedgerEntry.kind == "reversal", ledger.LedgerEntry.reference_type == "ledger",
        ledger.LedgerEntry.reference_id.in_([e.uuid for e in entries])))) if entries else set()
    return render_template("billing/staff_customer.html", customer=user, entries=entries, actors=actors,
                           reversed=reversed_, balance=ledger.balance_cents(user.id), key=new_uuid(),
                           sum_cents=ledger.ledger_sum_cents(user.id))


@bp.post("/customers/<user_uuid>/money")
@staff_required("money.adjust")
def money(user_uuid):
    user = _customer(user_uuid)
    f = request.form
    action = f.get("action")
    try:
        amount = parse_amount(f.get("amount", ""))
        if action == "charge":
            entry = billing.admin_charge(user, amount, current_user, f.get("description", ""), key=f.get("key", ""),
                                         note=f.get("note") or None)
        elif action == "bonus":
            entry = billing.bonus(user, amount, current_user, f.get("description", ""), key=f.get("key", ""),
                                  note=f.get("note") or None)
        elif action == "correction":
            sign = -1 if f.get("direction") == "debit" else 1
            entry = billing.correction(user, sign * amount, current_user, f.get("note", ""), key=f.get("key", ""),
                                       description=f.get("description") or "Balance correction")
        else:
            abort(400)
        db.session.commit()
    except UserError as exc:
        flash(exc.customer_message, "error")
        return redirect(url_for("staff_billing.customer", user_uuid=user.uuid))
    flash(f"Recorded: {ledger.KIND_LABELS.get(entry.kind, entry.kind)} {format_cents(entry.amount_cents)}; "
          f"balance {format_cents(entry.balance_after_cents)}.", "info")
    return redirect(url_for("staff_billing.customer", user_uuid=user.uuid))


@bp.post("/entries/<entry_uuid>/reverse")
@staff_required("money.adjust")
def reverse(entry_uuid):
    entry = db.session.scalar(select(ledger.LedgerEntry).filter_by(uuid=entry_uuid))
    if entry is None:
        abort(404)
    owner = db.session.get(User, ledger.owner_id(entry))
    try:
        billing.reverse_entry(entry, current_user, request.form.get("reason", ""))
        db.session.commit()
        flash("The entry was reversed.", "info")
    except UserError as exc:
        flash(exc.customer_message, "error")
    return redirect(url_for("staff_billing.customer", user_uuid=owner.uuid))


@bp.get("/refunds")
@staff_required("money.view")
def refunds():
    from hostbay.core.refunds import refundable_cents

    pending = db.session.scalars(billing.pending_refunds()).all()
    decided = db.session.scalars(select(billing.RefundRequest).where(
        billing.RefundRequest.state != billing.REFUND_PENDING)
        .order_by(billing.RefundRequest.decided_at.desc().nulls_last(), billing.RefundRequest.id.desc())
        .limit(50)).all()
    return render_template("billing/staff_refunds.html", pending=pending, decided=decided,
                           balances={r.user_id: ledger.balance_cents(r.user_id) for r in pending},
                           refundable={r.user_id: refundable_cents(r.user_id) for r in pending})


def _refund(uuid: str) -> billing.RefundRequest:
    req = db.session.scalar(select(billing.RefundRequest).filter_by(uuid=uuid))
    if req is None:
        abort(404)
    return req


@bp.post("/refunds/<uuid>/approve")
@staff_required("money.refunds")
def approve(uuid):
    req = _refund(uuid)
    try:
        billing.approve_refund(req, current_user, request.form.get("external_reference", ""),
                               request.form.get("note", ""))
        db.session.commit()
        flash(f"Refund of {format_cents(req.amount_cents)} recorded.", "info")
    except UserError as exc:
        flash(exc.customer_message, "error")
    return redirect(url_for("staff_billing.refunds"))


@bp.post("/refunds/<uuid>/reject")
@staff_required("money.refunds")
def reject(uuid):
    req = _refund(uuid)
    try:
        billing.reject_refund(req, current_user, request.form.get("note", ""))
        db.session.commit()
        flash("Refund request declined.", "info")
    except UserError as exc:
        flash(exc.customer_message, "error")
    return redirect(url_for("staff_billing.refunds"))
