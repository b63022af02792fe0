"""Staff pages of the status page (``/staff/status``): components and their override, incidents and their
timeline, maintenance windows, probes. Listed in the staff menu through ``hostbay_admin_menu``."""

from __future__ import annotations

from datetime import datetime

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select

from hostbay.core import clock
from hostbay.core.catalog import Node
from hostbay.core.db import db
from hostbay.core.errors import UserError
from hostbay.web.staff import staff_required

from . import incidents as actions
from .models import (COMPONENT_KINDS, COMPONENT_LABELS, COMPONENT_STATUSES, IMPACTS, INCIDENT_STATUSES, PROBE_KINDS,
                     UNRESOLVED, Component, Incident, Maintenance, Probe)
from .probes import icmp_available
from .status import clock_status, component_statuses

bp = Blueprint("status_staff", __name__, url_prefix="/staff/status", template_folder="templates")

PERMISSION = "status.manage"


def _dt(value: str) -> datetime:
    try:
        return datetime.fromisoformat((value or "").strip().replace(" ", "T")).replace(tzinfo=None, second=0,
                                                                                        microsecond=0)
    except ValueError:
        raise UserError("Give times as YYYY-MM-DD HH:MM (UTC).") from None


def _done(message: str, endpoint: str = "status_staff.index", **kw):
    db.session.commit()
    flash(message, "success")
    return redirect(url_for(endpoint, **kw))


def _handle(action, message, *, back: str = "status_staff.index", back_kw: dict | None = None, done=None,
            errors: tuple = (UserError,)):
    """The one form-handling step of these pages: run ``action()``; on a refusal (``errors``) roll back, show it
    and go ``back``; else commit and show ``message`` (a text, or a function of the action's result), then go to
    ``done(result)`` (an ``(endpoint, url arguments)`` pair) or the status home."""
    try:
        result = action()
    except errors as exc:
        db.session.rollback()
        flash(getattr(exc, "customer_message", None) or str(exc), "error")
        return redirect(url_for(back, **(back_kw or {})))
    endpoint, kw = done(result) if done else ("status_staff.index", {})
    return _done(message(result) if callable(message) else message, endpoint, **kw)


def _ctx() -> dict:
    return {"kinds": COMPONENT_KINDS, "statuses": COMPONENT_STATUSES, "labels": COMPONENT_LABELS,
            "impacts": IMPACTS, "incident_statuses": INCIDENT_STATUSES, "probe_kinds": PROBE_KINDS,
            "icmp": icmp_available(), "now": clock.now(), "clock_status": clock_status}


@bp.get("/")
@staff_required(PERMISSION)
def index():
    comps = db.session.scalars(select(Component).order_by(Component.position, Component.id)).all()
    return render_template(
        "status/staff/index.html", components=comps, derived=component_statuses(),
        open_incidents=db.session.scalars(select(Incident).where(Incident.status.in_(UNRESOLVED))
                                          .order_by(Incident.started_at.desc())).all(),
        past_incidents=db.session.scalars(select(Incident).where(Incident.status.not_in(UNRESOLVED))
                                          .order_by(Incident.started_at.desc()).limit(20)).all(),
        maintenances=db.session.scalars(select(Maintenance).order_by(Maintenance.scheduled_for.desc())
                                        .limit(30)).all(),
        probes=db.session.scalars(select(Probe).order_by(Probe.id)).all(),
        nodes=db.session.scalars(select(Node).order_by(Node.name)).all(),
        locations=sorted(set(db.session.scalars(select(Node.location)))), **_ctx())


@bp.post("/components")
@bp.post("/components/<int:cid>")
@staff_required(PERMISSION)
def save_component(cid=None):
    comp = db.session.get(Component, cid) if cid else None
    if cid and comp is None:
        abort(404)
    f = request.form
    return _handle(lambda: actions.save_component(
        comp, name=f.get("name", ""), group_name=f.get("group_name", ""), description=f.get("description", ""),
        kind=f.get("kind", "other"), location=f.get("location") or None, node_id=f.get("node_id", type=int),
        position=f.get("position", 0, type=int), actor=current_user), "Component saved.")


@bp.post("/components/<int:cid>/override")
@staff_required(PERMISSION)
def override(cid):
    comp = db.session.get(Component, cid) or abort(404)
    return _handle(lambda: actions.set_override(comp, request.form.get("status") or None, actor=current_user),
                   lambda _: "Status override saved." if comp.override else "The status is derived again.")


@bp.post("/incidents")
@staff_required(PERMISSION)
def open_incident():
    f = request.form
    return _handle(lambda: actions.open_incident(
        name=f.get("name", ""), impact=f.get("impact", "minor"),
        component_status=f.get("component_status", "partial_outage"),
        component_ids=f.getlist("components", type=int),
        service_uuids=(f.get("services") or "").replace(",", " ").split(),
        body=f.get("body", ""), status=f.get("status", "investigating"), actor=current_user),
        "Incident opened.", done=lambda inc: ("status_staff.incident", {"uuid": inc.uuid}))


@bp.get("/incidents/<uuid>")
@staff_required(PERMISSION)
def incident(uuid):
    inc = db.session.scalar(select(Incident).filter_by(uuid=uuid)) or abort(404)
    return render_template("status/staff/incident.html", inc=inc, **_ctx())


@bp.post("/incidents/<uuid>/updates")
@staff_required(PERMISSION)
def incident_update(uuid):
    inc = db.session.scalar(select(Incident).filter_by(uuid=uuid)) or abort(404)
    f = request.form
    here = ("status_staff.incident", {"uuid": uuid})
    return _handle(lambda: actions.add_update(
        inc, status=f.get("status", ""), body=f.get("body", ""), actor=current_user, impact=f.get("impact") or None,
        component_status=f.get("component_status") or None), "Update posted.", back=here[0], back_kw=here[1],
        done=lambda _: here)


@bp.post("/maintenance")
@staff_required(PERMISSION)
def schedule():
    f = request.form
    return _handle(lambda: actions.schedule_maintenance(
        name=f.get("name", ""), body=f.get("body", ""), scheduled_for=_dt(f.get("scheduled_for", "")),
        scheduled_until=_dt(f.get("scheduled_until", "")), component_ids=f.getlist("components", type=int),
        notify=bool(f.get("notify")), notice_hours=f.get("notice_hours", 48, type=int),
        verify_minutes=f.get("verify_minutes", 0, type=int), actor=current_user), "Maintenance scheduled.")


@bp.post("/maintenance/<uuid>/complete")
@staff_required(PERMISSION)
def complete(uuid):
    m = db.session.scalar(select(Maintenance).filter_by(uuid=uuid)) or abort(404)
    actions.complete_maintenance(m, actor=current_user, body=request.form.get("body", ""))
    return _done("Maintenance completed.")


@bp.post("/probes")
@bp.post("/probes/<int:pid>")
@staff_required(PERMISSION)
def save_probe(pid=None):
    probe = db.session.get(Probe, pid) if pid else None
    if pid and probe is None:
        abort(404)
    f = request.form
    return _handle(lambda: actions.save_probe(
        probe, name=f.get("name", ""), component_id=f.get("component_id", 0, type=int), kind=f.get("kind", ""),
        host=f.get("host", ""), port=f.get("port", type=int), url=f.get("url", ""),
        expected_status=f.get("expected_status", 200, type=int),
        interval_seconds=f.get("interval_seconds", 60, type=int),
        timeout_seconds=f.get("timeout_seconds", 5.0, type=float), degraded_ms=f.get("degraded_ms", 1000, type=int),
        enabled=bool(f.get("enabled", "1")), actor=current_user), "Probe saved.", errors=(UserError, ValueError))
