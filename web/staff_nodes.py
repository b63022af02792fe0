"""Staff pages for nodes (the hosts that run virtual servers): list, add, change settings and "Test connection".
Every add and change runs the driver's ``validate()`` and shows its message; node settings are administrators'
(they hold host credentials)."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select

from hostbay.core import admin
from hostbay.core.catalog import Node
from hostbay.core.connection_test import test_connection
from hostbay.core.db import db
from hostbay.core.errors import FieldErrorCollector, FieldErrors

from .staff import staff_required

bp = Blueprint("staff_nodes", __name__, url_prefix="/staff/nodes")


def _virt_drivers() -> dict:
    return current_app.extensions["hostbay"].drivers.get("virt", {})




def _raw_settings(cls, old: dict | None = None) -> dict:
    raw = {}
    for s in cls.settings:
        value = request.form.get(f"setting_{s.key}")
        if s.type == "secret" and not value and old:
            value = old.get(s.key)  # blank keeps the stored secret
        raw[s.key] = value
    return raw


def _form_errors(exc: FieldErrors) -> dict:
    """The domain's field names as the form's: ``settings.<key>`` is the control ``setting_<key>``."""
    return {(f"setting_{k[len('settings.'):]}" if k.startswith("settings.") else k): m for k, m in exc.errors.items()}


def _int(name: str, label: str, errors: FieldErrorCollector) -> int | None:
    try:
        value = int(request.form.get(name) or 0)
    except ValueError:
        errors.add(name, f"{label} must be a whole number.")
        return None
    if value < 0:
        errors.add(name, f"{label} cannot be negative.")
        return None
    return value


def _report(node: Node, what: str) -> None:
    cls = _virt_drivers().get(node.driver)
    if cls is None:
        flash(f"{node.name} {what}, but its driver {node.driver!r} is not loaded.", "error")
        return
    ok, message = test_connection(cls(node.settings or {}))
    flash(f"{node.name} {what}. {message}", "info" if ok else "error")


def _index_page(errors: dict | None = None, driver: str | None = None):
    nodes = db.session.scalars(select(Node).order_by(Node.name)).all()
    return render_template("staff/nodes/index.html", nodes=nodes, drivers=_virt_drivers(), add_errors=errors or {},
                           add_driver=driver, form=request.form if errors else None), 422 if errors else 200


@bp.get("/")
@staff_required("plugins.nodes")
def index():
    return _index_page()


@bp.post("/")
@staff_required("plugins.nodes")
def add():
    driver = request.form.get("driver", "")
    cls = _virt_drivers().get(driver)
    if cls is None:
        flash("Choose a virtualization driver.", "error")
        return redirect(url_for(".index"))
    errors = FieldErrorCollector()
    values = {"name": request.form.get("name") or "", "location": request.form.get("location") or "default",
              "vcpus": _int("vcpus", "vCPUs", errors), "memory_mib": _int("memory_mib", "Memory", errors),
              "disk_gib": _int("disk_gib", "Disk", errors), "enabled": bool(request.form.get("enabled"))}
    try:
        node = admin.create_node(cls, values, _raw_settings(cls), current_user, known_errors=errors.errors)
    except FieldErrors as exc:
        db.session.rollback()
        return _index_page(_form_errors(exc), cls.name)
    db.session.commit()
    _report(node, "was added")
    return redirect(url_for(".edit", node_id=node.id))


@bp.route("/<int:node_id>", methods=["GET", "POST"])
@staff_required("plugins.nodes")
def edit(node_id: int):
    node = db.session.get(Node, node_id) or abort(404)
    cls = _virt_drivers().get(node.driver)
    errors = None
    if request.method == "POST":
        if cls is None:
            abort(404)
        old = dict(node.settings or {})
        found = FieldErrorCollector()
        values = {"location": request.form.get("location"), "enabled": bool(request.form.get("enabled")),
                  **{f: (_int(f, label, found) if f in request.form else None)
                     for f, label in (("vcpus", "vCPUs"), ("memory_mib", "Memory"), ("disk_gib", "Disk"))}}
        try:
            admin.update_node(node, cls, values, _raw_settings(cls, old), current_user, known_errors=found.errors)
        except FieldErrors as exc:
            db.session.rollback()
            errors = _form_errors(exc)
        else:
            db.session.commit()
            _report(node, "was saved")
            return redirect(url_for(".edit", node_id=node.id))
    shown = admin.masked_settings(cls, node.settings or {}) if cls else {}
    from hostbay.core.services import Service

    services = db.session.scalars(select(Service).where(Service.node_id == node.id)
                                  .order_by(Service.created_at.desc()).limit(500)).all()
    return render_template("staff/nodes/edit.html", node=node, cls=cls, shown=shown, use=admin.node_use(node),
                           services=services, errors=errors or {}, form=request.form if errors else None), \
        422 if errors else 200


@bp.post("/<int:node_id>/test")
@staff_required("plugins.nodes")
def test(node_id: int):
    node = db.session.get(Node, node_id) or abort(404)
    _report(node, "was tested")
    return redirect(url_for(".edit", node_id=node.id))
