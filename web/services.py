"""Customer service pages: list, detail (state, actions from the ACTIONS table, live progress, activity log) and
the JSON progress endpoint the page's poller reads. Customers only ever see public UUIDs and plain words."""

from __future__ import annotations

from flask import Blueprint, flash, jsonify, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from sqlalchemy import select

from hostbay.core import clock, jobs, ledger
from hostbay.core import power as power_mod
from hostbay.core.actions import PANEL_ACTIONS, request_action
from hostbay.core.confirm import require_confirmation
from hostbay.core.lifecycle import service_history
from hostbay.core.catalog import Image
from hostbay.core.db import db, new_uuid
from hostbay.core.errors import UserError
from hostbay.core.services import REFUSAL, SUSPENDED, Service, customer_services, get_customer_service
from hostbay.web.common import own_service_or_404

bp = Blueprint("services", __name__, url_prefix="/panel/services")


_service_or_404 = own_service_or_404


def _operations(svc: Service, limit: int = 10):
    return db.session.scalars(select(jobs.Operation).where(jobs.Operation.service_id == svc.id)
                              .order_by(jobs.Operation.created_at.desc()).limit(limit)).all()


def op_public(op) -> dict:
    """What a customer may see of an operation (no admin error text)."""
    return {"id": op.id, "title": op.title, "state": op.state, "pct": op.progress_pct, "text": op.progress_text,
            "finished": op.finished, "error": op.customer_error if op.state == jobs.FAILED else None}


@bp.get("/")
@login_required
def index():
    services = db.session.scalars(customer_services(current_user.id).order_by(Service.created_at)).unique().all()
    return render_template("services/list.html", services=services)


@bp.get("/<uuid>")
@login_required
def detail(uuid):
    svc = _service_or_404(uuid)
    allowed = svc.actions_for(staff=False)
    if svc.state == SUSPENDED and (svc.suspension_reason == "staff" or svc.renews_at > clock.now()):
        allowed = allowed - {"renew"}  # a payment would not lift it (staff hold it, or the period is paid)
    power = None
    if allowed & power_mod.POWER_ACTIONS:
        power = power_mod.power_of(svc)
        allowed = allowed - (power_mod.POWER_ACTIONS - power_mod.power_actions(power))
    actions = [(a, label, confirm) for a, label, confirm in PANEL_ACTIONS if a in allowed]
    activity = service_history(svc)
    images = []
    if "reinstall" in allowed:
        images = db.session.scalars(select(Image).where(Image.driver == svc.package.driver,
                                                        Image.enabled.is_(True)).order_by(Image.name)).all()
    balance = ledger.balance_cents(current_user.id)
    from .panel import dashboard_notices

    notices = [n for n in dashboard_notices(current_user) if svc.uuid in n["services"]]
    return render_template("services/detail.html", service=svc, notices=notices, request_id=new_uuid(), actions=actions, activity=activity,
                           operations=[op_public(o) for o in _operations(svc)], images=images, balance=balance,
                           suspended=svc.state == SUSPENDED, refusal=REFUSAL.get(svc.state), allowed=allowed,
                           now=clock.now(), power=power)


@bp.post("/<uuid>/action/<action>")
@login_required
def action(uuid, action):
    svc = _service_or_404(uuid)
    # the form's request_id makes a double submit the same operation (it is part of the idempotency key)
    rid = (request.form.get("request_id") or "")[:36]
    params = {"request_id": rid if len(rid) == 36 else None}
    if action == "reinstall" and request.form.get("image"):
        image = db.session.scalar(select(Image).filter_by(uuid=request.form["image"]))
        if image is None:
            flash("Choose one of the offered images.", "error")
            return redirect(url_for(".detail", uuid=uuid))
        params["image_id"] = image.id
    if action == "cancel":
        params["when"] = request.form.get("when", "end")
    if action in power_mod.POWER_ACTIONS:
        why = power_mod.refusal(action, power_mod.power_of(svc))
        if why:
            flash(why, "error")
            return redirect(url_for(".detail", uuid=uuid))
        power_mod.mark_stale(svc)
    try:
        require_confirmation(svc, action, request.form.get("confirm_hostname"), params)
        op = request_action(svc, action, current_user, **params)
        db.session.commit()
    except UserError as exc:
        db.session.rollback()
        flash(str(exc), "error")
        return redirect(url_for(".detail", uuid=uuid))
    if op is not None:
        flash(f"{op.title}: started.", "info")
    elif action == "renew":
        flash(f"Renewed until {svc.renews_at:%Y-%m-%d}; the price was charged from your wallet.", "info")
    elif action == "cancel":
        flash(f"The service will end on {svc.renews_at:%Y-%m-%d}, at the end of its paid period.", "info")
    if get_customer_service(current_user.id, uuid) is None:  # cancelled now: it is gone from the panel
        return redirect(url_for("services.index"))
    return redirect(url_for(".detail", uuid=uuid))


@bp.get("/<uuid>/progress")
@login_required
def progress(uuid):
    svc = _service_or_404(uuid)
    return jsonify(state=svc.state, label=svc.label, busy=svc.busy,
                   operations=[op_public(o) for o in _operations(svc, 5)])
