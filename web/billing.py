"""Customer billing pages: billing history (with CSV export), ordering, package changes and refund requests.

Every page speaks in public UUIDs and plain words; every form that moves money carries a one-time request key so
that a double submit pays once.
"""

from __future__ import annotations

import csv
import io

from flask import Blueprint, Response, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from sqlalchemy import select

from hostbay.core import billing, ledger
from hostbay.core.accounts import SSHKey
from hostbay.core.catalog import CYCLE_LABELS, Package, images_for, orderable_packages
from hostbay.core.db import db, new_uuid
from hostbay.core.errors import InsufficientFunds, UserError
from hostbay.core.inventory import OutOfStock
from hostbay.core.money import cents_to_decimal, to_cents
from hostbay.web.common import own_service_or_404

bp = Blueprint("billing", __name__, url_prefix="/panel")

TOPUP_URL = "/panel/topup"
HISTORY_LIMIT = 500


def service_url(service) -> str:
    return f"/panel/services/{service.uuid}"


@bp.app_context_processor
def _billing_context():
    return {"cycle_labels": CYCLE_LABELS, "topup_url": TOPUP_URL, "kind_labels": ledger.KIND_LABELS}


def parse_amount(text: str) -> int:
    """A positive USD amount typed in a form ("12.50", "$12.50") as cents; UserError otherwise."""
    try:
        cents = to_cents((text or "").strip().replace(",", ""))
    except (ValueError, TypeError):
        raise UserError("Enter an amount in dollars and cents, e.g. 12.50.") from None
    if cents <= 0:
        raise UserError("Enter an amount greater than zero.")
    return cents


# --------------------------------------------------------------------------------------------------------------
# History
# --------------------------------------------------------------------------------------------------------------

@bp.get("/billing")
@login_required
def history():
    entries = db.session.scalars(ledger.entries_for(current_user.id).limit(HISTORY_LIMIT)).all()
    refunds = db.session.scalars(select(billing.RefundRequest).filter_by(user_id=current_user.id)
                                 .order_by(billing.RefundRequest.created_at.desc())).all()
    return render_template("billing/history.html", entries=entries, refunds=refunds,
                           balance=ledger.balance_cents(current_user.id), limit=HISTORY_LIMIT)


def _csv_text(value: str) -> str:
    # A spreadsheet must not read a description as a formula.
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


@bp.get("/billing/export.csv")
@login_required
def export_csv():
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["date_utc", "reference", "type", "description", "amount_usd", "balance_usd"])
    for e in db.session.scalars(ledger.entries_for(current_user.id, newest_first=False)):
        writer.writerow([e.created_at.strftime("%Y-%m-%d %H:%M:%S"), e.uuid, ledger.KIND_LABELS.get(e.kind, e.kind),
                         _csv_text(e.description), str(cents_to_decimal(e.amount_cents)),
                         str(cents_to_decimal(e.balance_after_cents))])
    return Response(out.getvalue(), mimetype="text/csv",
                    headers={"Content-Disposition": "attachment; filename=billing-history.csv"})


# --------------------------------------------------------------------------------------------------------------
# Ordering: package -> cycle, image, SSH keys, hostname -> review with the exact charge -> confirm
# --------------------------------------------------------------------------------------------------------------

def _orderable_package(package_uuid: str) -> Package:
    pkg = db.session.scalar(select(Package).filter_by(uuid=package_uuid))
    if pkg is None or not pkg.orderable or not pkg.prices:
        abort(404)
    return pkg


def _order_form(pkg: Package) -> dict:
    f = request.form if request.method == "POST" else request.args
    return {"cycle": f.get("cycle", ""), "image": f.get("image", ""), "hostname": f.get("hostname", ""),
            "ssh_keys": f.getlist("ssh_keys"), "key": f.get("key") or new_uuid()}


def _render_configure(pkg: Package, form: dict, status: int = 200, exc: UserError | None = None):
    """The order form; a refused field (``exc.field``) gets its message next to it as well as in the flash."""
    keys = db.session.scalars(select(SSHKey).filter_by(user_id=current_user.id).order_by(SSHKey.name)).all()
    return render_template("billing/order_configure.html", package=pkg, form=form, images=images_for(pkg),
                           ssh_keys=keys, balance=ledger.balance_cents(current_user.id),
                           field=getattr(exc, "field", None), error=exc.customer_message if exc else None), status


@bp.get("/order")
@login_required
def order():
    pkgs = orderable_packages()
    return render_template("billing/order_packages.html", vps=[p for p in pkgs if p.kind == "vps"],
                           dedicated=[p for p in pkgs if p.kind == "dedicated"],
                           balance=ledger.balance_cents(current_user.id))


@bp.get("/order/<package_uuid>")
@login_required
def order_configure(package_uuid):
    pkg = _orderable_package(package_uuid)
    form = _order_form(pkg)
    if not form["cycle"] and pkg.cycles:
        form["cycle"] = pkg.cycles[0]
    return _render_configure(pkg, form)


def _render_review(pkg: Package, form: dict, draft, status: int = 200):
    quote = billing.quote_order(current_user, pkg, draft.cycle)
    keys = db.session.scalars(select(SSHKey).where(SSHKey.id.in_(draft.ssh_key_ids))).all()
    return render_template("billing/order_review.html", package=pkg, form=form, draft=draft, quote=quote,
                           keys=keys), status


@bp.post("/order/<package_uuid>/review")
@login_required
def order_review(package_uuid):
    pkg = _orderable_package(package_uuid)
    form = _order_form(pkg)
    try:
        draft = billing.prepare_order(current_user, pkg, form["cycle"], form["hostname"], form["image"] or None,
                                      form["ssh_keys"])
    except UserError as exc:
        flash(exc.customer_message, "error")
        return _render_configure(pkg, form, 400, exc)
    return _render_review(pkg, form, draft)


@bp.post("/order/<package_uuid>/confirm")
@login_required
def order_confirm(package_uuid):
    pkg = _orderable_package(package_uuid)
    form = _order_form(pkg)
    try:
        svc = billing.place_order(current_user, pkg, form["cycle"], form["hostname"], form["image"] or None,
                                  form["ssh_keys"], key=form["key"])
        db.session.commit()  # the provisioning job is dispatched after this commit
    except OutOfStock as exc:
        db.session.commit()  # nothing was charged; the refused order is kept for staff (the demand list)
        flash(exc.customer_message, "error")
        return _render_configure(pkg, form, 400, exc)
    except InsufficientFunds as exc:
        flash(exc.customer_message, "error")
        draft = billing.prepare_order(current_user, pkg, form["cycle"], form["hostname"], form["image"] or None,
                                      form["ssh_keys"])
        return _render_review(pkg, form, draft, 402)
    except UserError as exc:
        flash(exc.customer_message, "error")
        return _render_configure(pkg, form, 400, exc)
    flash(f"Thank you: {svc.hostname} is paid and being set up.", "info")
    return redirect(service_url(svc))


# --------------------------------------------------------------------------------------------------------------
# Package change
# --------------------------------------------------------------------------------------------------------------

_own_service = own_service_or_404


@bp.get("/services/<service_uuid>/change-package")
@login_required
def change_list(service_uuid):
    svc = _own_service(service_uuid)
    allowed = "change_package" in svc.actions_for()
    quotes = [billing.quote_change(svc, p) for p in billing.change_candidates(svc)] if allowed else []
    return render_template("billing/change_list.html", service=svc, quotes=quotes, allowed=allowed,
                           balance=ledger.balance_cents(current_user.id))


def _change_target(svc):
    pkg = db.session.scalar(select(Package).filter_by(uuid=request.form.get("package", "")))
    if pkg is None or pkg not in billing.change_candidates(svc):
        abort(404)
    return pkg


def _render_change_review(svc, pkg, key, status=200):
    from hostbay.core.quotes import create_quote

    signed = create_quote(svc, pkg)
    return render_template("billing/change_review.html", service=svc, quote=signed.quote, key=key,
                           quote_token=signed.token, expires_at=signed.expires_at,
                           balance=ledger.balance_cents(current_user.id)), status


@bp.post("/services/<service_uuid>/change-package/review")
@login_required
def change_review(service_uuid):
    svc = _own_service(service_uuid)
    try:
        from hostbay.core.services import require_action

        require_action(svc, "change_package")
    except UserError as exc:
        flash(exc.customer_message, "error")
        return redirect(url_for("billing.change_list", service_uuid=svc.uuid))
    return _render_change_review(svc, _change_target(svc), request.form.get("key") or new_uuid())


@bp.post("/services/<service_uuid>/change-package/confirm")
@login_required
def change_confirm(service_uuid):
    svc = _own_service(service_uuid)
    pkg = _change_target(svc)
    key = request.form.get("key", "")
    from hostbay.core.quotes import QuoteExpired, apply_quote

    try:
        apply_quote(request.form.get("quote", ""), svc, current_user,
                    confirm=request.form.get("confirm_hostname"), key=key)
        db.session.commit()  # the money, the state and the job together; the job is dispatched after it
    except QuoteExpired as exc:  # back to the review, with the current price and a fresh quote
        db.session.rollback()
        flash(exc.customer_message, "error")
        svc = _own_service(service_uuid)
        if "change_package" not in svc.actions_for():
            return redirect(url_for("billing.change_list", service_uuid=svc.uuid))
        return _render_change_review(svc, pkg, new_uuid(), 409)
    except UserError as exc:
        flash(exc.customer_message, "error")
        svc = _own_service(service_uuid)
        if "change_package" not in svc.actions_for():
            return redirect(url_for("billing.change_list", service_uuid=svc.uuid))
        return _render_change_review(svc, pkg, key, 402 if isinstance(exc, InsufficientFunds) else 400)
    flash(f"The package of {svc.hostname} is being changed to {pkg.name}.", "info")
    return redirect(service_url(svc))


# --------------------------------------------------------------------------------------------------------------
# Refund requests
# --------------------------------------------------------------------------------------------------------------

@bp.route("/billing/refund", methods=["GET", "POST"])
@login_required
def refund():
    from hostbay.core.refunds import refundable_cents

    balance = ledger.balance_cents(current_user.id)
    refundable = refundable_cents(current_user.id)
    form = {"amount": request.form.get("amount", ""), "reason": request.form.get("reason", ""),
            "payout_details": request.form.get("payout_details", "")}
    if request.method == "POST":
        try:
            billing.request_refund(current_user, parse_amount(form["amount"]), form["reason"],
                                   form["payout_details"])
            db.session.commit()
        except UserError as exc:
            flash(exc.customer_message, "error")
            return render_template("billing/refund.html", balance=balance, refundable=refundable,
                                   form=form), 400
        flash("Your refund request was received; our staff will review it.", "info")
        return redirect(url_for("billing.history"))
    return render_template("billing/refund.html", balance=balance, refundable=refundable, form=form)
