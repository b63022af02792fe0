"""Wallet top-ups: the customer's top-up form and live status page, the providers' webhook endpoint, and the
staff pages (gateway settings, payments, reconcile)."""

from __future__ import annotations

from flask import Blueprint, abort, flash, jsonify, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from hostbay.core import ledger, payments
from hostbay.core.db import db
from hostbay.core.errors import NotFound, SettingsError, UserError
from hostbay.core.money import format_cents

from .extensions import csrf
from .staff import staff_required

bp = Blueprint("payments", __name__)
WEBHOOK_MAX_BYTES = 256 * 1024  # provider deliveries are a few kilobytes



# --------------------------------------------------------------------------------------------------------------
# Customer
# --------------------------------------------------------------------------------------------------------------

@bp.route("/panel/topup", methods=["GET", "POST"])
@login_required
def topup():
    gateways = payments.enabled_gateways()
    lo, hi = payments.limits()
    form = request.form
    if request.method == "POST":
        try:
            if not gateways:
                raise UserError("Top-ups are not available right now.")
            name = form.get("gateway") or (gateways[0][0] if len(gateways) == 1 else "")
            if name not in {g for g, _ in gateways}:
                raise UserError("Choose a payment method.")
            payment = payments.start_topup(current_user, name, form.get("amount", ""))
            db.session.commit()  # the pending row exists before the provider is asked
            try:
                payments.open_checkout(payment)
            finally:
                db.session.commit()  # the invoice, or the payment marked invalid when the provider failed
        except UserError as exc:
            db.session.rollback()
            flash(str(exc), "error")
            return render_template("payments/topup.html", gateways=gateways, lo=lo, hi=hi, form=form,
                                   recent=_recent(), balance=ledger.balance_cents(current_user.id)), 400
        return redirect(payment.checkout_url, code=303)
    return render_template("payments/topup.html", gateways=gateways, lo=lo, hi=hi, form=form, recent=_recent(),
                           balance=ledger.balance_cents(current_user.id))


def _recent():
    return db.session.scalars(db.select(payments.Payment).filter_by(user_id=current_user.id)
                              .order_by(payments.Payment.created_at.desc(), payments.Payment.id.desc())
                              .limit(10)).all()


def _customer_payment(payment_uuid: str):
    try:
        return payments.payment_for_customer(current_user, payment_uuid)
    except NotFound:
        abort(404)


def _status_json(p):
    return {"payment": p.uuid, "status": p.status, "label": p.label, "final": p.final,
            "amount": format_cents(p.amount_cents),
            "balance": format_cents(ledger.balance_cents(p.user_id))}


@bp.get("/panel/topup/<payment_uuid>")
@login_required
def status(payment_uuid):
    p = _customer_payment(payment_uuid)
    return render_template("payments/status.html", p=p, balance=ledger.balance_cents(current_user.id))


@bp.get("/panel/topup/<payment_uuid>/status")
@login_required
def status_json(payment_uuid):
    resp = jsonify(_status_json(_customer_payment(payment_uuid)))
    resp.headers["Cache-Control"] = "no-store"
    return resp


# --------------------------------------------------------------------------------------------------------------
# Provider webhooks
# --------------------------------------------------------------------------------------------------------------

@bp.post("/payments/webhook/<gateway>")
@csrf.exempt
def webhook(gateway):
    if (request.content_length or 0) > WEBHOOK_MAX_BYTES:
        return jsonify(outcome="too_large"), 413
    raw = request.stream.read(WEBHOOK_MAX_BYTES + 1) if request.content_length is None else \
        request.get_data(cache=False, as_text=False)
    if len(raw) > WEBHOOK_MAX_BYTES:
        return jsonify(outcome="too_large"), 413
    result = payments.handle_webhook(gateway[:64], request.headers, raw)
    return jsonify(outcome=result.outcome), result.http_status


# --------------------------------------------------------------------------------------------------------------
# Staff
# --------------------------------------------------------------------------------------------------------------

@bp.get("/staff/payments/")
@staff_required("money.view")
def staff_list():
    wanted = request.args.get("status") or None
    if wanted not in payments.STATUSES:
        wanted = None
    return render_template("payments/staff_list.html", items=payments.list_payments(wanted), wanted=wanted,
                           statuses=payments.STATUSES)


@bp.get("/staff/payments/<payment_uuid>")
@staff_required("money.view")
def staff_detail(payment_uuid):
    try:
        p = payments.get_payment(payment_uuid)
    except NotFound:
        abort(404)
    deliveries = db.session.scalars(db.select(payments.WebhookDelivery).filter_by(payment_id=p.id)
                                    .order_by(payments.WebhookDelivery.id)).all()
    return render_template("payments/staff_detail.html", p=p, deliveries=deliveries)


@bp.post("/staff/payments/<payment_uuid>/reconcile")
@staff_required("money.adjust")
def staff_reconcile(payment_uuid):
    try:
        p = payments.get_payment(payment_uuid)
        new = payments.reconcile(p, current_user)
        db.session.commit()
        flash(f"Reconciled with the provider: {new}.", "info")
    except NotFound:
        abort(404)
    except UserError as exc:
        db.session.commit()  # the failed attempt's audit entry
        flash(str(exc), "error")
    return redirect(url_for("payments.staff_detail", payment_uuid=payment_uuid), code=303)


@bp.post("/staff/payments/<payment_uuid>/credit")
@staff_required("money.adjust")
def staff_credit(payment_uuid):
    try:
        p = payments.get_payment(payment_uuid)
        payments.credit_received(p, current_user, request.form.get("amount", ""))
        db.session.commit()
        flash("The amount received was added to the customer's wallet.", "info")
    except NotFound:
        abort(404)
    except UserError as exc:
        db.session.rollback()
        flash(str(exc), "error")
    return redirect(url_for("payments.staff_detail", payment_uuid=payment_uuid), code=303)


@bp.get("/staff/payments/gateways")
@staff_required("plugins.gateways")  # API keys and webhook secrets: administrators only
def staff_gateways():
    rows = []
    for name, cls in sorted(payments.gateway_classes().items()):
        cfg = payments.gateway_config(name)
        rows.append((name, cls, cfg))
    return render_template("payments/staff_gateways.html", rows=rows, base_url=payments._base_url())


@bp.post("/staff/payments/gateways/<name>/test")
@staff_required("plugins.gateways")
def staff_gateway_test(name):
    """ "Test connection" with the stored settings."""
    from hostbay.core.connection_test import test_connection

    cls = payments.gateway_classes().get(name)
    cfg = payments.gateway_config(name)
    if cls is None or cfg is None:
        abort(404)
    ok, message = test_connection(cls(cfg.settings or {}))
    flash(f"{cls.label}: {message}", "info" if ok else "error")
    return redirect(url_for("payments.staff_gateway", name=name), code=303)


@bp.route("/staff/payments/gateways/<name>", methods=["GET", "POST"])
@staff_required("plugins.gateways")
def staff_gateway(name):
    cls = payments.gateway_classes().get(name)
    if cls is None:
        abort(404)
    cfg = payments.gateway_config(name)
    errors = {}
    if request.method == "POST":
        try:
            saved = payments.save_gateway_config(name, request.form.to_dict(), bool(request.form.get("enabled")),
                                                 current_user)
            db.session.commit()
            from hostbay.core.connection_test import test_connection

            ok, message = test_connection(cls(saved.settings or {}))  # "Test connection" on every save
            flash(f"{cls.label}: settings saved. {message}", "info" if ok else "error")
            return redirect(url_for("payments.staff_gateways"), code=303)
        except SettingsError as exc:
            db.session.rollback()
            errors = exc.errors
            flash("Some settings need attention.", "error")
    shown = payments.masked_settings(name, cfg.settings if cfg else {})
    if request.method == "POST":
        shown.update({s.key: request.form.get(s.key, "") for s in cls.settings if s.type != "secret"})
    return render_template("payments/staff_gateway.html", name=name, cls=cls, cfg=cfg, shown=shown,
                           errors=errors, base_url=payments._base_url()), (400 if errors else 200)
