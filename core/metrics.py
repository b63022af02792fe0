"""Prometheus metrics (prometheus_client).

Several processes report into one scrape: with ``HOSTBAY_METRICS_DIR`` set (or ``PROMETHEUS_MULTIPROC_DIR``), every
gunicorn worker and every ``hostbay worker`` writes its samples to files there and ``/metrics`` adds them up
(prometheus_client's multiprocess mode). The folder must be emptied when the processes start (the systemd units in
``deploy/`` do it); without it each process reports only itself, which is right for one process (the embedded
default).

What is counted where it happens (the counters are module globals, created once per process):
- HTTP requests by endpoint, method and status, with a latency histogram per endpoint (``web/metrics.py``);
- jobs by kind and outcome, with durations (the job runner);
- driver calls by driver, action and outcome, with latency (the driver-call template, :func:`timed_driver_call`);
- wallet credits and debits by kind, counted once their transaction has committed (the ledger, through
  :func:`count_ledger_entry`: an entry whose transaction or SAVEPOINT rolled back is never counted);
- payment webhooks verified, rejected and duplicate by gateway (the webhook pipeline, :func:`counts_webhooks`);
- renewal sweep runs and the services they renewed, suspended and removed (the sweep);
- status probe results by probe, kind and result, with latency (the status plugin's probe sweep).

What is read when scraped (the serving process asks the database and Redis): operations by state (so the failed
ones), queue depth per queue and the workers seen on each queue. docs/operations.md lists every metric.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from functools import wraps

from . import config as _config

# prometheus_client picks its storage when it is first imported: set the folder before that (the config loader maps
# HOSTBAY_METRICS_DIR; no app exists yet at this point)
_config.prepare_metrics_dir()

from prometheus_client import (  # noqa: E402
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily  # noqa: E402

try:  # no *_created series beside every counter and histogram (multiprocess mode has none either)
    from prometheus_client import disable_created_metrics  # noqa: E402

    disable_created_metrics()
except ImportError:  # pragma: no cover - prometheus_client < 0.17
    pass

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
WEBHOOKS = Counter("hostbay_payment_webhooks_total", "Payment webhook deliveries, by gateway, result (verified, "
                   "rejected, duplicate, deferred) and the pipeline's outcome.", ["gateway", "result", "outcome"])
SWEEPS = Counter("hostbay_renewal_sweeps_total", "Renewal sweep runs.")
SWEEP_SERVICES = Counter("hostbay_renewal_sweep_services_total",
                         "Services the renewal and retention sweeps acted on, by outcome (renewed, suspended, "
                         "cancelled, removal_queued).",
                         ["outcome"])


# --------------------------------------------------------------------------------------------------------------
# Wallet movements: counted after commit
# --------------------------------------------------------------------------------------------------------------

_PENDING_ENTRIES = "hostbay_metrics_ledger"  # session.info: (entry id, direction, kind, cents) written so far
_COMMITTED_ENTRIES = "hostbay_metrics_ledger_committed"


def count_ledger_entry(session, entry) -> None:
    """Count ``entry`` (just flushed) in WALLET_MOVEMENTS / WALLET_CENTS once its transaction commits. Before the
    commit the entries still present in the transaction are looked up (one query per committing transaction that
    wrote entries), so an entry whose SAVEPOINT rolled back while the outer transaction went on is not counted
    either; a transaction that rolls back counts nothing."""
    direction = "credit" if entry.amount_cents > 0 else "debit"
    session.info.setdefault(_PENDING_ENTRIES, []).append((entry.id, direction, entry.kind, abs(entry.amount_cents)))


def _install_ledger_listeners() -> None:
    from sqlalchemy import event, select
    from sqlalchemy.orm import Session

    @event.listens_for(Session, "before_commit")
    def _confirm(session):
        if session.in_nested_transaction():  # a SAVEPOINT released: the outer work is not committed yet
            return
        pending = session.info.pop(_PENDING_ENTRIES, None)
        if not pending:
            return
        from .ledger import LedgerEntry

        # by id, the last write wins: SQLite hands a rolled-back SAVEPOINT's id to the next insert
        latest = {p[0]: p for p in pending}
        ids = list(latest)
        present = set()
        for start in range(0, len(ids), 5000):
            present.update(session.execute(select(LedgerEntry.id).where(LedgerEntry.id.in_(ids[start:start + 5000])))
                           .scalars())
        session.info[_COMMITTED_ENTRIES] = [latest[i] for i in ids if i in present]

    @event.listens_for(Session, "after_commit")
    def _count(session):
        if session.in_nested_transaction():
            return
        for _id, direction, kind, cents in session.info.pop(_COMMITTED_ENTRIES, None) or ():
            WALLET_MOVEMENTS.labels(direction, kind).inc()
            WALLET_CENTS.labels(direction, kind).inc(cents)

    @event.listens_for(Session, "after_soft_rollback")
    def _forget(session, previous_transaction):
        # the outermost transaction rolled back (``after_rollback`` fires while the session still counts as in
        # one); a SAVEPOINT's rollback is sorted out by the look-up before commit
        if previous_transaction.parent is None:
            session.info.pop(_PENDING_ENTRIES, None)
            session.info.pop(_COMMITTED_ENTRIES, None)


_install_ledger_listeners()


# --------------------------------------------------------------------------------------------------------------
# Payment webhooks
# --------------------------------------------------------------------------------------------------------------

# the pipeline's outcomes (payments.WebhookResult.outcome) -> the result label
WEBHOOK_RESULTS = {"processed": "verified", "duplicate": "duplicate", "retry": "deferred", "forged": "rejected",
                   "malformed": "rejected", "unknown_gateway": "rejected", "unknown_invoice": "rejected"}


def count_webhook(gateway: str, outcome: str) -> None:
    """One payment webhook delivery. The gateway label is an installed, enabled gateway's name, or ``unknown``
    (the URL's name is the sender's choice: it must not create label values)."""
    gateway = "unknown" if outcome == "unknown_gateway" else gateway
    WEBHOOKS.labels(gateway, WEBHOOK_RESULTS.get(outcome, "rejected"), outcome).inc()


def counts_webhooks(fn):
    """Decorates the webhook pipeline ``fn(gateway_name, headers, raw_body) -> WebhookResult``: counts each delivery
    by its outcome once the pipeline has answered (a processed delivery is committed by then)."""

    @wraps(fn)
    def wrapper(gateway_name, *args, **kwargs):
        result = fn(gateway_name, *args, **kwargs)
        count_webhook(gateway_name, result.outcome)
        return result

    return wrapper


# --------------------------------------------------------------------------------------------------------------
# Driver calls
# --------------------------------------------------------------------------------------------------------------

def driver_labels(fn) -> tuple[str, str]:
    """(driver, action) of a bound driver method: the driver's registered name and the method's name."""
    owner = getattr(fn, "__self__", None)
    driver = getattr(owner, "name", None) or (type(owner).__name__ if owner is not None else "unknown")
    return str(driver), str(getattr(fn, "__name__", "call"))


@contextmanager
def timed_driver_call(fn):
    """Time one driver call and count it by its outcome: ``ok``; ``transient`` for what the job layer retries
    (TransientDriverError, ConnectionError, TimeoutError); ``fatal`` for any other exception."""
    from .errors import TransientDriverError

    driver, action = driver_labels(fn)
    started, outcome = time.perf_counter(), "ok"
    try:
        yield
    except BaseException as exc:
        outcome = "transient" if isinstance(exc, (TransientDriverError, ConnectionError, TimeoutError)) else "fatal"
        raise
    finally:
        DRIVER_CALLS.labels(driver, action, outcome).observe(time.perf_counter() - started)


def multiprocess_dir() -> str | None:
    return _config.multiprocess_dir()


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
                names = queue_names(self.app)
                for name in names:
                    depth.add_metric([name], Queue(name, connection=conn).count)
                workers = self._workers(conn, names)
            except Exception:  # noqa: BLE001 - Redis down: the gauges are absent, the scrape still answers
                return
            yield depth
            yield workers

    @staticmethod
    def _workers(conn, names):
        """`hostbay worker`s whose RQ heartbeat is at most WORKER_SEEN_SECONDS old, per queue they serve."""
        from rq import Worker

        from .checks import WORKER_SEEN_SECONDS

        gauge = GaugeMetricFamily("hostbay_workers", f"`hostbay worker` processes seen in the last "
                                  f"{WORKER_SEEN_SECONDS} s (RQ heartbeat), by queue they serve.", labels=["queue"])
        now = time.time()
        live = [w for w in Worker.all(connection=conn)
                if w.last_heartbeat and now - w.last_heartbeat.timestamp() <= WORKER_SEEN_SECONDS]
        for name in names:
            gauge.add_metric([name], sum(1 for w in live if name in w.queue_names()))
        return gauge


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
