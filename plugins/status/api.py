"""The public data of the status page in the shape of Statuspage's public API v2 (``/api/v2/summary.json`` and
friends: the same field names, so existing Statuspage tooling reads it), built once per cache version."""

from __future__ import annotations

import uuid as uuidlib
from datetime import datetime, timedelta
from functools import cached_property

from flask import current_app
from sqlalchemy import select

from hostbay.core import clock
from hostbay.core.db import db

from .models import MAINT_COMPLETED, UNRESOLVED, Component, Incident, Maintenance, Probe
from .settings import setting
from .status import (clock_status, component_statuses, component_uptime, components_in_windows, page_status,
                     worst)

GROUP_NS = uuidlib.UUID("7b0c1f52-3c51-4b8e-9c61-6f1f4c2d9a10")


def ts(value: datetime | None) -> str | None:
    return None if value is None else value.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _base() -> str:
    return current_app.config.get("HOSTBAY_BASE_URL", "http://127.0.0.1:5000").rstrip("/")


def page_id() -> str:
    return setting("HOSTBAY_STATUS_PAGE_ID")


def page_obj(updated_at: datetime) -> dict:
    return {"id": page_id(), "name": setting("HOSTBAY_STATUS_PAGE_NAME"),
            "url": _base() + "/status", "time_zone": "Etc/UTC", "updated_at": ts(updated_at)}


class Snapshot:
    """Everything the public surfaces show, each part read once and only when a page uses it."""

    def __init__(self, now: datetime | None = None):
        self.now = now or clock.now()

    @cached_property
    def components(self) -> list[Component]:
        return db.session.scalars(select(Component).order_by(Component.position, Component.id)).all()

    @cached_property
    def probes(self) -> list[tuple]:
        """(probe id, component id, enabled, last ok, fail streak, last latency, degraded threshold, ran)."""
        return db.session.execute(select(Probe.id, Probe.component_id, Probe.enabled, Probe.last_ok,
                                         Probe.fail_streak, Probe.last_latency_ms, Probe.degraded_ms,
                                         Probe.last_run_at.is_not(None))).all()

    @cached_property
    def probed(self) -> set[int]:
        return {p[1] for p in self.probes if p[2]}

    @cached_property
    def open_windows(self) -> list[Maintenance]:
        return db.session.scalars(select(Maintenance).where(Maintenance.status != MAINT_COMPLETED)
                                  .order_by(Maintenance.scheduled_for, Maintenance.id)).all()

    @cached_property
    def upcoming(self) -> list[Maintenance]:
        return [m for m in self.open_windows if clock_status(m, self.now) == "scheduled"]

    @cached_property
    def active(self) -> list[Maintenance]:
        return [m for m in self.open_windows if clock_status(m, self.now) in ("in_progress", "verifying")]

    @cached_property
    def open_incidents(self) -> list[Incident]:
        return db.session.scalars(select(Incident).where(Incident.status.in_(UNRESOLVED))
                                  .order_by(Incident.started_at.desc(), Incident.id.desc())).all()

    @cached_property
    def recent_incidents(self) -> list[Incident]:
        return db.session.scalars(select(Incident).order_by(Incident.started_at.desc(), Incident.id.desc())
                                  .limit(50)).all()

    @cached_property
    def recent_maintenances(self) -> list[Maintenance]:
        return db.session.scalars(select(Maintenance).order_by(Maintenance.scheduled_for.desc(),
                                                               Maintenance.id.desc()).limit(50)).all()

    @cached_property
    def statuses(self) -> dict[int, str]:
        return component_statuses(self.now, components=self.components, open_incidents=self.open_incidents,
                                  in_maintenance=components_in_windows(self.open_windows, self.now),
                                  probe_rows=[(p[1], p[3], p[4], p[5], p[6]) for p in self.probes if p[2] and p[7]])

    @cached_property
    def uptime(self) -> dict[int, float | None]:
        return component_uptime(self.now - timedelta(days=90), self.now, probes=[(p[0], p[1]) for p in self.probes])

    @cached_property
    def status(self) -> dict:
        return page_status(self.statuses, self.open_incidents, bool(self.active))

    @cached_property
    def updated_at(self) -> datetime:
        stamps = [c.updated_at for c in self.components] + [i.updated_at for i in self.recent_incidents[:1]] + \
                 [m.updated_at for m in self.open_windows] + [m.updated_at for m in self.recent_maintenances[:1]]
        return max(stamps) if stamps else self.now

    # -- groups ------------------------------------------------------------------------------------------------
    def groups(self) -> list[tuple[str, list[Component]]]:
        out: dict[str, list[Component]] = {}
        for c in self.components:
            out.setdefault(c.group_name or "", []).append(c)
        return list(out.items())

    def group_status(self, members) -> str:
        return worst(self.statuses.get(c.id) for c in members)

    # -- Statuspage shapes --------------------------------------------------------------------------------------
    def component_obj(self, c: Component, group_id: str | None) -> dict:
        return {"id": c.uuid, "name": c.name, "status": self.statuses.get(c.id, "operational"),
                "created_at": ts(c.created_at), "updated_at": ts(c.updated_at), "position": c.position,
                "description": c.description or None, "showcase": True, "start_date": ts(c.created_at)[:10],
                "group_id": group_id, "page_id": page_id(), "group": False, "only_show_if_degraded": False}

    def components_list(self) -> list[dict]:
        out = []
        for pos, (group, members) in enumerate(self.groups()):
            gid = str(uuidlib.uuid5(GROUP_NS, group)) if group else None
            if gid:
                first = min(m.created_at for m in members)
                out.append({"id": gid, "name": group, "status": self.group_status(members),
                            "created_at": ts(first), "updated_at": ts(max(m.updated_at for m in members)),
                            "position": pos, "description": None, "showcase": False, "start_date": None,
                            "group_id": None, "page_id": page_id(), "group": True, "only_show_if_degraded": False,
                            "components": [m.uuid for m in members]})
            out.extend(self.component_obj(m, gid) for m in members)
        return out

    def _component_refs(self, comps) -> list[dict]:
        return [self.component_obj(c, str(uuidlib.uuid5(GROUP_NS, c.group_name)) if c.group_name else None)
                for c in comps]

    def incident_obj(self, inc: Incident) -> dict:
        link = _base() + f"/status/incidents/{inc.uuid}"
        return {"id": inc.uuid, "name": inc.name, "status": inc.status, "created_at": ts(inc.created_at),
                "updated_at": ts(inc.updated_at), "monitoring_at": ts(inc.monitoring_at),
                "resolved_at": ts(inc.resolved_at), "impact": inc.impact, "shortlink": link,
                "started_at": ts(inc.started_at), "page_id": page_id(),
                "incident_updates": [{"id": u.uuid, "status": u.status, "body": u.body, "incident_id": inc.uuid,
                                      "created_at": ts(u.created_at), "updated_at": ts(u.created_at),
                                      "display_at": ts(u.created_at), "affected_components": None}
                                     for u in inc.updates],
                "components": self._component_refs(inc.components)}

    def maintenance_obj(self, m: Maintenance) -> dict:
        status = clock_status(m, self.now) if m.status != MAINT_COMPLETED else MAINT_COMPLETED
        link = _base() + f"/status/maintenance/{m.uuid}"
        return {"id": m.uuid, "name": m.name, "status": status, "created_at": ts(m.created_at),
                "updated_at": ts(m.updated_at), "monitoring_at": None,
                "resolved_at": ts(m.completed_at) if status == MAINT_COMPLETED else None, "impact": "maintenance",
                "shortlink": link, "started_at": ts(m.started_at or m.scheduled_for), "page_id": page_id(),
                "scheduled_for": ts(m.scheduled_for), "scheduled_until": ts(m.scheduled_until),
                "incident_updates": [{"id": u.uuid, "status": u.status, "body": u.body, "incident_id": m.uuid,
                                      "created_at": ts(u.created_at), "updated_at": ts(u.created_at),
                                      "display_at": ts(u.created_at), "affected_components": None}
                                     for u in m.updates],
                "components": self._component_refs(m.components)}

    def document(self, name: str) -> dict:
        page = page_obj(self.updated_at)
        if name == "status":
            return {"page": page, "status": self.status}
        if name == "components":
            return {"page": page, "components": self.components_list()}
        if name == "incidents":
            return {"page": page, "incidents": [self.incident_obj(i) for i in self.recent_incidents]}
        if name == "incidents/unresolved":
            return {"page": page, "incidents": [self.incident_obj(i) for i in self.open_incidents]}
        if name == "scheduled-maintenances":
            return {"page": page, "scheduled_maintenances": [self.maintenance_obj(m)
                                                             for m in self.recent_maintenances]}
        if name == "scheduled-maintenances/upcoming":
            return {"page": page, "scheduled_maintenances": [self.maintenance_obj(m) for m in self.upcoming]}
        if name == "scheduled-maintenances/active":
            return {"page": page, "scheduled_maintenances": [self.maintenance_obj(m) for m in self.active]}
        if name == "summary":
            return {"page": page, "components": self.components_list(),
                    "incidents": [self.incident_obj(i) for i in self.open_incidents],
                    "scheduled_maintenances": [self.maintenance_obj(m) for m in self.active + self.upcoming],
                    "status": self.status}
        raise KeyError(name)


DOCUMENTS = ("summary", "status", "components", "incidents", "incidents/unresolved", "scheduled-maintenances",
             "scheduled-maintenances/upcoming", "scheduled-maintenances/active")

