"""Staff pages for nodes (the hosts that run virtual servers): list, add, change settings and "Test connection".
Every add and change runs the driver's ``validate()`` and shows its message; node settings are administrators'
(they hold host credentials)."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select

from hostbay.core.activity import audit
from hostbay.core.catalog import Node
from hostbay.core.connection_test import test_connection
from hostbay.core.db import db
from hostbay.core.errors import SettingsError, UserError

from .staff import staff_required

bp = Blueprint("staff_nodes", __name__, url_prefix="/staff/nodes")


def _virt_drivers() -> dict:
    return current_app.extensions["hostbay"].drivers.get("virt", {})


def _masked(cls, settings: dict) -> dict:
    return {s.key: ("***" if s.type == "secret" and settings.get(s.key) else settings.get(s.key)) for s in cls.settings}


def _settings_from_form(cls, old: dict | None = None) -> dict:
    raw = {}
    for s in cls.settings:
        value = request.form.get(f"setting_{s.key}")
        if s.type == "secret" and not value and old:
            value = old.get(s.key)  # blank keeps the stored secret
        raw[s.key] = value
    return cls.clean_settings(raw)


def _int(name: str) -> int:
    try:
        value = int(request.form.get(name) or 0)
    except ValueError:
        raise UserError(f"{name.replace('_', ' ').capitalize()} must be a whole number.") from None
    if value < 0:
        raise UserError(f"{name.replace('_', ' ').capitalize()} cannot be negative.")
    return value


def _report(node: Node, what: str) -> None:
    cls = _virt_drivers().get(node.driver)
    if cls is None:
        flash(f"{node.name} {what}, but its driver {node.driver!r} is not loaded.", "error")
        return
    ok, message = test_connection(cls(node.settings or {}))
    flash(f"{node.name} {what}. {message}", "info" if ok else "error")


@bp.get("/")
@staff_required("plugins.nodes")
def index():
    nodes = db.session.scalars(select(Node).order_by(Node.name)).all()
    return render_template("staff/nodes/index.html", nodes=nodes, drivers=_virt_drivers())


@bp.post("/")
@staff_required("plugins.nodes")
def add():
    cls = _virt_drivers().get(request.form.get("driver", ""))
    try:
        if cls is None:
            raise UserError("Choose a virtualization driver.")
        name = (request.form.get("name") or "").strip()
        if not name or len(name) > 64:
            raise UserError("Give the node a name of at most 64 characters.")
        if db.session.scalar(select(Node.id).filter_by(name=name)):
            raise UserError(f"A node named {name} exists already.")
        settings = _settings_from_form(cls)
        node = Node(name=name, driver=cls.name, settings=settings, location=request.form.get("location") or "default",
                    vcpus=_int("vcpus"), memory_mib=_int("memory_mib"), disk_gib=_int("disk_gib"),
                    enabled=bool(request.form.get("enabled")))
        db.session.add(node)
        db.session.flush()
        audit("node.create", "node", node.id, actor=current_user,
              after={"name": name, "driver": cls.name, "settings": _masked(cls, settings)})
        db.session.commit()
    except (SettingsError, UserError) as exc:
        db.session.rollback()
        flash(str(exc), "error")
        return redirect(url_for(".index"))
    _report(node, "was added")
    return redirect(url_for(".edit", node_id=node.id))


@bp.route("/<int:node_id>", methods=["GET", "POST"])
@staff_required("plugins.nodes")
def edit(node_id: int):
    node = db.session.get(Node, node_id) or abort(404)
    cls = _virt_drivers().get(node.driver)
    if request.method == "POST":
        if cls is None:
            abort(404)
        try:
            old = dict(node.settings or {})
            node.settings = _settings_from_form(cls, old)
            node.enabled = bool(request.form.get("enabled"))
            audit("node.settings", "node", node.id, actor=current_user, before={"settings": _masked(cls, old)},
                  after={"settings": _masked(cls, node.settings), "enabled": node.enabled})
            db.session.commit()
        except SettingsError as exc:
            db.session.rollback()
            flash(str(exc), "error")
            return redirect(url_for(".edit", node_id=node.id))
        _report(node, "was saved")
        return redirect(url_for(".edit", node_id=node.id))
    shown = _masked(cls, node.settings or {}) if cls else {}
    from hostbay.core.admin import node_use
    from hostbay.core.services import Service

    services = db.session.scalars(select(Service).where(Service.node_id == node.id)
                                  .order_by(Service.created_at.desc()).limit(500)).all()
    return render_template("staff/nodes/edit.html", node=node, cls=cls, shown=shown, use=node_use(node),
                           services=services)


@bp.post("/<int:node_id>/test")
@staff_required("plugins.nodes")
def test(node_id: int):
    node = db.session.get(Node, node_id) or abort(404)
    _report(node, "was tested")
    return redirect(url_for(".edit", node_id=node.id))
