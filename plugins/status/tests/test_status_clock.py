"""Clock-driven behaviour: maintenance windows move by themselves and are not downtime, incidents drive the
component status through their timeline, and uptime over a window with an outage and a maintenance is exact."""

from datetime import timedelta

from sqlalchemy import func, select

from hostbay.core.db import db
from hostbay.core.notices import Notice
from hostbay.plugins.status import rollup
from hostbay.plugins.status.api import Snapshot
from hostbay.plugins.status.incidents import add_update, complete_maintenance, open_incident, schedule_maintenance, \
    set_override
from hostbay.plugins.status.models import (MAINTENANCE, MAJOR, OPERATIONAL, PARTIAL, DEGRADED, Maintenance,
                                           MaintenanceUpdate, Rollup, Sample)
from hostbay.plugins.status.status import (advance_maintenance, component_statuses, component_uptime, counts,
                                           uptime_percent)


def _window(clock, comps, start_in=timedelta(hours=2), length=timedelta(hours=1), **kw):
    now = clock.now()
    m = schedule_maintenance(name="Switch upgrade", body="Switches restart.", scheduled_for=now + start_in,
                             scheduled_until=now + start_in + length, component_ids=[c.id for c in comps], **kw)
    db.session.commit()
    return m


def test_maintenance_moves_by_the_clock_and_is_not_an_incident(app, clock, make_component):
    comp = make_component("Frankfurt")
    m = _window(clock, [comp], verify_minutes=15)
    assert advance_maintenance() == 0
    assert m.status == "scheduled"
    assert Snapshot().document("scheduled-maintenances/upcoming")["scheduled_maintenances"][0]["id"] == m.uuid
    assert component_statuses()[comp.id] == OPERATIONAL

    clock.advance(hours=2)  # the window opens: no staff click
    advance_maintenance()
    db.session.refresh(m)
    assert m.status == "in_progress" and m.started_at == clock.now()
    assert component_statuses()[comp.id] == MAINTENANCE
    snap = Snapshot()
    assert [x["id"] for x in snap.document("scheduled-maintenances/active")["scheduled_maintenances"]] == [m.uuid]
    assert snap.document("incidents")["incidents"] == []  # never shown as an incident
    assert snap.document("status")["status"] == {"indicator": "none", "description": "Service Under Maintenance"}

    clock.advance(hours=1, minutes=5)
    advance_maintenance()
    db.session.refresh(m)
    assert m.status == "verifying"
    clock.advance(minutes=10)
    advance_maintenance()
    db.session.refresh(m)
    assert m.status == "completed"
    assert m.completed_at == m.scheduled_until + timedelta(minutes=15)
    assert component_statuses()[comp.id] == OPERATIONAL
    steps = [u.status for u in db.session.scalars(select(MaintenanceUpdate).filter_by(maintenance_id=m.id)
                                                  .order_by(MaintenanceUpdate.created_at, MaintenanceUpdate.id))]
    assert steps == ["scheduled", "in_progress", "verifying", "completed"]
    assert advance_maintenance() == 0  # nothing left to move


def test_a_window_missed_entirely_still_completes_in_order(app, clock, make_component):
    comp = make_component("Paris")
    m = _window(clock, [comp])
    clock.advance(days=1)  # the tick did not run during the window
    advance_maintenance()
    db.session.refresh(m)
    assert m.status == "completed"
    assert [u.status for u in sorted(m.updates, key=lambda u: (u.created_at, u.id))] == \
        ["scheduled", "in_progress", "completed"]


def test_staff_may_complete_early(app, clock, make_component):
    comp = make_component("Paris")
    m = _window(clock, [comp], start_in=timedelta(0))
    advance_maintenance()
    clock.advance(minutes=20)
    complete_maintenance(m)
    db.session.commit()
    assert component_statuses()[comp.id] == OPERATIONAL
    clock.advance(hours=2)
    assert advance_maintenance() == 0
    assert db.session.get(Maintenance, m.id).completed_at == clock.now() - timedelta(hours=2)


def test_maintenance_notice_once_per_affected_customer(app, clock, make_component, make_user, make_package,
                                                      make_node, make_service):
    node = make_node(name="fra-node-07", location="fra")
    other_node = make_node(name="ams-node-01", location="ams")
    comp = make_component("Frankfurt", kind="location", location="fra")
    pkg = make_package()
    alice, bob, carol = make_user(), make_user(), make_user()
    make_service(alice, pkg, node=node)
    make_service(alice, pkg, node=node)
    make_service(bob, pkg, node=node)
    make_service(carol, pkg, node=other_node)
    _window(clock, [comp], start_in=timedelta(hours=72), notify=True, notice_hours=48)
    advance_maintenance()
    assert db.session.scalar(select(func.count(Notice.id))) == 0  # not yet inside the lead time
    clock.advance(hours=25)
    for _ in range(3):  # however often the tick runs
        advance_maintenance()
    rows = db.session.scalars(select(Notice).order_by(Notice.user_id)).all()
    assert [n.user_id for n in rows] == [alice.id, bob.id]
    assert all(n.kind == "maintenance" for n in rows)
    assert "fra-node-07" not in rows[0].body and "fra" not in rows[0].subject.lower().split()
    assert rows[0].body.count(".example.test") == 2  # both of alice's servers listed


def test_incident_timeline_drives_component_status_and_override_wins(app, clock, make_component):
    fra = make_component("Frankfurt")
    ams = make_component("Amsterdam")
    inc = open_incident(name="Network loss in Frankfurt", impact="major", component_status=MAJOR,
                        component_ids=[fra.id], body="We are investigating packet loss.")
    db.session.commit()
    st = component_statuses()
    assert st[fra.id] == MAJOR and st[ams.id] == OPERATIONAL
    assert Snapshot().document("status")["status"]["indicator"] == "critical"

    clock.advance(minutes=20)
    add_update(inc, status="identified", body="A line card failed; traffic moved.", component_status=PARTIAL,
               impact="minor")
    db.session.commit()
    assert component_statuses()[fra.id] == PARTIAL
    clock.advance(minutes=20)
    add_update(inc, status="monitoring", body="Traffic is normal.", component_status=DEGRADED)
    db.session.commit()
    assert component_statuses()[fra.id] == DEGRADED
    set_override(fra, MAJOR)
    db.session.commit()
    assert component_statuses()[fra.id] == MAJOR  # staff's word wins
    set_override(fra, None)
    clock.advance(minutes=30)
    add_update(inc, status="resolved", body="Resolved.")
    db.session.commit()
    assert component_statuses()[fra.id] == OPERATIONAL

    doc = Snapshot().document("incidents")["incidents"][0]
    assert [u["status"] for u in doc["incident_updates"]] == ["resolved", "monitoring", "identified", "investigating"]
    assert doc["monitoring_at"] == (clock.now() - timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    assert doc["resolved_at"] == clock.now().strftime("%Y-%m-%dT%H:%M:%S.000Z")
    assert Snapshot().document("incidents/unresolved")["incidents"] == []


def test_uptime_with_an_outage_and_a_maintenance_is_exact(app, clock, make_component, make_probe):
    """One day of 1-minute samples: 30 minutes down, and a 2-hour maintenance during which 60 samples failed
    and 60 succeeded. Maintenance is neither up nor down: uptime = (1440 - 120 - 30) / (1440 - 120)."""
    comp = make_component("Frankfurt")
    probe = make_probe(comp, kind="tcp", host="127.0.0.1", port=9)
    day = clock.now().replace(hour=0, minute=0, second=0) - timedelta(days=3)
    rows = []
    for i in range(1440):
        ts = day + timedelta(minutes=i)
        in_maint = 600 <= i < 720
        down = (300 <= i < 330) or (in_maint and i < 660)
        rows.append({"probe_id": probe.id, "ts": ts, "ok": not down, "maintenance": in_maint,
                     "latency_ms": None if down else 10.0 + (i % 7), "error": "connection refused" if down else None})
    db.session.execute(Sample.__table__.insert(), rows)
    db.session.commit()
    expected = 100.0 * (1440 - 120 - 30) / (1440 - 120)

    raw = counts([probe.id], day, day + timedelta(days=1), marks={})
    assert raw[probe.id] == (1440, 1440 - 90, 120, 60)
    assert uptime_percent(raw[probe.id]) == expected

    rollup.run(now=clock.now())  # raw -> minutes -> hours -> days; raw samples older than 2 days are gone
    db.session.expire_all()
    assert db.session.scalar(select(func.count(Sample.id))) == 0
    assert db.session.scalar(select(func.count(Rollup.id)).where(Rollup.resolution == 86400)) == 1
    rolled = counts([probe.id], day, day + timedelta(days=1))
    assert rolled[probe.id] == (1440, 1440 - 90, 120, 60)
    assert component_uptime(day, day + timedelta(days=1))[comp.id] == expected
    assert component_uptime(clock.now() - timedelta(days=90), clock.now())[comp.id] == expected
    # idempotent: another run changes nothing
    rollup.run(now=clock.now())
    assert counts([probe.id], day, day + timedelta(days=1))[probe.id] == (1440, 1350, 120, 60)


def test_rollup_keeps_recent_detail_and_reads_across_levels(app, clock, make_component, make_probe):
    comp = make_component("Frankfurt")
    probe = make_probe(comp, kind="tcp", host="127.0.0.1", port=9)
    start = clock.now() - timedelta(hours=30)
    rows = [{"probe_id": probe.id, "ts": start + timedelta(minutes=i), "ok": i % 10 != 0, "maintenance": False,
             "latency_ms": 5.0, "error": None} for i in range(30 * 60)]
    db.session.execute(Sample.__table__.insert(), rows)
    db.session.commit()
    before = counts([probe.id], start, clock.now(), marks={})[probe.id]
    rollup.run(now=clock.now())
    after = counts([probe.id], start, clock.now())[probe.id]
    assert before == after == (1800, 1620, 0, 0)
    # raw samples of the last 2 days are kept, minutes too; the 24 h graph has one point per minute
    assert db.session.scalar(select(func.count(Sample.id))) == 1800
    from hostbay.plugins.status.status import latency_series
    series = latency_series(comp.id, "24h")
    assert len(series["t"]) == 24 * 60 and set(series["latency_ms"]) == {5.0, None}
    assert series["latency_ms"].count(None) == 144 and series["failed"].count(1.0) == 144  # every 10th failed
    assert len(latency_series(comp.id, "7d")["t"]) in (30, 31)
