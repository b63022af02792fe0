"""Incident and maintenance banners for the customers they concern (``hostbay_dashboard_notices``).

A customer sees an open incident when one of their services runs on a node or in a location an affected
component stands for, or is named in the incident itself; and a maintenance window from its notice lead time
until it ends. The banner carries the incident's public title, its public link and the customer's own service
names: never a node's name or any other infrastructure identifier.

Cost per dashboard view: one query for what is open (incidents and windows with the nodes, locations and services
they touch), and one over the customer's services only when something is open.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from hostbay.core import clock
from hostbay.core.db import db

from .models import (MAINT_COMPLETED, UNRESOLVED, Component, Incident, IncidentUpdate, Maintenance, incident_components,
                     incident_services, maintenance_components)

LEVEL = {"none": "info", "minor": "warning", "major": "danger", "critical": "danger"}


def _affecting() -> list[dict]:
    """Open incidents and current or near windows, each with the nodes, locations and services it touches: one
    query (a UNION of both), so a dashboard view costs the same whatever is open."""
    from sqlalchemy import cast, literal, null, union_all

    now = clock.now()
    latest = (select(IncidentUpdate.body).where(IncidentUpdate.incident_id == Incident.id)
              .order_by(IncidentUpdate.created_at.desc(), IncidentUpdate.id.desc()).limit(1).scalar_subquery())
    inc = (select(literal("incident").label("what"), Incident.id.label("id"), Incident.uuid, Incident.name,
                  Incident.impact, latest.label("body"), Component.kind, Component.node_id, Component.location,
                  incident_services.c.service_id,
                  # typed NULLs: the union's result types come from this first select (SQLite returns text otherwise)
                  cast(null(), Maintenance.scheduled_for.type).label("starts"),
                  cast(null(), Maintenance.scheduled_until.type).label("ends"),
                  cast(null(), Maintenance.verify_minutes.type).label("verify"),
                  cast(null(), Maintenance.completed_at.type).label("done"),
                  cast(null(), Maintenance.notice_hours.type).label("lead"))
           .select_from(Incident)
           .outerjoin(incident_components, incident_components.c.incident_id == Incident.id)
           .outerjoin(Component, Component.id == incident_components.c.component_id)
           .outerjoin(incident_services, incident_services.c.incident_id == Incident.id)
           .where(Incident.status.in_(UNRESOLVED)))
    mnt = (select(literal("maintenance"), Maintenance.id, Maintenance.uuid, Maintenance.name, literal("none"),
                  null(), Component.kind, Component.node_id, Component.location, null(), Maintenance.scheduled_for,
                  Maintenance.scheduled_until, Maintenance.verify_minutes, Maintenance.completed_at,
                  Maintenance.notice_hours)
           .select_from(Maintenance)
           .join(maintenance_components, maintenance_components.c.maintenance_id == Maintenance.id)
           .join(Component, Component.id == maintenance_components.c.component_id)
           .where(Maintenance.status != MAINT_COMPLETED, Maintenance.scheduled_until
                  >= now - timedelta(days=1)))
    items: dict[tuple, dict] = {}
    for r in db.session.execute(union_all(inc, mnt)).all():
        key = (r[0], r[1])
        item = items.get(key)
        if item is None:
            if r[0] == "incident":
                item = {"title": r.name, "level": LEVEL.get(r.impact, "warning"),
                        "url": f"/status/incidents/{r.uuid}", "text": (r.body or "")[:300]}
            else:
                starts, ends, verify, done = r[10], r[11], r[12] or 0, r[13]
                if done is not None and done <= now or now >= ends + timedelta(minutes=verify):
                    continue
                if now < starts - timedelta(hours=max(r[14] or 0, 1)):
                    continue  # announced on the dashboard from its notice lead time on
                when = f"{starts:%Y-%m-%d %H:%M}–{ends:%H:%M} UTC"
                item = {"title": f"Planned maintenance: {r.name}", "level": "info",
                        "url": f"/status/maintenance/{r.uuid}",
                        "text": ("In progress until " if now >= starts else "Scheduled for ") + when + "."}
            item.update(everyone=False, nodes=set(), locations=set(), services=set())
            items[key] = item
        if r.kind in ("panel", "api"):
            item["everyone"] = True
        if r.node_id:
            item["nodes"].add(r.node_id)
        if r.location:
            item["locations"].add(r.location)
        if r[9]:
            item["services"].add(r[9])
    order = {"danger": 0, "warning": 1, "info": 2}
    return sorted(items.values(), key=lambda i: order[i["level"]])


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
