"""Prometheus metrics (prometheus_client).

Several processes report into one scrape: with ``HOSTBAY_METRICS_DIR`` set (or ``PROMETHEUS_MULTIPROC_DIR``), every
gunicorn worker and every ``hostbay worker`` writes its samples to files there and ``/metrics`` adds them up
(prometheus_client's multiprocess mode). The folder must be emptied when the processes start (the systemd units in
``deploy/`` do it); without it each process reports only itself, which is right for one process (the embedded
default).

What is counted where it happens (the counters are module globals, created once per process):
- HTTP requests by endpoint, method and status, with a latency histogram per endpoint (``web/metrics.py``);
- jobs by kind and outcome, with durations (the job runner);
- driver calls by driver and action, with latency (the driver-call template);
- wallet credits and debits by kind, counted after their transaction commits (the ledger);
- payment webhooks verified and rejected by gateway (the webhook pipeline);
- renewal sweep runs and the services they renewed, suspended and removed (the sweep).

What is read when scraped (the serving process asks the database and Redis): queue depth per queue and the
number of failed operations.
"""

from __future__ import annotations

import os

_dir = os.environ.get("HOSTBAY_METRICS_DIR")
if _dir and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    # prometheus_client picks its storage when it is first imported: set the folder before that
    os.makedirs(_dir, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _dir

from prometheus_client import (  # noqa: E402
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily  # noqa: E402

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
LONG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)

HTTP_REQUESTS = Counter("hostbay_http_requests_total", "HTTP requests answered, by endpoint, method and status.",
                        ["endpoint", "method", "status"])
HTTP_LATENCY = Histogram("hostbay_http_request_duration_seconds", "Time to answer an HTTP request, by endpoint.",
                         ["endpoint"], buckets=LATENCY_BUCKETS)
JOBS = Counter("hostbay_jobs_total", "Jobs (operations) run, by kind and outcome (succeeded, retrying, failed).",
               ["kind", "outcome"])
JOB_DURATION = Histogram("hostbay_job_duration_seconds", "Time one run of a job took, by kind.", ["kind"],
                         buckets=LONG_BUCKETS)
DRIVER_CALLS = Histogram("hostbay_driver_call_duration_seconds",
                         "Time of one driver call, by driver, action and outcome (ok, transient, fatal).",
                         ["driver", "action", "outcome"], buckets=LONG_BUCKETS)
WALLET_MOVEMENTS = Counter("hostbay_wallet_movements_total", "Committed ledger entries, by direction and kind.",
                           ["direction", "kind"])
WALLET_CENTS = Counter("hostbay_wallet_cents_total", "US cents moved by committed ledger entries, by direction "
                                                     "and kind.", ["direction", "kind"])
WEBHOOKS = Counter("hostbay_payment_webhooks_total", "Payment webhook deliveries, by gateway and result "
                                                     "(verified, rejected, duplicate).", ["gateway", "result"])
SWEEPS = Counter("hostbay_renewal_sweeps_total", "Renewal sweep runs.")
SWEEP_SERVICES = Counter("hostbay_renewal_sweep_services_total",
                         "Services the renewal and retention sweeps acted on, by outcome (renewed, suspended, "
                         "cancelled, removal_queued).",
                         ["outcome"])


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class _LiveCollector:
    """Gauges read at scrape time from the system of record (so every process agrees)."""

    def __init__(self, app):
        self.app = app

    def collect(self):
        from sqlalchemy import func, select

        from .db import db
        from .jobs import FAILED, QUEUED, RETRYING, RUNNING, Operation

        ops = GaugeMetricFamily("hostbay_operations", "Operations by state (queued, running, retrying, failed).",
                                labels=["state"])
        import contextlib

        from flask import has_app_context

        # inside the scrape request: its own session (a second one would wait on SQLite's write lock)
        with contextlib.nullcontext() if has_app_context() else self.app.app_context():
            rows = dict(db.session.execute(
                select(Operation.state, func.count()).where(Operation.state.in_((QUEUED, RUNNING, RETRYING, FAILED)))
                .group_by(Operation.state)).all())
        for state in (QUEUED, RUNNING, RETRYING, FAILED):
            ops.add_metric([state], rows.get(state, 0))
        yield ops
        if self.app.config.get("HOSTBAY_REDIS_URL"):
            depth = GaugeMetricFamily("hostbay_queue_depth", "Jobs waiting in each RQ queue.", labels=["queue"])
            try:
                from rq import Queue

                from .jobs import queue_names, redis_connection

                conn = redis_connection(self.app)
                for name in queue_names(self.app):
                    depth.add_metric([name], Queue(name, connection=conn).count)
            except Exception:  # noqa: BLE001 - Redis down: the gauge is absent, the scrape still answers
                return
            yield depth


def render(app) -> tuple[bytes, str]:
    """The exposition text of this process (or of all processes in multiprocess mode) plus the live gauges."""
    registry = CollectorRegistry()
    if multiprocess_dir():
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)
    else:
        from prometheus_client import REGISTRY

        for collector in list(REGISTRY._collector_to_names):  # noqa: SLF001 - this process's own metrics
            registry.register(collector)
    registry.register(_LiveCollector(app))
    return generate_latest(registry), CONTENT_TYPE_LATEST


def mark_process_dead(pid: int) -> None:
    """For gunicorn's ``child_exit``: drop a finished worker's live files."""
    if multiprocess_dir():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
