"""Staff service pages: every service (also ended and removal-queued ones) with filters, and a detail page with
infrastructure references, operations (retry the failed ones), staff actions and the audit trail."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import or_, select

from hostbay.core import force, jobs, move
from hostbay.core import power as power_mod
from hostbay.core.accounts import User
from hostbay.core.actions import STAFF_ACTIONS, request_action, staff_permission
from hostbay.core.activity import ActivityEntry, audit
from hostbay.core.catalog import Node
from hostbay.core.db import db, new_uuid
from hostbay.core.errors import HostbayError, UserError
from hostbay.core.lifecycle import NodeReservation, audit_trail
from hostbay.core.notices import Notice
from hostbay.core.services import STATES, Service

from .staff import staff_required

bp = Blueprint("staff_services", __name__, url_prefix="/staff/services")

PAGE = 100


@bp.get("/")
@staff_required("services.view")
def index():
    q = select(Service).join(User, User.id == Service.user_id)
    state = request.args.get("state") or ""
    if state in STATES:
        q = q.where(Service.state == state)
    node = request.args.get("node") or ""
    if node:
        q = q.join(Node, Node.id == Service.node_id).where(Node.name == node)
    package = request.args.get("package") or ""
    if package:
        from hostbay.core.catalog import Package

        q = q.where(Service.package_id.in_(select(Package.id).where(Package.slug == package)))
    text = (request.args.get("q") or "").strip()
    if text:
        like = f"%{text.lower()}%"
        q = q.where(or_(Service.hostname.ilike(like), Service.uuid == text, User.email.ilike(like)))
    page = max(1, request.args.get("page", 1, type=int))
    services = db.session.scalars(q.order_by(Service.id.desc()).offset((page - 1) * PAGE).limit(PAGE + 1)).unique().all()
    nodes = db.session.scalars(select(Node.name).order_by(Node.name)).all()
    from hostbay.core.catalog import Package

    packages = db.session.scalars(select(Package.slug).order_by(Package.slug)).all()
    return render_template("staff/services/list.html", services=services[:PAGE], more=len(services) > PAGE,
                           page=page, states=STATES, state=state, node=node, nodes=nodes, text=text,
                           packages=packages, package=package)


def _service(uuid: str) -> Service:
    svc = db.session.scalar(select(Service).filter_by(uuid=uuid))
    if svc is None:
        abort(404)
    return svc


@bp.get("/<uuid>")
@staff_required("services.view")
def detail(uuid):
    svc = _service(uuid)
    ops = db.session.scalars(select(jobs.Operation).where(jobs.Operation.service_id == svc.id)
                             .order_by(jobs.Operation.created_at.desc()).limit(50)).all()
    op_ids = [o.id for o in ops]
    trail = audit_trail(svc, op_ids)
    actors = {u.id: u.email for u in db.session.scalars(
        select(User).where(User.id.in_({a["actor_id"] for a in trail if a["actor_id"]} or {0})))}
    activity = db.session.scalars(select(ActivityEntry).where(ActivityEntry.service_id == svc.id)
                                  .order_by(ActivityEntry.created_at.desc(), ActivityEntry.id.desc())
                                  .limit(50)).all()
    notices = db.session.scalars(select(Notice).where(Notice.service_id == svc.id)
                                 .order_by(Notice.id.desc()).limit(50)).all()
    allowed = svc.actions_for(staff=True)
    power = None
    if allowed & power_mod.POWER_ACTIONS and (svc.infra_ref or svc.kind == "dedicated"):
        power = power_mod.power_of(svc)  # the panel's rule: Start only when stopped, Stop/Restart when running
        allowed = allowed - (power_mod.POWER_ACTIONS - power_mod.power_actions(power))
        svc = _service(uuid)
    actions = [(a, label) for a, label in STAFF_ACTIONS if a in allowed and current_user.can(staff_permission(a))]
    forced = [(a, label, what) for a, label, what in force.FORCE_ACTIONS
              if a in allowed and current_user.can("services.force")]
    can_move = "move" in allowed and current_user.can("services.move") and svc.kind == "vps"
    return render_template("staff/services/detail.html", service=svc, ops=ops, trail=trail, actors=actors,
                           activity=activity, notices=notices, reservation=db.session.get(NodeReservation, svc.id),
                           actions=actions, forced=forced, power=power,
                           targets=move.candidates(svc) if can_move else None, request_id=new_uuid())


def _refuse(uuid, message: str):
    db.session.rollback()
    flash(message, "error")
    return redirect(url_for(".detail", uuid=uuid))


@bp.post("/<uuid>/action/<action>")
@staff_required("services.view")
def action(uuid, action):
    """The everyday staff actions; each needs its own permission (``actions.staff_permission``: power actions
    ``services.power``, the others ``services.manage``); force actions and moves have their own routes."""
    if action in force.NAMES or action == "move" or not current_user.can(staff_permission(action)):
        abort(404)
    svc = _service(uuid)
    params = {"reason": (request.form.get("reason") or "")[:200]}
    if action == "cancel":
        params["when"] = "now"
    if action in power_mod.POWER_ACTIONS and action in svc.actions_for(staff=True):
        why = power_mod.refusal(action, power_mod.power_of(svc))
        if why:
            return _refuse(uuid, why)
        svc = _service(uuid)
        power_mod.mark_stale(svc)
    try:
        from hostbay.core.confirm import require_confirmation

        require_confirmation(svc, action, request.form.get("confirm_hostname"), params)
        request_action(svc, action, current_user, **params)
        db.session.commit()
        flash(f"{action.title()}: done or queued.", "info")
    except UserError as exc:
        return _refuse(uuid, str(exc))
    return redirect(url_for(".detail", uuid=uuid))


@bp.post("/<uuid>/force/<action>")
@staff_required("services.force")
def force_action(uuid, action):
    """A force action (core/force.py), confirmed with the hostname typed in."""
    if action not in force.NAMES:
        abort(404)
    svc = _service(uuid)
    try:
        from hostbay.core.confirm import require_confirmation

        require_confirmation(svc, action, request.form.get("confirm_hostname"))
        op = force.request_force(svc, action, current_user, reason=request.form.get("reason") or "",
                                 request_id=request.form.get("request_id"))
        db.session.commit()
    except UserError as exc:
        return _refuse(uuid, str(exc))
    flash(f"{force.LABELS[action]}: {'queued' if op is not None and op.state == jobs.QUEUED else 'done'}.", "info")
    return redirect(url_for(".detail", uuid=uuid))


@bp.post("/<uuid>/move")
@staff_required("services.move")
def move_service(uuid):
    """Move the service to another node of its driver (core/move.py), confirmed with the hostname typed in."""
    svc = _service(uuid)
    node_id = request.form.get("node", type=int)
    node = db.session.get(Node, node_id) if node_id else None
    try:
        from hostbay.core.confirm import require_confirmation

        require_confirmation(svc, "move", request.form.get("confirm_hostname"))
        move.request_move(svc, node, current_user, reason=request.form.get("reason") or "",
                          request_id=request.form.get("request_id"))
        db.session.commit()
    except UserError as exc:
        return _refuse(uuid, str(exc))
    flash(f"{svc.hostname} is being moved to {node.name}.", "info")
    return redirect(url_for(".detail", uuid=uuid))


@bp.post("/<uuid>/operations/<op_id>/retry")
@staff_required("services.operations")
def retry(uuid, op_id):
    svc = _service(uuid)
    op = db.session.get(jobs.Operation, op_id)
    if op is None or op.service_id != svc.id:
        abort(404)
    try:
        jobs.retry(op, actor=current_user)
        audit("service.operation_retry", "service", svc.uuid, actor=current_user,
              after={"operation": op.id, "kind": op.kind})
        db.session.commit()
        flash("The operation runs again.", "info")
    except HostbayError as exc:
        db.session.rollback()
        flash(str(exc), "error")
    return redirect(url_for(".detail", uuid=uuid))
