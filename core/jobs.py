"""The job layer: one enqueue facade over RQ (when ``HOSTBAY_REDIS_URL`` is set) or in-process execution.

Every job is an ``Operation`` row: its kind, payload, state (queued, running, retrying, succeeded, failed),
progress (percent and customer-safe text), attempts and errors. The row is what customers see as live progress and
what staff retry. Running an operation is idempotent on its id: a finished operation is never run again, and a
running one is claimed by exactly one worker (a stale claim, from a worker that died, is taken over after
``STALE_SECONDS``). Handlers must themselves be safe to re-run after a crash (see each handler's docstring).

Dispatch happens after the enqueuing transaction commits, so a worker never sees an operation whose business
data is not yet visible.

Modes (``HOSTBAY_JOBS``): ``rq``; ``thread`` (a small in-process pool, the embedded default); ``sync`` (run at
commit, in a fresh app context, before the request returns: tests); ``manual`` (stay queued until
:func:`run_pending` is called: tests that look at intermediate states).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Callable

from flask import current_app, has_app_context
from sqlalchemy import JSON, ForeignKey, String, Text, event, or_, select, update
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column
from sqlalchemy.orm.attributes import set_committed_value

from . import clock, logs
from .db import db, new_uuid
from .errors import HostbayError, TransientDriverError

log = logging.getLogger(__name__)

QUEUED, RUNNING, RETRYING, SUCCEEDED, FAILED = "queued", "running", "retrying", "succeeded", "failed"
FINISHED = (SUCCEEDED, FAILED)
STALE_SECONDS = 600  # default of HOSTBAY_STALE_SECONDS
RETRY_DELAYS = (5, 30, 120, 600)
SCHEDULER_TICK = 10.0  # default of HOSTBAY_SCHEDULER_TICK

# Queue classes, in the priority order a worker serving several takes jobs in. Money and lifecycle (renewal
# sweeps, suspensions, removals, wallet and payment work) never wait behind driver calls (provisioning, power,
# reinstalls, ISO, rDNS), and neither waits behind notifications, probes and housekeeping.
MONEY, DRIVER, NOTIFY = "money", "driver", "notify"
QUEUE_CLASSES = (MONEY, DRIVER, NOTIFY)
DEFAULT_QUEUE_CLASS = DRIVER  # a handler that declares none: the queue built for slow work


def handler(kind: str, *, every: int | None = None, queue: str | None = None):
    """Mark ``fn(op, payload)`` as the handler of job ``kind`` (run every ``every`` seconds by the scheduler when
    given) and declare its queue class (``"money"``, ``"driver"`` or ``"notify"``; unmarked: ``"driver"``).
    Marking registers nothing: core's built-in plugin (``hostbay.core.builtin``) contributes the marked functions
    of core's modules through ``hostbay_job_handlers`` / ``hostbay_scheduled_jobs``, like any plugin; a plugin
    marks its handlers the same way to choose their queue."""
    if queue is not None and queue not in QUEUE_CLASSES:
        raise ValueError(f"unknown queue class {queue!r} for job {kind!r}: one of {', '.join(QUEUE_CLASSES)}")

    def deco(fn):
        fn.hostbay_job_kind = kind
        fn.hostbay_every = every
        fn.hostbay_queue = queue
        return fn
    return deco


def stale_seconds(app=None) -> float:
    """Seconds without a heartbeat after which a running operation's claim counts as a dead worker's
    (``HOSTBAY_STALE_SECONDS``, default :data:`STALE_SECONDS`)."""
    if app is None and has_app_context():
        app = current_app
    value = app.config.get("HOSTBAY_STALE_SECONDS") if app is not None else None
    return float(value) if value else float(STALE_SECONDS)


def queue_class(kind: str, app=None) -> str:
    """The queue class of job ``kind``: what its handler declared (see :func:`handler`), else ``"driver"``."""
    app = app or current_app
    fn = app.extensions["hostbay"].job_handlers.get(kind)
    return getattr(fn, "hostbay_queue", None) or DEFAULT_QUEUE_CLASS


def queue_name(cls: str, app=None) -> str:
    """The RQ queue of a class: ``<HOSTBAY_QUEUE>-<class>`` (``hostbay-money``, ``hostbay-driver``, ...)."""
    app = app or current_app
    return f"{app.config['HOSTBAY_QUEUE']}-{cls}"


def parse_queue_classes(values) -> list[str]:
    """Queue classes from ``--queue`` options or ``HOSTBAY_WORKER_QUEUES`` (comma-separated; ``all`` or nothing:
    every class), in priority order. Raises ValueError naming an unknown class."""
    wanted = {v.strip() for value in values or () for v in str(value).split(",") if v.strip()}
    if not wanted or "all" in wanted:
        return list(QUEUE_CLASSES)
    unknown = sorted(wanted - set(QUEUE_CLASSES))
    if unknown:
        raise ValueError(f"unknown queue {', '.join(unknown)}: choose from {', '.join(QUEUE_CLASSES)} or all")
    return [c for c in QUEUE_CLASSES if c in wanted]


def _utcnow() -> datetime:
    # Heartbeats use the real clock even when tests move the business clock.
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Operation(db.Model):
    __tablename__ = "operations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uuid)
    key: Mapped[str] = mapped_column(String(200), unique=True)  # idempotency: one operation per key
    kind: Mapped[str] = mapped_column(String(64), index=True)
    service_id: Mapped[int | None] = mapped_column(ForeignKey("services.id"), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    payload: Mapped[dict] = mapped_column(JSON, default=dict)
    state: Mapped[str] = mapped_column(String(16), default=QUEUED, index=True)
    title: Mapped[str] = mapped_column(String(120), default="")  # customer-safe, e.g. "Reinstall"
    progress_pct: Mapped[int] = mapped_column(default=0)
    progress_text: Mapped[str] = mapped_column(String(255), default="Queued")
    attempts: Mapped[int] = mapped_column(default=0)
    max_attempts: Mapped[int] = mapped_column(default=4)
    error: Mapped[str | None] = mapped_column(Text)  # admin detail
    customer_error: Mapped[str | None] = mapped_column(String(255))
    result: Mapped[dict | None] = mapped_column(JSON)
    run_after: Mapped[datetime | None] = mapped_column()
    heartbeat_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=_utcnow)
    finished_at: Mapped[datetime | None] = mapped_column()

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    def progress(self, pct: int, text: str) -> None:
        """Record progress at once, outside the handler's transaction, so the panel shows it live."""
        pct = max(0, min(100, int(pct)))
        ident = sa_inspect(self).identity  # the key without reloading an expired row (SQLite: one writer)
        op_id = ident[0] if ident else self.id
        stmt = (update(Operation.__table__).where(Operation.__table__.c.id == op_id)
                .values(progress_pct=pct, progress_text=text[:255], heartbeat_at=_utcnow()))
        if db.engine.dialect.name == "sqlite" and db.session().in_transaction():
            # SQLite has one writer: while the handler's transaction holds it, write through that transaction.
            # (Handlers commit before slow driver calls, so progress is usually seen live there too.)
            db.session.execute(stmt)
        else:
            with db.engine.begin() as conn:
                conn.execute(stmt)
        # what the row now holds, not a pending change: a later flush of the handler's session must not write (and
        # so lock) the operation row again, or the next progress write on its own connection would wait for it
        set_committed_value(self, "progress_pct", pct)
        set_committed_value(self, "progress_text", text[:255])


# --------------------------------------------------------------------------------------------------------------
# Enqueue
# --------------------------------------------------------------------------------------------------------------

def enqueue(kind: str, *, key: str | None = None, payload: dict | None = None, service=None, user_id=None,
            title: str = "", max_attempts: int = 4, front: bool = False) -> Operation:
    """Create (or, for a known ``key``, return) the operation; it is dispatched when the transaction commits, to
    the queue of its kind's class (``front``: at the head of that queue, for the scheduler's periodic sweeps)."""
    key = key or f"{kind}:{new_uuid()}"
    existing = db.session.scalar(select(Operation).filter_by(key=key))
    if existing is not None:
        return existing
    op = Operation(key=key, kind=kind, payload=payload or {}, title=title or kind,
                   service_id=getattr(service, "id", None),
                   user_id=user_id if user_id is not None else getattr(service, "user_id", None),
                   max_attempts=max_attempts)
    try:
        with db.session.begin_nested():
            db.session.add(op)
    except IntegrityError:
        return db.session.scalar(select(Operation).filter_by(key=key))
    dispatch_after_commit([op.id], kind, front=front)
    return op


def dispatch_after_commit(op_ids, kind: str | None = None, *, front: bool = False,
                          background: bool = False) -> None:
    """Dispatch operations inserted in the current transaction once it commits (never if it rolls back).
    ``kind`` (when all share one) routes them without looking their kinds up again. ``background``: in ``rq``
    mode the push runs on the process's dispatch thread (:class:`_BackgroundDispatch`) while the caller goes on
    with its next transaction; the caller waits for it with :func:`wait_background_dispatch` before it reports
    done (a renewal sweep's batches). A push lost with the process is made up by :func:`run_stale_recovery`: the
    operations are committed rows, and queued ones older than two minutes that wait in no queue are pushed again."""
    info = db.session.info
    info.setdefault("hostbay_dispatch", []).extend(op_ids)
    if background:
        info["hostbay_dispatch_background"] = True
    if kind is not None or front:
        meta = info.setdefault("hostbay_dispatch_meta", {})
        for op_id in op_ids:
            meta[op_id] = (kind, front)


def notify_after_commit(hook_name: str, loader: Callable[[], dict]) -> None:
    """Fire the event hook ``hook_name`` once the current transaction has committed (never if it rolls back), as
    the hook specs promise. ``loader`` runs after the commit, in a fresh app context with its own session, and
    returns the hook's keyword arguments (load the objects anew there, by id). The one event mechanism: it fires
    through :meth:`hostbay.core.plugins.Registry.notify` (pluggy's hook caller, each listener isolated)."""
    db.session.info.setdefault("hostbay_events", []).append((hook_name, loader))


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    if session.in_nested_transaction():  # a SAVEPOINT released (e.g. by enqueue): the outer work is not committed
        return
    ids = session.info.pop("hostbay_dispatch", None)
    meta = session.info.pop("hostbay_dispatch_meta", None) or {}
    background = session.info.pop("hostbay_dispatch_background", False)
    events = session.info.pop("hostbay_events", None)
    if not ids and not events:
        return
    app = current_app._get_current_object()
    if ids and background and app.config["HOSTBAY_JOBS"] == "rq":
        _BACKGROUND.submit(app, ids, meta)
    elif ids:
        dispatch_many(app, ids, meta=meta)
    for hook_name, loader in events or ():
        with app.app_context():  # a new session: the committed one can emit no SQL inside this event
            try:
                # through pluggy's hook caller; each listener runs in its own SAVEPOINT and a failing one is
                # logged while the others run (see plugins._isolated)
                app.extensions["hostbay"].notify(hook_name, **loader())
                db.session.commit()
            except Exception:  # noqa: BLE001 - the change is committed; a listener's failure must not undo it
                db.session.rollback()
                log.exception("after-commit event %s failed", hook_name)


@event.listens_for(Session, "after_soft_rollback")
def _after_rollback(session: Session, previous_transaction) -> None:
    # the outermost transaction rolled back: what it enqueued and announced is gone with it (``after_rollback``
    # fires while the session still counts as in the transaction, so it cannot tell)
    if previous_transaction.parent is None:
        session.info.pop("hostbay_dispatch", None)
        session.info.pop("hostbay_dispatch_meta", None)
        session.info.pop("hostbay_dispatch_background", None)
        session.info.pop("hostbay_events", None)


def _rq_job_kwargs(op_id: str) -> dict:
    return dict(job_id=f"op-{op_id}-{int(time.time() * 1000)}", job_timeout=3600, result_ttl=3600,
                failure_ttl=86400)


def _kinds_of(app, op_ids) -> dict[str, str]:
    """The kinds of operations, read on a connection of their own (the committing session emits no SQL here)."""
    t = Operation.__table__
    out: dict[str, str] = {}
    with app.app_context(), db.engine.connect() as conn:
        for start in range(0, len(op_ids), 1000):
            out.update(conn.execute(select(t.c.id, t.c.kind).where(t.c.id.in_(op_ids[start:start + 1000]))).all())
    return out


def _route(app, op_ids, meta: dict | None = None) -> dict[tuple[str, bool], list[str]]:
    """Group operations by (queue name, at front) in their order."""
    meta = meta or {}
    unknown = [i for i in op_ids if (meta.get(i) or (None,))[0] is None]
    kinds = _kinds_of(app, unknown) if unknown else {}
    classes: dict[str, str] = {}
    groups: dict[tuple[str, bool], list[str]] = {}
    for op_id in op_ids:
        kind, front = meta.get(op_id) or (None, False)
        kind = kind or kinds.get(op_id) or ""
        if kind not in classes:
            classes[kind] = queue_class(kind, app)
        groups.setdefault((queue_name(classes[kind], app), front), []).append(op_id)
    return groups


def dispatch_many(app, op_ids: list[str], batch: int = 1000, meta: dict | None = None) -> None:
    """Dispatch several operations at once: in ``rq`` mode each goes to the queue of its kind's class, pushed in
    one Redis pipeline per ``batch`` (one round trip instead of one per job: a renewal sweep that suspends
    thousands of services); other modes dispatch each as :func:`dispatch` does. ``meta`` maps an id to
    ``(kind, at front)`` when the caller knows them (else the kinds are read in one query)."""
    if app.config["HOSTBAY_JOBS"] != "rq":
        for op_id in op_ids:
            dispatch(app, op_id)
        return
    from rq import Queue

    conn = redis_connection(app)
    for (name, front), ids in _route(app, op_ids, meta).items():
        q = Queue(name, connection=conn)
        for start in range(0, len(ids), batch):
            chunk = ids[start:start + batch]
            with conn.pipeline() as pipe:
                datas = []
                for op_id in chunk:
                    kw = _rq_job_kwargs(op_id)
                    datas.append(Queue.prepare_data("hostbay.core.jobs.rq_entry", (op_id,),
                                                    timeout=kw["job_timeout"], result_ttl=kw["result_ttl"],
                                                    failure_ttl=kw["failure_ttl"], job_id=kw["job_id"],
                                                    at_front=front))
                q.enqueue_many(datas, pipeline=pipe)
                pipe.execute()


class _BackgroundDispatch:
    """One thread per process that pushes committed operations to Redis in the order they were handed over, so
    that a caller committing batch after batch (the renewal sweep) prepares its next batch while the last one's
    jobs are pushed. A failed push is logged; the operations stay queued in the table for
    :func:`run_stale_recovery`."""

    def __init__(self):
        import queue

        self._lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None

    def submit(self, app, op_ids: list[str], meta: dict) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, daemon=True, name="hostbay-dispatch")
                self._thread.start()
        self._queue.put((app, op_ids, meta))

    def _run(self) -> None:
        while True:
            app, op_ids, meta = self._queue.get()
            try:
                dispatch_many(app, op_ids, meta=meta)
            except Exception:  # noqa: BLE001 - the rows are committed: stale recovery pushes them again
                log.exception("pushing %d operations to their queues failed; stale recovery will push them again",
                              len(op_ids))
            finally:
                self._queue.task_done()

    def wait(self) -> None:
        self._queue.join()


_BACKGROUND = _BackgroundDispatch()


def wait_background_dispatch() -> None:
    """Return once every operation handed to the dispatch thread (``dispatch_after_commit(background=True)``) has
    been pushed (or its push has failed and been logged)."""
    _BACKGROUND.wait()


def dispatch(app, op_id: str, delay: float = 0, kind: str | None = None) -> None:
    """Hand one operation to the job mode (``rq``: the queue of its kind's class, after ``delay`` seconds)."""
    mode = app.config["HOSTBAY_JOBS"]
    if mode == "rq":
        from rq import Queue

        if kind is None:
            kind = _kinds_of(app, [op_id]).get(op_id, "")
        q = Queue(queue_name(queue_class(kind, app), app), connection=redis_connection(app))
        kw = _rq_job_kwargs(op_id)
        if delay:
            q.enqueue_in(timedelta(seconds=delay), "hostbay.core.jobs.rq_entry", op_id, **kw)
        else:
            q.enqueue("hostbay.core.jobs.rq_entry", op_id, **kw)
    elif mode == "thread":
        pool = app.extensions.setdefault("hostbay.pool", ThreadPoolExecutor(4, thread_name_prefix="hostbay-job"))
        if delay:  # a timer, not a sleeping pool thread: waiting retries must not starve the pool
            timer = threading.Timer(delay, pool.submit, args=(_run_in_context, app, op_id))
            timer.daemon = True
            timer.start()
        else:
            pool.submit(_run_in_context, app, op_id)
    elif mode == "sync":
        if delay:  # a retry in sync mode is left for run_pending / the stale sweep
            return
        t = threading.Thread(target=_run_in_context, args=(app, op_id))
        t.start()
        t.join()
    elif mode == "manual":
        pass
    else:
        raise RuntimeError(f"unknown HOSTBAY_JOBS mode {mode!r}")


# --------------------------------------------------------------------------------------------------------------
# The driver-call template
# --------------------------------------------------------------------------------------------------------------

def heartbeat_interval(app=None) -> float:
    return max(0.05, min(60.0, stale_seconds(app) / 4))


class _Heartbeats:
    """One thread per process keeps the claims of every driver call in progress fresh (a thread started and joined
    per call cost more than the call's bookkeeping on a busy worker). It wakes when a call registers, so a changed
    :func:`heartbeat_interval` takes effect at once, and writes one UPDATE per app for all its operations."""

    def __init__(self):
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._ops: dict[str, list] = {}  # op id -> [app, blocks running, registered at]
        self._thread: threading.Thread | None = None

    def add(self, app, op_id: str) -> None:
        with self._lock:
            entry = self._ops.setdefault(op_id, [app, 0, time.monotonic()])
            entry[1] += 1
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, daemon=True, name="hostbay-heartbeat")
                self._thread.start()
            self._wake.notify()

    def remove(self, op_id: str) -> None:
        with self._lock:
            entry = self._ops.get(op_id)
            if entry is not None:
                entry[1] -= 1
                if entry[1] <= 0:
                    del self._ops[op_id]

    def _run(self) -> None:
        while True:
            with self._lock:
                self._wake.wait(min((heartbeat_interval(e[0]) for e in self._ops.values()),
                                    default=heartbeat_interval()))
                now, intervals = time.monotonic(), {}
                due: dict = {}
                for op_id, entry in self._ops.items():
                    app = entry[0]
                    if id(app) not in intervals:  # each app's own HOSTBAY_STALE_SECONDS
                        intervals[id(app)] = heartbeat_interval(app)
                    if now - entry[2] >= intervals[id(app)]:  # beats every interval after the call started
                        entry[2] = now
                        due.setdefault(entry[0], []).append(op_id)
            for app, ids in due.items():
                try:
                    with app.app_context(), db.engine.begin() as conn:
                        conn.execute(update(Operation.__table__).where(Operation.__table__.c.id.in_(ids),
                                                                        Operation.__table__.c.state == RUNNING)
                                     .values(heartbeat_at=_utcnow()))
                except Exception:  # noqa: BLE001 - a missed beat is retried at the next interval
                    log.warning("heartbeat of operations %s failed", ids, exc_info=True)


_HEARTBEATS = _Heartbeats()


@contextmanager
def heartbeat(op_id: str):
    """Keep ``op_id``'s claim fresh while the block runs: ``heartbeat_at`` is written every
    :func:`heartbeat_interval` seconds on its own connection (by the process's heartbeat thread), so a live call
    longer than ``STALE_SECONDS`` is never taken over as a dead worker's. Beats stop with the block (and with the
    process)."""
    _HEARTBEATS.add(current_app._get_current_object(), op_id)
    try:
        yield
    finally:
        _HEARTBEATS.remove(op_id)


def call_driver(op: Operation, fn: Callable, *args, pct: int | None = None, text: str | None = None, **kwargs):
    """The one template for a driver call inside a job handler:

    1. record progress (``pct``, ``text``: customer-safe) when given;
    2. end the handler's transaction (its arguments are computed already): no row lock, and on SQLite no write
       lock, is held while a server starts, stops or is rebuilt;
    3. call ``fn(*args, **kwargs)`` with the operation's heartbeat kept alive;
    4. map errors: driver errors pass unchanged; ``NotImplementedError`` becomes a FatalDriverError (the driver
       lacks the primitive), ``ConnectionError``/``TimeoutError`` a TransientDriverError (retried with back-off).
    Returns what the driver returned. Reload rows after it: the session was committed."""
    from . import metrics
    from .errors import DriverError, FatalDriverError

    if text is not None:
        op.progress(op.progress_pct if pct is None else pct, text)
    db.session.commit()  # after the progress write: reading the operation's expired attributes would begin anew
    try:
        with heartbeat(sa_inspect(op).identity[0] if sa_inspect(op).identity else op.id), \
                metrics.timed_driver_call(fn):  # hostbay_driver_call_duration_seconds{driver, action, outcome}
            return fn(*args, **kwargs)
    except DriverError:
        raise
    except NotImplementedError as exc:
        raise FatalDriverError(f"{getattr(fn, '__qualname__', fn)} is not implemented by this driver: {exc}",
                               customer_message="This server's platform does not support this action.") from exc
    except (ConnectionError, TimeoutError) as exc:
        raise TransientDriverError(f"{type(exc).__name__}: {exc}") from exc


def _run_in_context(app, op_id: str) -> None:
    with app.app_context():
        run_operation(op_id)


def redis_connection(app=None):
    app = app or current_app
    conn = app.extensions.get("hostbay.redis")
    if conn is None:
        from redis import Redis

        conn = app.extensions["hostbay.redis"] = Redis.from_url(app.config["HOSTBAY_REDIS_URL"])
    return conn


# --------------------------------------------------------------------------------------------------------------
# Run
# --------------------------------------------------------------------------------------------------------------

def _handler_for(kind: str) -> Callable:
    fn = current_app.extensions["hostbay"].job_handlers.get(kind)
    if fn is None:
        raise LookupError(f"no job handler for {kind!r}")
    return fn


def _claim(op_id: str) -> bool:
    now = _utcnow()
    stale = now - timedelta(seconds=stale_seconds())
    res = db.session.execute(
        update(Operation).where(Operation.id == op_id, or_(
            Operation.state.in_((QUEUED, RETRYING)),
            (Operation.state == RUNNING) & (Operation.heartbeat_at < stale)))
        .values(state=RUNNING, attempts=Operation.attempts + 1, heartbeat_at=now)
        .execution_options(synchronize_session=False))
    db.session.commit()
    return res.rowcount == 1


def run_operation(op_id: str) -> str:
    """Run one operation if it is not finished or being run elsewhere. Returns its resulting state."""
    if not _claim(op_id):
        op = db.session.get(Operation, op_id)
        return op.state if op else "missing"
    _claims.held = op_id  # cleared when the outcome is recorded (see rq_entry)
    op = db.session.get(Operation, op_id, populate_existing=True)  # the claimed row as written, one SELECT
    payload = dict(op.payload or {})
    log_context = logs.bind(operation_id=op.id, service_uuid=_service_uuid(op.service_id))
    db.session.commit()  # no transaction (and no lock) is held when the handler starts
    kind, started = op.kind, time.perf_counter()
    outcome = FAILED
    try:
        outcome = _run_claimed(op, op_id, payload)
        _claims.held = None
        return outcome
    finally:
        from . import metrics

        metrics.JOBS.labels(kind, outcome).inc()
        metrics.JOB_DURATION.labels(kind).observe(time.perf_counter() - started)
        logs.unbind(log_context)


def queue_names(app=None, classes=None) -> list[str]:
    """The RQ queues hostbay's jobs go to (of ``classes``, default all), in priority order."""
    app = app or current_app
    return [queue_name(c, app) for c in (classes or QUEUE_CLASSES)]


def _service_uuid(service_id: int | None) -> str | None:
    if service_id is None:
        return None
    from .services import Service

    return db.session.scalar(db.select(Service.uuid).where(Service.id == service_id))


def _run_claimed(op: Operation, op_id: str, payload: dict) -> str:
    try:
        result = _handler_for(op.kind)(op, payload)
        op = db.session.get(Operation, op_id)
        op.state, op.finished_at, op.progress_pct = SUCCEEDED, _utcnow(), 100
        # a finished operation says what happened ("Stopped"), never the last step's intention ("Stopping")
        op.progress_text = str((result or {}).get("text") or "Done")[:255] if isinstance(result, dict) else "Done"
        op.result = result if isinstance(result, dict) else None
        db.session.commit()
        return SUCCEEDED
    except Exception as exc:  # noqa: BLE001 - every failure is recorded on the operation
        _rollback_after(exc)
        op = db.session.get(Operation, op_id)
        transient = isinstance(exc, TransientDriverError) or _lost_database(exc)
        op.error = f"{type(exc).__name__}: {exc}"
        op.customer_error = exc.customer_message if isinstance(exc, HostbayError) else \
            "The operation could not be completed. Our staff have been notified."
        if transient and op.attempts < op.max_attempts:
            delay = RETRY_DELAYS[min(op.attempts - 1, len(RETRY_DELAYS) - 1)]
            op.state, op.progress_text = RETRYING, "Waiting to try again"
            op.run_after = _utcnow() + timedelta(seconds=delay)
            db.session.commit()
            log.warning("operation %s (%s) will retry in %ss: %s", op.id, op.kind, delay, op.error)
            dispatch(current_app._get_current_object(), op_id, delay=delay, kind=op.kind)
            return RETRYING
        op.state, op.finished_at = FAILED, _utcnow()
        op.progress_text = "Failed"
        from .activity import audit

        audit("operation.failed", "operation", op.id, detail=op.error)
        notify_after_commit("hostbay_operation_failed",
                            lambda: {"operation": db.session.get(Operation, op_id)})
        db.session.commit()
        log.error("operation %s (%s) failed: %s", op.id, op.kind, op.error,
                  exc_info=not isinstance(exc, HostbayError))
        return FAILED


def _lost_database(exc: BaseException) -> bool:
    """The handler's database connection broke (terminated, failed over, restarted): its transaction was rolled
    back whole, so the operation is retried like a transient driver error."""
    from sqlalchemy.exc import DBAPIError, OperationalError

    if isinstance(exc, OperationalError) or (isinstance(exc, DBAPIError) and exc.connection_invalidated):
        return True
    try:  # bulk statements run on the driver's connection: its errors arrive unwrapped
        import psycopg
    except ImportError:  # pragma: no cover - SQLite installs
        return False
    return isinstance(exc, psycopg.OperationalError)


def _rollback_after(exc: BaseException) -> None:
    """Roll the handler's transaction back; when the connection itself is gone, drop the session (its pool
    connection is invalidated) so the failure is recorded on a new one."""
    try:
        db.session.rollback()
    except Exception as again:
        if not (_lost_database(exc) or _lost_database(again)):
            raise
        log.warning("database connection lost during a job: %s", again)
        db.session.remove()


def retry(op: Operation, actor=None) -> Operation:
    """Staff action: run a failed operation again (same id, attempts reset)."""
    from .activity import audit

    if op.state != FAILED:
        raise HostbayError("only failed operations can be retried")
    before = {"state": op.state, "attempts": op.attempts, "error": op.error}
    op.state, op.attempts, op.finished_at, op.progress_text = QUEUED, 0, None, "Queued"
    op.progress_pct, op.error, op.customer_error = 0, None, None
    # the handler runs again and learns it is a staff retry (it redoes a step a failure had closed)
    op.payload = {**(op.payload or {}), "retried": int((op.payload or {}).get("retried", 0)) + 1}
    audit("operation.retry", "operation", op.id, actor=actor, before=before,
          after={"state": QUEUED, "attempts": 0, "error": None})
    dispatch_after_commit([op.id], op.kind)
    return op


def run_pending(limit: int = 1000) -> int:
    """Run queued and due retrying operations in this process (manual mode, CLI, stale-claim recovery)."""
    ran = 0
    now = _utcnow()
    stale = now - timedelta(seconds=stale_seconds())
    while ran < limit:
        op_id = db.session.scalar(
            select(Operation.id).where(or_(
                Operation.state == QUEUED,
                (Operation.state == RETRYING) & or_(Operation.run_after.is_(None), Operation.run_after <= now),
                (Operation.state == RUNNING) & (Operation.heartbeat_at < stale)))
            .order_by(Operation.created_at).limit(1))
        if op_id is None:
            break
        run_operation(op_id)
        ran += 1
    return ran


DB_BACKOFF_MAX = 30.0
_claims = threading.local()


def rq_entry(op_id: str) -> str:
    """What an RQ worker runs: the worker process holds an app context (see ``hostbay worker``).

    When the database is unreachable the worker backs off (1 s, doubling up to :data:`DB_BACKOFF_MAX`) and tries
    again instead of failing the job, so a queue waiting in Redis resumes when the database returns; a claim this
    worker took before the connection broke is released first, so the operation runs again rather than waiting
    for the stale-claim sweep."""
    wait = 1.0
    while True:
        try:
            if getattr(_claims, "held", None) == op_id:
                _release_claim(op_id)
            return run_operation(op_id)
        except Exception as exc:
            if not _lost_database(exc):
                raise
            _rollback_after(exc)
            log.warning("database unreachable; operation %s waits %.0f s: %s", op_id, wait, type(exc).__name__)
        time.sleep(wait)
        wait = min(DB_BACKOFF_MAX, wait * 2)


def _release_claim(op_id: str) -> None:
    db.session.execute(update(Operation).where(Operation.id == op_id, Operation.state == RUNNING)
                       .values(state=RETRYING, run_after=None, attempts=Operation.attempts - 1)
                       .execution_options(synchronize_session=False))
    db.session.commit()
    _claims.held = None


# --------------------------------------------------------------------------------------------------------------
# Scheduling
# --------------------------------------------------------------------------------------------------------------

def schedule_due(now_ts: float | None = None) -> list[Operation]:
    """Enqueue each scheduled kind once per period. Safe with many schedulers: the period is in the key."""
    now_ts = time.time() if now_ts is None else now_ts
    entries = current_app.extensions["hostbay"].schedules  # core's and the plugins', gathered with the registry
    ops = []
    for kind, every in entries:
        period = int(now_ts // every)
        # at the head of its queue: a periodic sweep (renewals) never waits behind the work a previous one queued
        ops.append(enqueue(kind, key=f"schedule:{kind}:{period}", title=kind, front=True))
    db.session.commit()
    return ops


def scheduler_tick(app) -> float:
    """Seconds between two scheduler ticks (``HOSTBAY_SCHEDULER_TICK``, default :data:`SCHEDULER_TICK`): a
    periodic job is enqueued at most this long after its period starts."""
    return float(app.config.get("HOSTBAY_SCHEDULER_TICK") or SCHEDULER_TICK)


def scheduler_loop(app, stop: threading.Event, tick: float | None = None) -> None:
    tick = scheduler_tick(app) if tick is None else tick
    while not stop.is_set():
        try:
            with app.app_context():
                schedule_due()
                run_stale_recovery()
        except Exception:  # noqa: BLE001 - the loop must survive a database hiccup
            log.exception("scheduler tick failed")
        stop.wait(tick)


def start_in_process_scheduler(app) -> threading.Event | None:
    """Thread job mode has no ``hostbay worker``: the web process runs the periodic enqueuer itself (renewals,
    sweeps, notices, stale recovery), once per process. Returns the thread's stop event."""
    with _SCHEDULER_LOCK:
        stop = app.extensions.get("hostbay.scheduler")
        if stop is None:
            stop = app.extensions["hostbay.scheduler"] = threading.Event()
            threading.Thread(target=scheduler_loop, args=(app, stop), daemon=True,
                             name="hostbay-scheduler").start()
    return stop


_SCHEDULER_LOCK = threading.Lock()


def run_stale_recovery() -> None:
    """Re-dispatch operations whose worker died (stale heartbeat) and retries that are due."""
    now = _utcnow()
    stale = now - timedelta(seconds=stale_seconds())
    rows = db.session.execute(select(Operation.id, Operation.kind, Operation.state).where(or_(
        (Operation.state == RUNNING) & (Operation.heartbeat_at < stale),
        (Operation.state == RETRYING) & (Operation.run_after < now - timedelta(seconds=60)),
        (Operation.state == QUEUED) & (Operation.created_at < now - timedelta(seconds=120))))).all()
    app = current_app._get_current_object()
    waiting: set[str] = set()
    if app.config["HOSTBAY_JOBS"] == "rq" and any(state != RUNNING for _, _, state in rows):
        waiting = _waiting_in_redis(app)
    for op_id, kind, state in rows:
        if state != RUNNING and op_id in waiting:
            continue  # still in its queue (behind a backlog): pushing it again would only add a duplicate
        dispatch(app, op_id, kind=kind)


def _waiting_in_redis(app) -> set[str]:
    """Ids of the operations whose RQ job waits in one of hostbay's queues (job ids are ``op-<id>-<ms>``)."""
    from rq import Queue

    conn = redis_connection(app)
    out: set[str] = set()
    for name in queue_names(app):
        for job_id in conn.lrange(Queue(name, connection=conn).key, 0, -1):
            job_id = job_id.decode() if isinstance(job_id, bytes) else job_id
            if job_id.startswith("op-"):
                out.add(job_id[3:].rsplit("-", 1)[0])
    return out


@handler("core.ping", queue=NOTIFY)
def _ping(op: Operation, payload: dict) -> dict:
    """A no-op job that proves the job path end to end (health checks, tests)."""
    op.progress(50, "Pong")
    return {"pong": payload.get("value"), "pid": __import__("os").getpid()}
