"""Staff network pages: pools with usage, who holds each address, reserve/assign/move/release, the DNS backend,
and the reverse-DNS approval queue."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select

from hostbay.core import ipam, rdns
from hostbay.core.activity import audit
from hostbay.core.catalog import Node
from hostbay.core.db import db
from hostbay.core.errors import SettingsError, UserError
from hostbay.core.ipam import IpAddress, IpPool

from .staff import staff_required

bp = Blueprint("staff_network", __name__, url_prefix="/staff/network")
PAGE = 256


def _lines(raw: str) -> list[str]:
    return [x.strip() for x in (raw or "").replace(",", "\n").splitlines() if x.strip()]


def _int_or_none(raw: str | None):
    raw = (raw or "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise UserError(f"“{raw}” is not a whole number.") from None


@bp.get("/")
@staff_required("network.view")
def pools():
    rows = db.session.scalars(select(IpPool).order_by(IpPool.version, IpPool.name)).all()
    nodes = db.session.scalars(select(Node).order_by(Node.name)).all()
    backends = db.session.scalars(select(rdns.DnsBackendConfig).order_by(rdns.DnsBackendConfig.priority,
                                                                         rdns.DnsBackendConfig.id)).all()
    dns_drivers = current_app.extensions["hostbay"].drivers.get("dns", {})
    return render_template("staff/network/pools.html", pools=[(p, ipam.pool_usage(p)) for p in rows], nodes=nodes,
                           policies=ipam.RDNS_POLICY_LABELS, backends=backends, dns_drivers=dns_drivers,
                           form=request.args)


@bp.post("/pools")
@staff_required("network.manage")
def create_pool():
    f = request.form
    try:
        pool = ipam.create_pool(name=f.get("name", ""), cidr=f.get("cidr", ""), gateway=f.get("gateway") or None,
                                prefix=_int_or_none(f.get("prefix")), nameservers=_lines(f.get("nameservers", "")),
                                reserved=_lines(f.get("reserved", "")), location=f.get("location") or None,
                                node_ids=[int(x) for x in f.getlist("node_ids") if x.isdigit()],
                                rdns_policy=f.get("rdns_policy", "immediate"),
                                cooldown_hours=_int_or_none(f.get("cooldown_hours")), actor=current_user)
        db.session.commit()
    except UserError as exc:
        db.session.rollback()
        flash(str(exc), "error")
        return redirect(url_for(".pools"))
    flash(f"Pool {pool.name} ({pool.cidr}) created.", "info")
    return redirect(url_for(".pool", uuid=pool.uuid))


def _pool(uuid: str) -> IpPool:
    pool = db.session.scalar(select(IpPool).where(IpPool.uuid == uuid))
    if pool is None:
        abort(404)
    return pool


@bp.get("/pools/<uuid>")
@staff_required("network.view")
def pool(uuid: str):
    p = _pool(uuid)
    state = request.args.get("state", "")
    page = max(1, request.args.get("page", 1, type=int))
    q = select(IpAddress).where(IpAddress.pool_id == p.id)
    if state in (ipam.FREE, ipam.ASSIGNED, ipam.RESERVED, ipam.RELEASED):
        q = q.where(IpAddress.state == state)
    needle = request.args.get("q", "").strip()
    if needle:
        q = q.where(IpAddress.address.startswith(needle))
    rows = db.session.scalars(q.order_by(IpAddress.ordinal).offset((page - 1) * PAGE).limit(PAGE + 1)).all()
    nodes = db.session.scalars(select(Node).order_by(Node.name)).all()
    return render_template("staff/network/pool.html", pool=p, usage=ipam.pool_usage(p), rows=rows[:PAGE],
                           more=len(rows) > PAGE, page=page, state=state, needle=needle, nodes=nodes,
                           policies=ipam.RDNS_POLICY_LABELS)


@bp.post("/pools/<uuid>/settings")
@staff_required("network.manage")
def pool_settings(uuid: str):
    p = _pool(uuid)
    f = request.form
    try:
        ipam.update_pool(p, actor=current_user, rdns_policy=f.get("rdns_policy", p.rdns_policy),
                         nameservers=_lines(f.get("nameservers", "")), location=f.get("location"),
                         cooldown_hours=_int_or_none(f.get("cooldown_hours")), enabled=bool(f.get("enabled")),
                         node_ids=[int(x) for x in f.getlist("node_ids") if x.isdigit()])
        db.session.commit()
        flash("Pool settings saved.", "info")
    except UserError as exc:
        db.session.rollback()
        flash(str(exc), "error")
    return redirect(url_for(".pool", uuid=p.uuid))


@bp.post("/addresses")
@staff_required("network.manage")
def address_action():
    f = request.form
    action, address = f.get("action", ""), f.get("address", "")
    try:
        if action == "reserve":
            row = ipam.reserve(address, f.get("note", ""), current_user)
        elif action == "assign":
            row = ipam.assign(address, f.get("service", ""), current_user, force_cooldown=bool(f.get("force")))
        elif action == "move":
            row = ipam.move(address, f.get("service", ""), current_user)
        elif action == "release":
            row = ipam.release(address, current_user, skip_cooldown=bool(f.get("skip_cooldown")))
        else:
            raise UserError("Unknown action.")
        db.session.commit()  # the network filter and PTR jobs are dispatched after this commit
        flash(f"{row.address}: {action} done.", "info")
    except UserError as exc:
        db.session.rollback()
        flash(str(exc), "error")
        row = None
    back = request.form.get("back", "")
    if back.startswith("/staff/network/") and not back.startswith("//"):
        return redirect(back)
    return redirect(url_for(".pool", uuid=row.pool.uuid) if row else url_for(".pools"))


@bp.post("/dns-backends")
@staff_required("network.manage")
def add_dns_backend():
    f = request.form
    registry = current_app.extensions["hostbay"]
    name = f.get("driver", "")
    try:
        cls = registry.drivers.get("dns", {}).get(name)
        if cls is None:
            raise UserError("Choose a DNS backend.")
        settings = cls.clean_settings({s.key: f.get(f"setting_{s.key}") for s in cls.settings})
        cfg = rdns.DnsBackendConfig(driver=name, label=cls.label, settings=settings,
                                    priority=_int_or_none(f.get("priority")) or 0)
        db.session.add(cfg)
        db.session.flush()
        audit("dns_backend.create", "dns_backend", cfg.id, actor=current_user,
              after={"driver": name, "settings": {s.key: ("***" if s.type == "secret" else settings.get(s.key))
                                                  for s in cls.settings}})
        db.session.commit()
        from hostbay.core.connection_test import test_connection

        ok, message = test_connection(registry.driver("dns", name, settings))
        flash(f"{cls.label} added. {message}", "info" if ok else "error")
    except SettingsError as exc:
        db.session.rollback()
        flash(str(exc), "error")
    except UserError as exc:
        db.session.rollback()
        flash(str(exc), "error")
    return redirect(url_for(".pools"))


@bp.post("/dns-backends/<int:backend_id>/toggle")
@staff_required("network.manage")
def toggle_dns_backend(backend_id: int):
    cfg = db.session.get(rdns.DnsBackendConfig, backend_id) or abort(404)
    cfg.enabled = not cfg.enabled
    audit("dns_backend.toggle", "dns_backend", cfg.id, actor=current_user, after={"enabled": cfg.enabled})
    db.session.commit()
    if cfg.enabled:  # turned on: test it, as when it was added
        from hostbay.core.connection_test import test_connection

        cls = current_app.extensions["hostbay"].drivers.get("dns", {}).get(cfg.driver)
        if cls is not None:
            ok, message = test_connection(cls(cfg.settings or {}))
            flash(f"{cfg.label} enabled. {message}", "info" if ok else "error")
    return redirect(url_for(".pools"))


@bp.get("/rdns")
@staff_required("approvals.rdns")
def rdns_queue():
    recent = db.session.scalars(select(rdns.RdnsRequest).where(rdns.RdnsRequest.state != rdns.PENDING)
                                .order_by(rdns.RdnsRequest.id.desc()).limit(50)).all()
    return render_template("staff/network/rdns.html", queue=rdns.pending_queue(), recent=recent)


@bp.post("/rdns/<uuid>/<decision>")
@staff_required("approvals.rdns")
def rdns_decide(uuid: str, decision: str):
    note = request.form.get("note", "")
    try:
        if decision == "approve":
            req = rdns.approve(uuid, current_user, note)
            db.session.commit()  # the apply job is dispatched after this commit
            flash(f"Approved: {req.address.address} → {req.hostname}.", "info")
        elif decision == "reject":
            req = rdns.reject(uuid, current_user, note)
            db.session.commit()
            flash(f"Rejected: {req.address.address} → {req.hostname}.", "info")
        else:
            abort(404)
    except UserError as exc:
        db.session.rollback()
        flash(str(exc), "error")
    return redirect(url_for(".rdns_queue"))
