"""Probes against real servers on loopback, run through the job layer: up, down with the reason, slow, closed."""

import time

import pytest
from sqlalchemy import select

from hostbay.core import jobs
from hostbay.core.db import db
from hostbay.core.errors import UserError
from hostbay.plugins.status.models import MAJOR, OPERATIONAL, PARTIAL, DEGRADED, Probe, Sample
from hostbay.plugins.status.probes import icmp_available, probe_http, probe_tcp
from hostbay.plugins.status.status import component_statuses


def _sweep_job(clock):
    """Enqueue the sweep as the scheduler does and run it in this process; returns the operation."""
    op = jobs.enqueue("status.probe_sweep", key=f"test-sweep:{clock.now().isoformat()}")
    db.session.commit()
    jobs.run_pending()
    db.session.expire_all()
    return db.session.get(jobs.Operation, op.id)


def _last(probe):
    return db.session.scalars(select(Sample).where(Sample.probe_id == probe.id).order_by(Sample.id.desc())).first()


def test_the_scheduler_enqueues_the_status_jobs(app, job_runner):
    kinds = {op.kind for op in jobs.schedule_due(now_ts=1_000_000.0)}
    assert {"status.probe_sweep", "status.tick", "status.rollup"} <= kinds
    again = jobs.schedule_due(now_ts=1_000_001.0)
    assert len({o.id for o in again if o.kind == "status.probe_sweep"}) == 1  # one per period


def test_probes_up_down_slow_and_closed_through_the_job_layer(app, clock, job_runner, http_server, tcp_server,
                                                              closed_port, make_component, make_probe):
    comp = make_component("Frankfurt")
    up_http = make_probe(comp, kind="http", url=http_server + "/", timeout_seconds=2)
    wrong = make_probe(comp, kind="http", url=http_server + "/broken", expected_status=200, timeout_seconds=2)
    slow = make_probe(comp, kind="http", url=http_server + "/slow/4", timeout_seconds=0.5)
    up_tcp = make_probe(comp, kind="tcp", host="127.0.0.1", port=tcp_server, timeout_seconds=2)
    closed = make_probe(comp, kind="tcp", host="127.0.0.1", port=closed_port, timeout_seconds=2)

    started = time.monotonic()
    op = _sweep_job(clock)
    elapsed = time.monotonic() - started
    assert op.state == jobs.SUCCEEDED, op.error
    assert op.result == {"probes": 5, "down": 3}, {  # which probe went the wrong way, and why
        name: (_last(p).ok, _last(p).error, _last(p).latency_ms)
        for name, p in (("up_http", up_http), ("wrong", wrong), ("slow", slow), ("up_tcp", up_tcp), ("closed", closed))}
    assert elapsed < 3.5, "the slow target held the sweep beyond its timeout"

    s = _last(up_http)
    assert s.ok and s.latency_ms is not None and s.latency_ms >= 0 and s.error is None
    s = _last(wrong)
    assert not s.ok and s.error == "HTTP 503, expected 200"
    s = _last(slow)
    assert not s.ok and s.error == "timed out after 0.5 s" and s.latency_ms is None
    assert _last(up_tcp).ok
    s = _last(closed)
    assert not s.ok and s.error == "connection refused"
    assert db.session.get(Probe, closed.id).last_error == "connection refused"
    # one failing round is not an outage yet; the second is (some probes down: partial outage)
    assert component_statuses()[comp.id] == OPERATIONAL
    clock.advance(seconds=61)
    assert _sweep_job(clock).state == jobs.SUCCEEDED
    assert component_statuses()[comp.id] == PARTIAL
    assert db.session.scalar(select(db.func.count(Sample.id))) == 10


def test_probes_are_not_run_before_their_interval(app, clock, job_runner, tcp_server, make_component, make_probe):
    comp = make_component("Amsterdam")
    make_probe(comp, kind="tcp", host="127.0.0.1", port=tcp_server, interval_seconds=300)
    assert _sweep_job(clock).result["probes"] == 1
    clock.advance(seconds=120)
    assert _sweep_job(clock).result["probes"] == 0
    clock.advance(seconds=181)
    assert _sweep_job(clock).result["probes"] == 1


def test_all_probes_down_is_a_major_outage_and_slow_is_degraded(app, clock, job_runner, closed_port, http_server,
                                                               make_component, make_probe):
    down = make_component("Down")
    make_probe(down, kind="tcp", host="127.0.0.1", port=closed_port)
    slowish = make_component("Slowish")
    make_probe(slowish, kind="http", url=http_server + "/slow/0.3", timeout_seconds=3, degraded_ms=100)
    _sweep_job(clock)
    clock.advance(seconds=61)
    _sweep_job(clock)
    st = component_statuses()
    assert st[down.id] == MAJOR
    assert st[slowish.id] == DEGRADED


def test_primitives_report_reasons_without_raising(closed_port):
    assert probe_tcp("127.0.0.1", closed_port, 1).error == "connection refused"
    assert probe_http("ftp://example.test/", 200, 1).error == "not an http(s) address"
    assert probe_http(f"http://127.0.0.1:{closed_port}/", 200, 1).error == "connection refused"


def test_icmp_where_the_process_may(app, clock, job_runner, make_component, make_probe):
    comp = make_component("Loopback")
    if not icmp_available():
        with pytest.raises(UserError, match="ICMP"):
            make_probe(comp, kind="icmp", host="127.0.0.1")
        return
    p = make_probe(comp, kind="icmp", host="127.0.0.1", timeout_seconds=2)
    assert _sweep_job(clock).state == jobs.SUCCEEDED
    s = _last(p)
    assert s.ok, s.error
    assert s.latency_ms is not None and s.latency_ms < 1000


def test_an_outage_found_by_probes_reaches_the_cached_page_at_once(app, client, clock, job_runner, closed_port,
                                                                   make_component, make_probe):
    comp = make_component("Down soon")
    make_probe(comp, kind="tcp", host="127.0.0.1", port=closed_port)
    assert client.get("/status").headers["X-Status-Cache"] == "miss"
    assert client.get("/status").headers["X-Status-Cache"] == "hit"
    _sweep_job(clock)
    clock.advance(seconds=61)
    _sweep_job(clock)
    resp = client.get("/status")
    assert resp.headers["X-Status-Cache"] == "miss"
    assert b'data-status="major_outage"' in resp.data
