"""Staff actions on the status page. Each flushes in the caller's transaction (the request commits), writes an
audit entry and invalidates the cached public pages."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from hostbay.core import clock
from hostbay.core.activity import audit
from hostbay.core.db import db
from hostbay.core.errors import UserError

from .models import (COMPONENT_KINDS, COMPONENT_STATUSES, IMPACTS, INCIDENT_STATUSES, MAINT_COMPLETED, PROBE_KINDS,
                     Component, Incident, IncidentUpdate, Maintenance, MaintenanceUpdate, Probe)
from .status import bump


def _components(ids) -> list[Component]:
    ids = {int(i) for i in ids or ()}
    return list(db.session.scalars(select(Component).where(Component.id.in_(ids)))) if ids else []


def _services(uuids) -> list:
    from hostbay.core.services import Service

    uuids = {u.strip() for u in uuids or () if u and u.strip()}
    if not uuids:
        return []
    found = list(db.session.scalars(select(Service).where(Service.uuid.in_(uuids))))
    if len(found) != len(uuids):
        raise UserError("Unknown service reference: " + ", ".join(sorted(uuids - {s.uuid for s in found})))
    return found


def open_incident(*, name: str, impact: str, component_status: str, component_ids=(), service_uuids=(),
                  body: str, status: str = "investigating", actor=None, started_at: datetime | None = None) -> Incident:
    name = (name or "").strip()
    if not name:
        raise UserError("An incident needs a title.")
    if impact not in IMPACTS or component_status not in COMPONENT_STATUSES or status not in INCIDENT_STATUSES:
        raise UserError("Choose an impact, a component status and an incident status from the lists.")
    now = clock.now()
    inc = Incident(name=name[:200], impact=impact, component_status=component_status, status=status,
                   started_at=started_at or now, created_at=now, updated_at=now)
    inc.components = _components(component_ids)
    inc.services = _services(service_uuids)
    if not inc.components and not inc.services:
        raise UserError("Name at least one affected component or service.")
    inc.updates.append(IncidentUpdate(status=status, body=(body or "").strip(), created_at=now))
    if status == "monitoring":
        inc.monitoring_at = now
    if status == "resolved":
        inc.resolved_at = now
    db.session.add(inc)
    db.session.flush()
    audit("status.incident.open", "status_incident", inc.uuid, actor=actor, detail=name[:200])
    bump()
    return inc


def add_update(inc: Incident, *, status: str, body: str, actor=None, impact: str | None = None,
               component_status: str | None = None) -> IncidentUpdate:
    if status not in INCIDENT_STATUSES:
        raise UserError("Choose a status from the list.")
    if not (body or "").strip():
        raise UserError("Write what changed.")
    now = clock.now()
    upd = IncidentUpdate(incident_id=inc.id, status=status, body=body.strip(), created_at=now)
    inc.updates.append(upd)
    inc.status, inc.updated_at = status, now
    if impact in IMPACTS:
        inc.impact = impact
    if component_status in COMPONENT_STATUSES:
        inc.component_status = component_status
    if status == "monitoring" and inc.monitoring_at is None:
        inc.monitoring_at = now
    if status == "resolved":
        inc.resolved_at = now
    elif inc.resolved_at is not None:
        inc.resolved_at = None  # reopened
    db.session.flush()
    audit("status.incident.update", "status_incident", inc.uuid, actor=actor, detail=status)
    bump()
    return upd


def schedule_maintenance(*, name: str, body: str, scheduled_for: datetime, scheduled_until: datetime,
                         component_ids=(), notify: bool = False, notice_hours: int = 48, verify_minutes: int = 0,
                         actor=None) -> Maintenance:
    name = (name or "").strip()
    if not name:
        raise UserError("A maintenance window needs a title.")
    if scheduled_until <= scheduled_for:
        raise UserError("The window must end after it starts.")
    comps = _components(component_ids)
    if not comps:
        raise UserError("Name at least one affected component.")
    now = clock.now()
    m = Maintenance(name=name[:200], body=(body or "").strip(), scheduled_for=scheduled_for,
                    scheduled_until=scheduled_until, notify=bool(notify), notice_hours=max(0, int(notice_hours)),
                    verify_minutes=max(0, int(verify_minutes)), created_at=now, updated_at=now)
    m.components = comps
    m.updates.append(MaintenanceUpdate(status="scheduled", body=m.body or "Maintenance scheduled.", created_at=now))
    db.session.add(m)
    db.session.flush()
    audit("status.maintenance.schedule", "status_maintenance", m.uuid, actor=actor, detail=name[:200])
    bump()
    return m


def complete_maintenance(m: Maintenance, actor=None, body: str = "") -> None:
    """Staff end a window early; otherwise the clock ends it."""
    if m.status == MAINT_COMPLETED:
        return
    now = clock.now()
    m.completed_at, m.status, m.updated_at = now, MAINT_COMPLETED, now
    if m.started_at is None:
        m.started_at = min(m.scheduled_for, now)
    m.updates.append(MaintenanceUpdate(status=MAINT_COMPLETED, body=body.strip() or "The maintenance is complete.",
                                       created_at=now))
    db.session.flush()
    audit("status.maintenance.complete", "status_maintenance", m.uuid, actor=actor)
    bump()


def save_component(c: Component | None, *, name: str, group_name: str = "", description: str = "",
                   kind: str = "other", location: str | None = None, node_id: int | None = None,
                   position: int = 0, actor=None) -> Component:
    if not (name or "").strip():
        raise UserError("A component needs a public name.")
    if kind not in COMPONENT_KINDS:
        raise UserError("Choose a kind from the list.")
    if c is None:
        c = Component()
        db.session.add(c)
    c.name, c.group_name, c.description = name.strip()[:120], (group_name or "").strip()[:120], \
        (description or "").strip()[:500]
    c.kind, c.location, c.node_id, c.position = kind, (location or None), (node_id or None), int(position or 0)
    c.updated_at = clock.now()
    db.session.flush()
    audit("status.component.save", "status_component", c.uuid, actor=actor)
    bump()
    return c


def set_override(c: Component, status: str | None, actor=None) -> None:
    if status and status not in COMPONENT_STATUSES:
        raise UserError("Choose a status from the list.")
    c.override, c.updated_at = status or None, clock.now()
    db.session.flush()
    audit("status.component.override", "status_component", c.uuid, actor=actor, detail=status or "derived")
    bump()


def save_probe(p: Probe | None, *, name: str, component_id: int, kind: str, host: str = "", port=None, url: str = "",
               expected_status: int = 200, interval_seconds: int = 60, timeout_seconds: float = 5.0,
               degraded_ms: int = 1000, enabled: bool = True, actor=None) -> Probe:
    from .probes import icmp_available

    if kind not in PROBE_KINDS:
        raise UserError("Choose a probe kind from the list.")
    if kind == "icmp" and not icmp_available():
        raise UserError("ICMP probes are not possible here: this process may not open ICMP sockets "
                        "(see net.ipv4.ping_group_range).")
    if kind == "http" and not (url or "").startswith(("http://", "https://")):
        raise UserError("An HTTP probe needs an http:// or https:// address.")
    if kind == "tcp" and (not host or not port or not 0 < int(port) < 65536):
        raise UserError("A TCP probe needs a host and a port.")
    if kind == "icmp" and not host:
        raise UserError("An ICMP probe needs a host.")
    if db.session.get(Component, int(component_id)) is None:
        raise UserError("Choose a component.")
    if not 10 <= int(interval_seconds) <= 86400 or not 0.1 <= float(timeout_seconds) <= 60:
        raise UserError("The interval is 10 s to 1 day, the timeout 0.1 to 60 s.")
    if p is None:
        p = Probe()
        db.session.add(p)
    p.name, p.component_id, p.kind = (name or "").strip()[:120] or kind, int(component_id), kind
    p.host, p.port, p.url = (host or "").strip(), int(port) if port else None, (url or "").strip()
    p.expected_status, p.interval_seconds = int(expected_status or 200), int(interval_seconds)
    p.timeout_seconds, p.degraded_ms, p.enabled = float(timeout_seconds), int(degraded_ms), bool(enabled)
    db.session.flush()
    audit("status.probe.save", "status_probe", p.uuid, actor=actor)
    bump()
    return p
