"""Demo data for ``hostbay demo``: components for the panel, the API and the demo location, a probe against the
panel itself on loopback, a resolved incident from last week and a maintenance window next week."""

from __future__ import annotations

from datetime import timedelta

from flask import current_app
from sqlalchemy import select

from hostbay.core import clock
from hostbay.core.catalog import Node
from hostbay.core.db import db

from .models import Component, Incident, IncidentUpdate, Maintenance, MaintenanceUpdate, Probe
from .status import bump


def load() -> list[str]:
    if db.session.scalar(select(Component.id).filter_by(name="Customer panel")) is not None:
        return ["Status page: /status"]
    now = clock.now().replace(second=0)
    base = current_app.config.get("HOSTBAY_BASE_URL", "http://127.0.0.1:5000").rstrip("/")
    node = db.session.scalar(select(Node).order_by(Node.id))
    panel = Component(name="Customer panel", group_name="Platform", kind="panel", position=0,
                      description="The panel and its sign-in", created_at=now - timedelta(days=30))
    api = Component(name="API", group_name="Platform", kind="api", position=1, created_at=now - timedelta(days=30))
    loc = node.location if node else "default"
    servers = Component(name="Virtual servers", group_name="Datacentre", kind="location", location=loc, position=2,
                        description="Servers and their network in our datacentre", created_at=now - timedelta(days=30))
    db.session.add_all([panel, api, servers])
    db.session.flush()
    db.session.add(Probe(name="Panel health", component_id=panel.id, kind="http", url=f"{base}/healthz",
                         expected_status=200, interval_seconds=30, timeout_seconds=5))
    db.session.add(Probe(name="API health", component_id=api.id, kind="http", url=f"{base}/healthz",
                         expected_status=200, interval_seconds=60, timeout_seconds=5))
    start = now - timedelta(days=6, hours=3)
    inc = Incident(name="Slow disk performance on some virtual servers", impact="minor",
                   component_status="degraded_performance", status="resolved", started_at=start,
                   monitoring_at=start + timedelta(minutes=40), resolved_at=start + timedelta(minutes=95),
                   created_at=start, updated_at=start + timedelta(minutes=95))
    inc.components = [servers]
    inc.updates = [
        IncidentUpdate(status="investigating", body="Some virtual servers see slow disk writes. We are looking "
                       "into it.", created_at=start),
        IncidentUpdate(status="identified", body="A storage controller was rebuilding an array; we moved the "
                       "load away from it.", created_at=start + timedelta(minutes=25)),
        IncidentUpdate(status="monitoring", body="Disk performance is back to normal; we are watching it.",
                       created_at=start + timedelta(minutes=40)),
        IncidentUpdate(status="resolved", body="Resolved. No data was lost.", created_at=start + timedelta(minutes=95)),
    ]
    db.session.add(inc)
    when = (now + timedelta(days=7)).replace(hour=2, minute=0)
    m = Maintenance(name="Network switch upgrade", body="Short interruptions of up to two minutes while the "
                    "switches restart.", scheduled_for=when, scheduled_until=when + timedelta(hours=1),
                    notify=True, notice_hours=48, created_at=now, updated_at=now)
    m.components = [servers]
    m.updates = [MaintenanceUpdate(status="scheduled", body=m.body, created_at=now)]
    db.session.add(m)
    bump()
    db.session.commit()
    return ["Status page: /status (components, a probe of this panel, a past incident, next week's maintenance)"]
