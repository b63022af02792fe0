"""Status page tables: components, incidents with their timeline, maintenance windows, probes and their samples.

Probe samples are stored three ways: ``status_samples`` holds raw results for ``RAW_RETENTION`` only; the rollup
job folds them into ``status_rollups`` at 1 minute, 1 hour and 1 day resolution, each with its own retention
(``RETENTION``), so 90 days of history cost about 2,300 rows per probe whatever the probe interval.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import JSON, BigInteger, Column, ForeignKey, Index, String, Table, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from hostbay.core import clock
from hostbay.core.db import db, new_uuid

# Component statuses, from best to worst (the Statuspage names).
OPERATIONAL, DEGRADED, PARTIAL, MAJOR, MAINTENANCE = ("operational", "degraded_performance", "partial_outage",
                                                     "major_outage", "under_maintenance")
COMPONENT_STATUSES = (OPERATIONAL, DEGRADED, PARTIAL, MAJOR, MAINTENANCE)
COMPONENT_LABELS = {OPERATIONAL: "Operational", DEGRADED: "Degraded performance", PARTIAL: "Partial outage",
                    MAJOR: "Major outage", MAINTENANCE: "Under maintenance"}
SEVERITY = {OPERATIONAL: 0, MAINTENANCE: 1, DEGRADED: 2, PARTIAL: 3, MAJOR: 4}

IMPACTS = ("none", "minor", "major", "critical")
INCIDENT_STATUSES = ("investigating", "identified", "monitoring", "resolved")
UNRESOLVED = ("investigating", "identified", "monitoring")
MAINT_SCHEDULED, MAINT_IN_PROGRESS, MAINT_VERIFYING, MAINT_COMPLETED = ("scheduled", "in_progress", "verifying",
                                                                       "completed")
MAINTENANCE_STATUSES = (MAINT_SCHEDULED, MAINT_IN_PROGRESS, MAINT_VERIFYING, MAINT_COMPLETED)
COMPONENT_KINDS = ("location", "node", "panel", "api", "other")
PROBE_KINDS = ("tcp", "http", "icmp")

RES_MINUTE, RES_HOUR, RES_DAY = 60, 3600, 86400
RAW_RETENTION = timedelta(days=2)
RETENTION = {RES_MINUTE: timedelta(days=2), RES_HOUR: timedelta(days=8), RES_DAY: timedelta(days=400)}


def _now() -> datetime:
    return clock.now()


incident_components = Table(
    "status_incident_components", db.metadata,
    Column("incident_id", ForeignKey("status_incidents.id", ondelete="CASCADE"), primary_key=True),
    Column("component_id", ForeignKey("status_components.id", ondelete="CASCADE"), primary_key=True),
)
incident_services = Table(
    "status_incident_services", db.metadata,
    Column("incident_id", ForeignKey("status_incidents.id", ondelete="CASCADE"), primary_key=True),
    Column("service_id", ForeignKey("services.id", ondelete="CASCADE"), primary_key=True),
)
maintenance_components = Table(
    "status_maintenance_components", db.metadata,
    Column("maintenance_id", ForeignKey("status_maintenances.id", ondelete="CASCADE"), primary_key=True),
    Column("component_id", ForeignKey("status_components.id", ondelete="CASCADE"), primary_key=True),
)


class Component(db.Model):
    """Something customers care about: a location, a group of nodes, the panel, the API. ``location`` and
    ``node_id`` tie it to the services that run there (never shown publicly); ``override`` is staff's word and
    wins over everything derived."""

    __tablename__ = "status_components"

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True, default=new_uuid)
    name: Mapped[str] = mapped_column(String(120))
    group_name: Mapped[str] = mapped_column(String(120), default="")
    description: Mapped[str] = mapped_column(String(500), default="")
    kind: Mapped[str] = mapped_column(String(16), default="other")
    location: Mapped[str | None] = mapped_column(String(64))
    node_id: Mapped[int | None] = mapped_column(ForeignKey("nodes.id", ondelete="SET NULL"))
    position: Mapped[int] = mapped_column(default=0)
    override: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=_now)
    updated_at: Mapped[datetime] = mapped_column(default=_now)


class Incident(db.Model):
    __tablename__ = "status_incidents"

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True, default=new_uuid)
    name: Mapped[str] = mapped_column(String(200))
    impact: Mapped[str] = mapped_column(String(16), default="minor")
    # the status the affected components take while the incident is open
    component_status: Mapped[str] = mapped_column(String(32), default=PARTIAL)
    status: Mapped[str] = mapped_column(String(16), default="investigating", index=True)
    started_at: Mapped[datetime] = mapped_column(default=_now)
    monitoring_at: Mapped[datetime | None] = mapped_column()
    resolved_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=_now)
    updated_at: Mapped[datetime] = mapped_column(default=_now)

    components = relationship("Component", secondary=incident_components, lazy="selectin",
                              order_by="Component.position")
    services = relationship("Service", secondary=incident_services, lazy="select")  # staff pages only
    updates = relationship("IncidentUpdate", lazy="selectin", cascade="all, delete-orphan",
                           order_by="(IncidentUpdate.created_at.desc(), IncidentUpdate.id.desc())")

    @property
    def resolved(self) -> bool:
        return self.status == "resolved"


class IncidentUpdate(db.Model):
    __tablename__ = "status_incident_updates"

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True, default=new_uuid)
    incident_id: Mapped[int] = mapped_column(ForeignKey("status_incidents.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(16))
    body: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=_now)


class Maintenance(db.Model):
    """A planned window. Its status follows the clock (see ``maintenance.advance``); ``notify`` asks for one
    notice per affected customer ahead of the start (``notice_hours``)."""

    __tablename__ = "status_maintenances"

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True, default=new_uuid)
    name: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text, default="")
    scheduled_for: Mapped[datetime] = mapped_column(index=True)
    scheduled_until: Mapped[datetime] = mapped_column(index=True)
    status: Mapped[str] = mapped_column(String(16), default=MAINT_SCHEDULED, index=True)
    verify_minutes: Mapped[int] = mapped_column(default=0)  # time spent "verifying" after the window's end
    notify: Mapped[bool] = mapped_column(default=False)
    notice_hours: Mapped[int] = mapped_column(default=48)
    notices_created_at: Mapped[datetime | None] = mapped_column()
    started_at: Mapped[datetime | None] = mapped_column()
    completed_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=_now)
    updated_at: Mapped[datetime] = mapped_column(default=_now)

    components = relationship("Component", secondary=maintenance_components, lazy="selectin",
                              order_by="Component.position")
    updates = relationship("MaintenanceUpdate", lazy="selectin", cascade="all, delete-orphan",
                           order_by="(MaintenanceUpdate.created_at.desc(), MaintenanceUpdate.id.desc())")


class MaintenanceUpdate(db.Model):
    __tablename__ = "status_maintenance_updates"

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True, default=new_uuid)
    maintenance_id: Mapped[int] = mapped_column(ForeignKey("status_maintenances.id", ondelete="CASCADE"),
                                                index=True)
    status: Mapped[str] = mapped_column(String(16))
    body: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=_now)


class Probe(db.Model):
    """A latency target: ``tcp`` (host, port), ``http`` (url, expected_status) or ``icmp`` (host)."""

    __tablename__ = "status_probes"

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True, default=new_uuid)
    name: Mapped[str] = mapped_column(String(120))
    component_id: Mapped[int] = mapped_column(ForeignKey("status_components.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(8))
    host: Mapped[str] = mapped_column(String(255), default="")
    port: Mapped[int | None] = mapped_column()
    url: Mapped[str] = mapped_column(String(500), default="")
    expected_status: Mapped[int] = mapped_column(default=200)
    interval_seconds: Mapped[int] = mapped_column(default=60)
    timeout_seconds: Mapped[float] = mapped_column(default=5.0)
    degraded_ms: Mapped[int] = mapped_column(default=1000)  # slower than this counts as degraded performance
    enabled: Mapped[bool] = mapped_column(default=True)
    last_run_at: Mapped[datetime | None] = mapped_column()
    last_ok: Mapped[bool | None] = mapped_column()
    last_latency_ms: Mapped[float | None] = mapped_column()
    last_error: Mapped[str | None] = mapped_column(String(255))
    fail_streak: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=_now)

    component = relationship("Component", lazy="joined")


class Sample(db.Model):
    """One probe result. ``maintenance`` marks samples taken while the component was in a maintenance window:
    they are kept for the graph but never count for or against uptime."""

    __tablename__ = "status_samples"
    __table_args__ = (Index("ix_status_samples_probe_ts", "probe_id", "ts"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(db.Integer, "sqlite"), primary_key=True)
    probe_id: Mapped[int] = mapped_column(ForeignKey("status_probes.id", ondelete="CASCADE"))
    ts: Mapped[datetime] = mapped_column(index=True)
    ok: Mapped[bool] = mapped_column()
    maintenance: Mapped[bool] = mapped_column(default=False)
    latency_ms: Mapped[float | None] = mapped_column()
    error: Mapped[str | None] = mapped_column(String(255))


class Rollup(db.Model):
    """Samples of one probe folded into a bucket of ``resolution`` seconds starting at ``bucket``."""

    __tablename__ = "status_rollups"
    __table_args__ = (UniqueConstraint("probe_id", "resolution", "bucket", name="uq_status_rollup_bucket"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(db.Integer, "sqlite"), primary_key=True)
    probe_id: Mapped[int] = mapped_column(ForeignKey("status_probes.id", ondelete="CASCADE"))
    resolution: Mapped[int] = mapped_column()
    bucket: Mapped[datetime] = mapped_column()
    count: Mapped[int] = mapped_column(default=0)
    ok_count: Mapped[int] = mapped_column(default=0)
    maint_count: Mapped[int] = mapped_column(default=0)  # samples in maintenance (excluded from uptime)
    maint_ok_count: Mapped[int] = mapped_column(default=0)
    latency_sum: Mapped[float] = mapped_column(default=0.0)  # over ok samples with a latency
    latency_n: Mapped[int] = mapped_column(default=0)
    latency_max: Mapped[float | None] = mapped_column()


class StatusState(db.Model):
    """One row: ``version`` changes whenever what the public page shows may change (staff edits, clock-driven
    transitions, rollups); cached pages are keyed by it. ``rolled_until`` is where the rollup job stopped."""

    __tablename__ = "status_state"

    id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[int] = mapped_column(default=0)
    rolled_until: Mapped[datetime | None] = mapped_column()
    meta: Mapped[dict] = mapped_column(JSON, default=dict)
