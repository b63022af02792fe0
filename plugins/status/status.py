"""What the status page says: component statuses, maintenance by the clock, uptime, latency series, and which
customers an incident or a maintenance concerns.

Component status = staff override if set, else the worst of: the open incidents that name the component (each
gives the ``component_status`` chosen for it), a maintenance window in progress (``under_maintenance``; probe
failures inside it do not count), and the probes (all failing twice in a row: major outage; some failing:
partial outage; slower than their threshold: degraded performance).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, or_, select, update

from hostbay.core import clock
from hostbay.core.db import db

from .models import (COMPONENT_STATUSES, DEGRADED, MAINT_COMPLETED, MAINT_IN_PROGRESS, MAINT_SCHEDULED,
                     MAINT_VERIFYING, MAINTENANCE, MAJOR, OPERATIONAL, PARTIAL, RES_DAY, RES_HOUR, RES_MINUTE,
                     SEVERITY, UNRESOLVED, Component, Incident, Maintenance, MaintenanceUpdate, Probe, Rollup,
                     Sample, StatusState, incident_components, maintenance_components)

MAINT_TEXT = {MAINT_IN_PROGRESS: "The maintenance has started.",
              MAINT_VERIFYING: "The work is done; we are verifying the results.",
              MAINT_COMPLETED: "The maintenance is complete."}


# --------------------------------------------------------------------------------------------------------------
# Cache version
# --------------------------------------------------------------------------------------------------------------

def state() -> StatusState:
    row = db.session.get(StatusState, 1)
    if row is None:
        row = StatusState(id=1, version=1, meta={})
        db.session.add(row)
        db.session.flush()
    return row


def bump() -> None:
    """Invalidate every cached public page (call in the transaction of the change)."""
    from flask import current_app, has_app_context

    if has_app_context():
        current_app.extensions.pop("hostbay.status.version", None)
    state()
    db.session.execute(update(StatusState).where(StatusState.id == 1).values(version=StatusState.version + 1))


def current_version() -> int:
    return db.session.scalar(select(StatusState.version).where(StatusState.id == 1)) or 0


# --------------------------------------------------------------------------------------------------------------
# Maintenance by the clock
# --------------------------------------------------------------------------------------------------------------

def clock_status(m: Maintenance, now: datetime) -> str:
    """The status the clock gives a window; a window completed early by staff stays completed."""
    if m.completed_at is not None and m.completed_at <= now:
        return MAINT_COMPLETED
    if now < m.scheduled_for:
        return MAINT_SCHEDULED
    if now < m.scheduled_until:
        return MAINT_IN_PROGRESS
    if now < m.scheduled_until + timedelta(minutes=m.verify_minutes or 0):
        return MAINT_VERIFYING
    return MAINT_COMPLETED


def maintenance_component_ids(now: datetime) -> set[int]:
    """Components inside a maintenance window (in progress or verifying) at ``now``."""
    rows = db.session.execute(
        select(maintenance_components.c.component_id, Maintenance.scheduled_until, Maintenance.verify_minutes,
               Maintenance.completed_at)
        .join(Maintenance, Maintenance.id == maintenance_components.c.maintenance_id)
        .where(Maintenance.scheduled_for <= now,
               Maintenance.scheduled_until >= now - timedelta(days=1))).all()
    out = set()
    for cid, until, verify, done in rows:
        if done is not None and done <= now:
            continue
        if now < until + timedelta(minutes=verify or 0):
            out.add(cid)
    return out


def advance_maintenance(now: datetime | None = None) -> int:
    """Move every window to the status the clock gives it, with a timeline entry per step; create the notices
    that are due. Returns how many windows changed. Safe to run any number of times."""
    from .notices import create_maintenance_notices

    now = now or clock.now()
    changed = 0
    open_windows = db.session.scalars(select(Maintenance).where(Maintenance.status != MAINT_COMPLETED)).all()
    order = {MAINT_SCHEDULED: 0, MAINT_IN_PROGRESS: 1, MAINT_VERIFYING: 2, MAINT_COMPLETED: 3}
    for m in open_windows:
        target = clock_status(m, now)
        if order[target] <= order[m.status]:
            continue
        steps = [s for s in (MAINT_IN_PROGRESS, MAINT_VERIFYING, MAINT_COMPLETED)
                 if order[m.status] < order[s] <= order[target]]
        if target == MAINT_COMPLETED and not m.verify_minutes and MAINT_VERIFYING in steps:
            steps.remove(MAINT_VERIFYING)
        for s in steps:
            at = {MAINT_IN_PROGRESS: m.scheduled_for, MAINT_VERIFYING: m.scheduled_until,
                  MAINT_COMPLETED: m.completed_at or (m.scheduled_until + timedelta(minutes=m.verify_minutes or 0))}[s]
            db.session.add(MaintenanceUpdate(maintenance_id=m.id, status=s, body=MAINT_TEXT[s], created_at=min(at, now)))
        if m.started_at is None and order[target] >= 1:
            m.started_at = min(m.scheduled_for, now)
        if target == MAINT_COMPLETED and m.completed_at is None:
            m.completed_at = min(m.scheduled_until + timedelta(minutes=m.verify_minutes or 0), now)
        m.status, m.updated_at = target, now
        changed += 1
    created = create_maintenance_notices(now)
    if changed:
        bump()
    db.session.commit()
    return changed + created


# --------------------------------------------------------------------------------------------------------------
# Component status
# --------------------------------------------------------------------------------------------------------------

def worst(statuses) -> str:
    out = OPERATIONAL
    for s in statuses:
        if SEVERITY.get(s, 0) > SEVERITY[out]:
            out = s
    return out


def component_statuses(now: datetime | None = None, *, components=None, open_incidents=None,
                       in_maintenance: set[int] | None = None, probe_rows=None) -> dict[int, str]:
    """Every component's status (a few fixed queries, whatever the number of components; callers that already
    hold the components, open incidents, maintenance set or probe rows pass them in)."""
    now = now or clock.now()
    if components is None:
        comps = db.session.execute(select(Component.id, Component.override)).all()
    else:
        comps = [(c.id, c.override) for c in components]
    derived: dict[int, list[str]] = {cid: [] for cid, _ in comps}
    if open_incidents is None:
        pairs = db.session.execute(
            select(incident_components.c.component_id, Incident.component_status)
            .join(Incident, Incident.id == incident_components.c.incident_id)
            .where(Incident.status.in_(UNRESOLVED))).all()
    else:
        pairs = [(c.id, inc.component_status) for inc in open_incidents for c in inc.components]
    for cid, status in pairs:
        derived.setdefault(cid, []).append(status)
    in_maint = maintenance_component_ids(now) if in_maintenance is None else in_maintenance
    if probe_rows is None:
        probe_rows = probe_state()
    probes: dict[int, list] = {}
    for cid, ok, streak, latency, slow in probe_rows:
        probes.setdefault(cid, []).append((ok, streak, latency, slow))
    out = {}
    for cid, override in comps:
        if override in COMPONENT_STATUSES:
            out[cid] = override
            continue
        parts = list(derived.get(cid, []))
        if cid in in_maint:
            parts.append(MAINTENANCE)
        elif probes.get(cid):
            results = probes[cid]
            failing = [r for r in results if r[0] is False and r[1] >= 2]
            if failing and len(failing) == len(results):
                parts.append(MAJOR)
            elif failing:
                parts.append(PARTIAL)
            elif any(r[0] and r[2] is not None and r[2] > r[3] for r in results):
                parts.append(DEGRADED)
        out[cid] = worst(parts)
    return out


def probe_state() -> list[tuple]:
    """(component id, last ok, fail streak, last latency, degraded threshold) of every enabled probe that ran."""
    return db.session.execute(
        select(Probe.component_id, Probe.last_ok, Probe.fail_streak, Probe.last_latency_ms, Probe.degraded_ms)
        .where(Probe.enabled.is_(True), Probe.last_run_at.is_not(None))).all()


def components_in_windows(windows, now: datetime) -> set[int]:
    return {c.id for m in windows if clock_status(m, now) in (MAINT_IN_PROGRESS, MAINT_VERIFYING)
            for c in m.components}


INDICATOR = {OPERATIONAL: "none", MAINTENANCE: "none", DEGRADED: "minor", PARTIAL: "major", MAJOR: "critical"}
IMPACT_RANK = {"none": 0, "minor": 1, "major": 2, "critical": 3}
DESCRIPTION = {"none": "All Systems Operational", "minor": "Minor Service Outage", "major": "Partial System Outage",
               "critical": "Major Service Outage"}


def page_status(statuses: dict[int, str], open_incidents: list[Incident], maintenance_active: bool) -> dict:
    """Statuspage's rollup: ``indicator`` none/minor/major/critical and its description."""
    rank = 0
    for s in statuses.values():
        rank = max(rank, IMPACT_RANK[INDICATOR[s]])
    for inc in open_incidents:
        rank = max(rank, IMPACT_RANK.get(inc.impact, 0))
    indicator = [k for k, v in IMPACT_RANK.items() if v == rank][0]
    desc = DESCRIPTION[indicator]
    if indicator == "none" and maintenance_active:
        desc = "Service Under Maintenance"
    return {"indicator": indicator, "description": desc}


# --------------------------------------------------------------------------------------------------------------
# Uptime and latency from the rollups
# --------------------------------------------------------------------------------------------------------------

def watermarks() -> dict[int, datetime | None]:
    meta = (db.session.scalar(select(StatusState.meta).where(StatusState.id == 1)) or {})
    return {res: (datetime.fromisoformat(meta[str(res)]) if meta.get(str(res)) else None)
            for res in (RES_MINUTE, RES_HOUR, RES_DAY)}


def _levels(start: datetime, end: datetime, marks: dict, levels=(RES_DAY, RES_HOUR, RES_MINUTE)) -> list[tuple]:
    """Split [start, end) into parts, each read from the coarsest level that holds it whole: day rollups for the
    whole days before the day watermark, hour rollups around them, then minute rollups, then raw samples."""
    if start >= end:
        return []
    if not levels:
        return [(None, start, end)]
    res, finer = levels[0], levels[1:]
    mark = marks.get(res)
    if mark is None:
        return _levels(start, end, marks, finer)
    lo = _ceil(start, res)
    hi = min(_floor(end, res), mark)
    if lo >= hi:
        return _levels(start, end, marks, finer)
    return _levels(start, lo, marks, finer) + [(res, lo, hi)] + _levels(hi, end, marks, finer)


def _ceil(ts: datetime, res: int) -> datetime:
    f = _floor(ts, res)
    return f if f == ts else f + timedelta(seconds=res)


def counts(probe_ids: list[int], start: datetime, end: datetime, marks: dict | None = None) -> dict[int, tuple]:
    """Per probe: (samples, ok samples, samples in maintenance, ok samples in maintenance) in [start, end): one
    small query per level that holds part of the window (a single UNION made PostgreSQL start parallel workers,
    which cost more than the whole read)."""
    marks = watermarks() if marks is None else marks
    if not probe_ids:
        return {}
    ranges: dict[int | None, list] = {}
    for res, lo, hi in _levels(start, end, marks):
        ranges.setdefault(res, []).append((lo, hi))
    out: dict[int, list[int]] = {pid: [0, 0, 0, 0] for pid in probe_ids}
    for res, spans in ranges.items():
        if res is None:
            q = (select(Sample.probe_id, func.count(), func.sum(func.cast(Sample.ok, db.Integer)),
                        func.sum(func.cast(Sample.maintenance, db.Integer)),
                        func.sum(func.cast(Sample.ok & Sample.maintenance, db.Integer)))
                 .where(Sample.probe_id.in_(probe_ids), or_(*[(Sample.ts >= lo) & (Sample.ts < hi) for lo, hi in spans]))
                 .group_by(Sample.probe_id))
        else:
            q = (select(Rollup.probe_id, func.sum(Rollup.count), func.sum(Rollup.ok_count),
                        func.sum(Rollup.maint_count), func.sum(Rollup.maint_ok_count))
                 .where(Rollup.probe_id.in_(probe_ids), Rollup.resolution == res,
                        or_(*[(Rollup.bucket >= lo) & (Rollup.bucket < hi) for lo, hi in spans]))
                 .group_by(Rollup.probe_id))
        for pid, n, ok, m, mok in db.session.execute(q):
            acc = out[pid]
            acc[0] += int(n or 0)
            acc[1] += int(ok or 0)
            acc[2] += int(m or 0)
            acc[3] += int(mok or 0)
    return {pid: tuple(v) for pid, v in out.items()}


def uptime_percent(c: tuple | list) -> float | None:
    """Uptime of counted samples: samples in maintenance are neither up nor down."""
    n, ok, m, mok = c
    considered = n - m
    if considered <= 0:
        return None
    return 100.0 * (ok - mok) / considered


def component_uptime(start: datetime, end: datetime, probes=None) -> dict[int, float | None]:
    """Uptime per component over [start, end) from its probes' samples; ``probes``: (probe id, component id)."""
    if probes is None:
        probes = db.session.execute(select(Probe.id, Probe.component_id)).all()
    per = counts([p for p, _ in probes], start, end)
    acc: dict[int, list[int]] = {}
    for pid, cid in probes:
        a = acc.setdefault(cid, [0, 0, 0, 0])
        for i, v in enumerate(per.get(pid, (0, 0, 0, 0))):
            a[i] += v
    return {cid: uptime_percent(a) for cid, a in acc.items()}


RANGES = {"24h": (timedelta(hours=24), RES_MINUTE), "7d": (timedelta(days=7), RES_HOUR),
          "90d": (timedelta(days=90), RES_DAY)}


def latency_series(component_id: int, rng: str, now: datetime | None = None) -> dict:
    """Average latency (ms) of the component's probes per bucket, and the share of failed samples, for a graph:
    24 h in minutes, 7 d in hours, 90 d in days. Recent data not yet rolled up is folded from finer levels."""
    now = now or clock.now()
    span, res = RANGES[rng]
    start = now - span
    start = start - timedelta(seconds=(start - datetime(2000, 1, 1)).total_seconds() % res)
    probe_ids = list(db.session.scalars(select(Probe.id).where(Probe.component_id == component_id)))
    buckets: dict[datetime, list] = {}
    if probe_ids:
        marks = watermarks()
        levels = tuple(lvl for lvl in (RES_DAY, RES_HOUR, RES_MINUTE) if lvl <= res)
        for level, lo, hi in _levels(start, now + timedelta(seconds=1), marks, levels):
            if level is None:
                rows = db.session.execute(
                    select(Sample.ts, Sample.latency_ms, func.cast(Sample.ok, db.Integer), Sample.ok)
                    .where(Sample.probe_id.in_(probe_ids), Sample.ts >= lo, Sample.ts < hi)).all()
                rows = [(ts, lat if ok else None, 1 if ok and lat is not None else 0, 1, ok_i)
                        for ts, lat, ok_i, ok in rows]
            else:
                rows = db.session.execute(
                    select(Rollup.bucket, Rollup.latency_sum, Rollup.latency_n, Rollup.count, Rollup.ok_count)
                    .where(Rollup.probe_id.in_(probe_ids), Rollup.resolution == level, Rollup.bucket >= lo,
                           Rollup.bucket < hi)).all()
            for b, lsum, ln, n, ok in rows:
                acc = buckets.setdefault(_floor(b, res), [0.0, 0, 0, 0])
                acc[0] += lsum or 0.0
                acc[1] += ln or 0
                acc[2] += n or 0
                acc[3] += (n or 0) - (ok or 0)
    keys = sorted(buckets)
    epoch = datetime(1970, 1, 1)
    return {"range": rng, "resolution": res,
            "t": [int((k - epoch).total_seconds()) for k in keys],
            "latency_ms": [round(buckets[k][0] / buckets[k][1], 2) if buckets[k][1] else None for k in keys],
            "failed": [round(buckets[k][3] / buckets[k][2], 4) if buckets[k][2] else None for k in keys]}


def _floor(ts: datetime, res: int) -> datetime:
    epoch = datetime(1970, 1, 1)
    secs = int((ts - epoch).total_seconds())
    return epoch + timedelta(seconds=secs - secs % res)


# --------------------------------------------------------------------------------------------------------------
# Who is affected
# --------------------------------------------------------------------------------------------------------------

def services_of(component_ids: set[int], extra_service_ids: set[int] | None = None,
                user_id: int | None = None) -> list[tuple]:
    """Live services (id, uuid, user_id, hostname) on the given components' nodes or locations (all services for
    a panel or API component), plus ``extra_service_ids``; optionally only ``user_id``'s."""
    from hostbay.core.catalog import Node
    from hostbay.core.services import HIDDEN_FROM_CUSTOMER, Service

    comps = db.session.execute(select(Component.kind, Component.location, Component.node_id)
                               .where(Component.id.in_(component_ids or {0}))).all()
    everyone = any(k in ("panel", "api") for k, _, _ in comps)
    locations = {loc for k, loc, _ in comps if loc}
    nodes = {n for _, _, n in comps if n}
    conds = []
    if everyone:
        conds.append(Service.id.is_not(None))
    if nodes:
        conds.append(Service.node_id.in_(nodes))
    if locations:
        conds.append(Service.node_id.in_(select(Node.id).where(Node.location.in_(locations))))
    if extra_service_ids:
        conds.append(Service.id.in_(extra_service_ids))
    if not conds:
        return []
    q = (select(Service.id, Service.uuid, Service.user_id, Service.hostname)
         .where(or_(*conds), Service.state.not_in(HIDDEN_FROM_CUSTOMER)))
    if user_id is not None:
        q = q.where(Service.user_id == user_id)
    return db.session.execute(q.order_by(Service.id)).all()
