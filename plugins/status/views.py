"""Public surfaces (no login): /status, incident and maintenance pages, history, the Atom feed and the
Statuspage-shaped JSON. Every response goes through the cache (see cache.py)."""

from __future__ import annotations

import json

from xml.sax.saxutils import escape

from flask import Blueprint, abort, render_template, request
from sqlalchemy import func, select

from hostbay.core import clock
from hostbay.core.db import db

from . import cache
from .api import DOCUMENTS, Snapshot, _base, ts
from .models import COMPONENT_LABELS, MAINT_COMPLETED, Component, Incident, Maintenance
from .status import RANGES, clock_status, latency_series

bp = Blueprint("status", __name__, url_prefix="/status", template_folder="templates", static_folder="static",
               static_url_path="/static")

HISTORY_PAGE = 20


def _ctx(snap: Snapshot) -> dict:
    return {"snap": snap, "labels": COMPONENT_LABELS, "clock_status": clock_status}


@bp.get("")
def index():
    def build():
        snap = Snapshot()
        return render_template("status/index.html", **_ctx(snap))
    return cache.cached(build)


@bp.get("/incidents/<uuid>")
def incident(uuid):
    def build():
        inc = db.session.scalar(select(Incident).filter_by(uuid=uuid))
        if inc is None:
            abort(404)
        snap = Snapshot()
        return render_template("status/incident.html", inc=inc, **_ctx(snap))
    return cache.cached(build)


@bp.get("/maintenance/<uuid>")
def maintenance(uuid):
    def build():
        m = db.session.scalar(select(Maintenance).filter_by(uuid=uuid))
        if m is None:
            abort(404)
        snap = Snapshot()
        status = clock_status(m, snap.now) if m.status != MAINT_COMPLETED else MAINT_COMPLETED
        return render_template("status/maintenance.html", m=m, status=status, **_ctx(snap))
    return cache.cached(build)


@bp.get("/history")
def history():
    page = max(1, request.args.get("page", 1, type=int) or 1)

    def build():
        total = db.session.scalar(select(func.count(Incident.id))) or 0
        incidents = db.session.scalars(select(Incident).order_by(Incident.started_at.desc(), Incident.id.desc())
                                       .offset((page - 1) * HISTORY_PAGE).limit(HISTORY_PAGE)).all()
        maints = db.session.scalars(select(Maintenance).order_by(Maintenance.scheduled_for.desc())
                                    .limit(HISTORY_PAGE)).all() if page == 1 else []
        return render_template("status/history.html", incidents=incidents, maintenances=maints, page=page,
                               more=total > page * HISTORY_PAGE, now=clock.now(), clock_status=clock_status)
    return cache.cached(build)


@bp.get("/history.atom")
def feed():
    def build():
        incidents = db.session.scalars(select(Incident).order_by(Incident.updated_at.desc()).limit(50)).all()
        maints = db.session.scalars(select(Maintenance).order_by(Maintenance.updated_at.desc()).limit(50)).all()
        entries = []
        for inc in incidents:
            entries.append((inc.updated_at, f"urn:uuid:{inc.uuid}", inc.name, f"/status/incidents/{inc.uuid}",
                            inc.started_at, inc.updates))
        for m in maints:
            entries.append((m.updated_at, f"urn:uuid:{m.uuid}", f"Maintenance: {m.name}",
                            f"/status/maintenance/{m.uuid}", m.created_at, m.updates))
        entries.sort(key=lambda e: e[0], reverse=True)
        base = _base()
        updated = entries[0][0] if entries else clock.now()
        out = ['<?xml version="1.0" encoding="UTF-8"?>', '<feed xmlns="http://www.w3.org/2005/Atom" xml:lang="en">',
               f"<id>{escape(base)}/status/history.atom</id>", "<title>Status history</title>",
               f'<link rel="alternate" type="text/html" href="{escape(base)}/status"/>',
               f'<link rel="self" type="application/atom+xml" href="{escape(base)}/status/history.atom"/>',
               f"<updated>{ts(updated)[:19]}Z</updated>"]
        for upd_at, ident, title, path, published, updates in entries[:50]:
            body = "\n".join(f"{u.created_at:%Y-%m-%d %H:%M} UTC, {u.status.replace('_', ' ')}: {u.body}"
                             for u in updates)
            out += ["<entry>", f"<id>{escape(ident)}</id>", f"<title>{escape(title)}</title>",
                    f"<published>{ts(published)[:19]}Z</published>", f"<updated>{ts(upd_at)[:19]}Z</updated>",
                    f'<link rel="alternate" type="text/html" href="{escape(base + path)}"/>',
                    f'<content type="text">{escape(body)}</content>', "</entry>"]
        out.append("</feed>")
        return "\n".join(out) + "\n"
    return cache.cached(build, mimetype="application/atom+xml; charset=utf-8")


@bp.get("/api/v2/<path:name>.json")
def api(name):
    if name not in DOCUMENTS:
        abort(404)
    return cache.cached(lambda: json.dumps(Snapshot().document(name), separators=(",", ":")),
                        mimetype="application/json")


@bp.get("/api/latency/<uuid>.json")
def latency(uuid):
    rng = request.args.get("range", "24h")
    if rng not in RANGES:
        abort(404)

    def build():
        cid = db.session.scalar(select(Component.id).filter_by(uuid=uuid))
        if cid is None:
            abort(404)
        return json.dumps(latency_series(cid, rng), separators=(",", ":"))
    return cache.cached(build, mimetype="application/json")


