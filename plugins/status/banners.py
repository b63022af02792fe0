"""Incident and maintenance banners for the customers they concern (``hostbay_dashboard_notices``).

A customer sees an open incident when one of their services runs on a node or in a location an affected
component stands for, or is named in the incident itself; and a maintenance window from its notice lead time
until it ends. The banner carries the incident's public title, its public link and the customer's own service
names: never a node's name or any other infrastructure identifier.

Cost per dashboard view: one read of the cache version and one query over the customer's services; the list of
open incidents and windows with the nodes and locations they touch is cached per version.
"""

from __future__ import annotations

from datetime import timedelta

from flask import current_app
from sqlalchemy import select

from hostbay.core import clock
from hostbay.core.db import db

from .models import MAINT_COMPLETED, UNRESOLVED, Component, Incident, Maintenance, incident_services
from .cache import version as current_version
from .status import clock_status

LEVEL = {"none": "info", "minor": "warning", "major": "danger", "critical": "danger"}


def _affecting() -> list[dict]:
    """Open incidents and current or near windows, each with the nodes, locations and services it touches."""
    version = current_version()
    store = current_app.extensions.setdefault("hostbay.status.banners", {})
    now = clock.now()
    hit = store.get("v")
    if hit and hit[0] == version and hit[1] > now:
        return hit[2]
    comps = {c.id: c for c in db.session.scalars(select(Component))}
    out = []
    for inc in db.session.scalars(select(Incident).where(Incident.status.in_(UNRESOLVED))
                                  .order_by(Incident.started_at.desc())):
        ids = [c.id for c in inc.components]
        out.append({"kind": "incident", "title": inc.name, "level": LEVEL.get(inc.impact, "warning"),
                    "url": f"/status/incidents/{inc.uuid}", "text": _latest(inc.updates),
                    "everyone": any(comps[i].kind in ("panel", "api") for i in ids if i in comps),
                    "nodes": {comps[i].node_id for i in ids if i in comps and comps[i].node_id},
                    "locations": {comps[i].location for i in ids if i in comps and comps[i].location},
                    "services": set(db.session.scalars(select(incident_services.c.service_id)
                                                       .where(incident_services.c.incident_id == inc.id)))})
    for m in db.session.scalars(select(Maintenance).where(Maintenance.status != MAINT_COMPLETED)):
        status = clock_status(m, now)
        if status == MAINT_COMPLETED:
            continue
        if status == "scheduled" and m.scheduled_for - timedelta(hours=max(m.notice_hours, 1)) > now:
            continue  # announced on the dashboard from its notice lead time on
        ids = [c.id for c in m.components]
        when = f"{m.scheduled_for:%Y-%m-%d %H:%M}–{m.scheduled_until:%H:%M} UTC"
        out.append({"kind": "maintenance", "title": f"Planned maintenance: {m.name}", "level": "info",
                    "url": f"/status/maintenance/{m.uuid}",
                    "text": ("In progress until " if status != "scheduled" else "Scheduled for ") + when + ".",
                    "everyone": any(comps[i].kind in ("panel", "api") for i in ids if i in comps),
                    "nodes": {comps[i].node_id for i in ids if i in comps and comps[i].node_id},
                    "locations": {comps[i].location for i in ids if i in comps and comps[i].location},
                    "services": set()})
    # valid until the next clock-driven change could alter the list (at most a minute)
    store["v"] = (version, now + timedelta(seconds=60), out)
    return out


def _latest(updates) -> str:
    return updates[0].body[:300] if updates and updates[0].body else ""


def notices_for(user) -> list[dict]:
    if getattr(user, "is_staff", False):
        return []
    items = _affecting()
    if not items:
        return []
    from hostbay.core.catalog import Node
    from hostbay.core.services import HIDDEN_FROM_CUSTOMER, Service

    services = db.session.execute(
        select(Service.id, Service.uuid, Service.hostname, Service.node_id, Node.location)
        .outerjoin(Node, Node.id == Service.node_id)
        .where(Service.user_id == user.id, Service.state.not_in(HIDDEN_FROM_CUSTOMER))).all()
    out = []
    for item in items:
        hit = [s for s in services if item["everyone"] or s.id in item["services"] or
               (s.node_id is not None and s.node_id in item["nodes"]) or
               (s.location is not None and s.location in item["locations"])]
        if not hit:
            continue
        names = ", ".join(s.hostname for s in hit[:5]) + (" and more" if len(hit) > 5 else "")
        text = item["text"]
        if not item["everyone"]:
            text = (text + " " if text else "") + f"Your services concerned: {names}."
        out.append({"title": item["title"], "text": text, "level": item["level"], "url": item["url"],
                    "services": [s.uuid for s in hit]})
    return out
