"""Queues by class: every handler declares its class where it is declared (core's, the bundled plugins'), a bad
class is refused, the one dispatch path routes single and batched jobs to their class's queue in Redis (the
scheduler's periodic jobs at the head), and ``hostbay worker --queue`` takes classes."""
import os
import uuid

import pytest

from hostbay.core import config, jobs
from hostbay.core.hookspecs import hookimpl
from hostbay.core.plugins import build_registry

EXPECTED = {
    "lifecycle.renewal_sweep": jobs.MONEY, "lifecycle.retention_sweep": jobs.MONEY,
    "lifecycle.retry_renewals": jobs.MONEY, "service.suspend": jobs.MONEY, "service.unsuspend": jobs.MONEY,
    "service.remove": jobs.MONEY, "payments.reconcile_stale": jobs.MONEY,
    "service.provision": jobs.DRIVER, "service.start": jobs.DRIVER, "service.stop": jobs.DRIVER,
    "service.restart": jobs.DRIVER, "service.reinstall": jobs.DRIVER, "service.resize": jobs.DRIVER,
    "service.rebuild": jobs.DRIVER, "service.mount_iso": jobs.DRIVER, "service.eject_iso": jobs.DRIVER,
    "rdns.apply": jobs.DRIVER, "network.apply_filter": jobs.DRIVER, "proxmox.remove_iso": jobs.DRIVER,
    "kvm.antispoof_resync": jobs.DRIVER,
    "fake.wait": jobs.DRIVER,
    "lifecycle.notices": jobs.NOTIFY, "rdns.recheck": jobs.NOTIFY, "status.probe_sweep": jobs.NOTIFY,
    "status.tick": jobs.NOTIFY, "status.rollup": jobs.NOTIFY, "console.purge_tokens": jobs.NOTIFY,
}


@pytest.fixture
def rq_queues(app):
    """The app in ``rq`` job mode on the test Redis with queues of its own: ``(connection, queue prefix)``; their
    keys are removed afterwards."""
    redis_url = os.environ.get("HOSTBAY_TEST_REDIS_URL")
    if not redis_url:
        pytest.skip("HOSTBAY_TEST_REDIS_URL is not set")
    prefix = f"hostbay-q-{uuid.uuid4().hex[:8]}"
    app.config.update(HOSTBAY_JOBS="rq", HOSTBAY_REDIS_URL=redis_url, HOSTBAY_QUEUE=prefix)
    conn = jobs.redis_connection(app)
    try:
        yield conn, prefix
    finally:
        for key in conn.scan_iter(f"rq:*{prefix}*"):
            conn.delete(key)
        app.extensions.pop("hostbay.redis", None)


def test_every_handler_declares_its_queue_class(app):
    handlers = app.extensions["hostbay"].job_handlers
    undeclared = sorted(k for k, fn in handlers.items() if getattr(fn, "hostbay_queue", None) is None)
    assert undeclared == []  # core's and the bundled plugins' handlers all say where they run
    for kind, cls in EXPECTED.items():
        if kind in handlers:  # plugins the test app loaded
            assert jobs.queue_class(kind) == cls, kind
    assert {"lifecycle.renewal_sweep", "service.provision", "lifecycle.notices"} <= set(handlers)
    assert jobs.queue_class("no.such.kind") == jobs.DRIVER  # an unknown or unmarked kind: the driver queue


def test_an_unknown_queue_class_is_refused():
    with pytest.raises(ValueError, match="unknown queue class 'fast'"):
        jobs.handler("x.y", queue="fast")

    def sneaky(op, payload):
        return {}
    sneaky.hostbay_queue = "fast"

    class Bad:
        @hookimpl
        def hostbay_job_handlers(self):
            return {"bad.job": sneaky}

    reg = build_registry(enabled=[], extra_plugins=[Bad()])
    state = {p.name: p for p in reg.plugins}["Bad-0"]
    assert state.state == "failed" and "unknown queue 'fast'" in state.error
    assert "bad.job" not in reg.job_handlers


def test_queue_classes_parse_in_priority_order():
    assert jobs.parse_queue_classes([]) == ["money", "driver", "notify"]
    assert jobs.parse_queue_classes(["all"]) == ["money", "driver", "notify"]
    assert jobs.parse_queue_classes(["notify", "money"]) == ["money", "notify"]
    assert jobs.parse_queue_classes(["driver,money"]) == ["money", "driver"]
    with pytest.raises(ValueError, match="unknown queue bulk"):
        jobs.parse_queue_classes(["bulk"])


def test_worker_refuses_an_unknown_queue(app):
    app.config["HOSTBAY_REDIS_URL"] = "redis://127.0.0.1:1/0"  # never reached: the option is refused first
    from hostbay.web.cli import main

    res = app.test_cli_runner().invoke(main, ["worker", "--queue", "bulk", "--burst"])
    assert res.exit_code == 2 and "unknown queue bulk" in res.output


def test_stale_threshold_and_tick_are_settings(app):
    cfg = config.load({"HOSTBAY_STALE_SECONDS": "5", "HOSTBAY_SCHEDULER_TICK": "2",
                       "HOSTBAY_WORKER_QUEUES": "money", "HOSTBAY_INSTANCE_PATH": "/tmp/hb-q", "HOSTBAY_SECRET_KEY": "k"})
    assert (cfg["HOSTBAY_STALE_SECONDS"], cfg["HOSTBAY_SCHEDULER_TICK"], cfg["HOSTBAY_WORKER_QUEUES"]) == (5, 2, "money")
    assert jobs.stale_seconds() == jobs.STALE_SECONDS == 600 and jobs.scheduler_tick(app) == jobs.SCHEDULER_TICK
    app.config.update(HOSTBAY_STALE_SECONDS=4, HOSTBAY_SCHEDULER_TICK=1)
    assert jobs.stale_seconds() == 4 and jobs.heartbeat_interval() == 1 and jobs.scheduler_tick(app) == 1


@pytest.mark.redis
def test_dispatch_routes_each_job_to_its_class_queue(app, db, rq_queues):
    from rq import Queue

    conn, prefix = rq_queues
    q = {c: Queue(jobs.queue_name(c), connection=conn) for c in jobs.QUEUE_CLASSES}
    assert jobs.queue_names() == [f"{prefix}-money", f"{prefix}-driver", f"{prefix}-notify"]
    single = jobs.enqueue("service.provision", key="route-1")
    db.session.commit()  # one job: the single path
    batch = [jobs.enqueue(k, key=f"route-{k}") for k in ("service.suspend", "service.start", "lifecycle.notices",
                                                           "service.remove")]
    db.session.commit()  # several: the pipelined path, grouped by queue
    unknown = jobs.Operation(key="route-raw", kind="rdns.recheck", payload={})
    db.session.add(unknown)
    db.session.flush()
    jobs.dispatch_after_commit([unknown.id])  # inserted without its kind (like bulk inserts): looked up
    db.session.commit()

    def ops_in(c):
        return [conn_job.args[0] for conn_job in q[c].jobs]
    assert ops_in("money") == [batch[0].id, batch[3].id]
    assert ops_in("driver") == [single.id, batch[1].id]
    assert ops_in("notify") == [batch[2].id, unknown.id]

    # the scheduler's periodic jobs go to the head of their queue
    app.extensions["hostbay"].schedules[:] = [("lifecycle.renewal_sweep", 30)]
    sweep, = jobs.schedule_due(now_ts=3000.0)
    assert ops_in("money") == [sweep.id, batch[0].id, batch[3].id]

    # a transient failure's delayed retry is scheduled on the queue of its class
    jobs.dispatch(app, batch[1].id, delay=60, kind="service.start")
    assert len(q["driver"].scheduled_job_registry.get_job_ids()) == 1
    assert len(q["money"].scheduled_job_registry.get_job_ids()) == 0


def test_sweeps_are_counted_after_they_commit(app, db, make_user, make_package):
    from datetime import timedelta

    from hostbay.core import clock, metrics, renewals
    from hostbay.core.services import Service

    def value(metric, *labels):
        m = metric.labels(*labels) if labels else metric
        return m._value.get()  # noqa: SLF001 - this process's own counter

    runs, renewed, suspended = value(metrics.SWEEPS), value(metrics.SWEEP_SERVICES, "renewed"), \
        value(metrics.SWEEP_SERVICES, "suspended")
    pkg = make_package(monthly_cents=1000)
    due = clock.now() - timedelta(minutes=1)
    for balance in (1000, 0):
        user = make_user(balance_cents=balance)
        db.session.add(Service(user_id=user.id, package_id=pkg.id, kind="vps", state="active", cycle="monthly",
                               hostname=f"m{balance}.example.test", price_cents=1000,
                               period_start=due - timedelta(days=30), renews_at=due))
    db.session.commit()
    renewals.renewal_sweep()
    renewals.renewal_sweep()  # nothing due: a run, no services
    assert value(metrics.SWEEPS) == runs + 2
    assert value(metrics.SWEEP_SERVICES, "renewed") == renewed + 1
    assert value(metrics.SWEEP_SERVICES, "suspended") == suspended + 1


@pytest.mark.redis
def test_stale_recovery_pushes_again_only_what_left_its_queue(app, db, rq_queues):
    """A queued operation waiting behind a backlog is not pushed again at every scheduler tick; one whose push was
    lost (not in any queue) is."""
    from datetime import timedelta

    from rq import Queue

    conn, prefix = rq_queues
    driver = Queue(jobs.queue_name(jobs.DRIVER), connection=conn)
    waiting, lost = jobs.enqueue("service.provision", key="stale-1"), jobs.enqueue("service.start", key="stale-2")
    db.session.commit()
    assert driver.count == 2
    for op in (waiting, lost):
        op.created_at = jobs._utcnow() - timedelta(minutes=10)
    db.session.commit()
    conn.lrem(driver.key, 0, [j for j in driver.get_job_ids() if lost.id in j][0])  # its push was lost
    for _ in range(3):
        jobs.run_stale_recovery()
    ids = [j.args[0] for j in driver.jobs]
    assert sorted(ids) == sorted([waiting.id, lost.id])  # pushed again once, the waiting one not at all


@pytest.mark.redis
def test_a_sweep_pushes_its_batches_in_the_background_and_ends_after_the_last_push(app, db, make_user, make_package,
                                                                                   monkeypatch, rq_queues):
    """The renewal sweep hands each committed batch's suspension jobs to the dispatch thread and goes on with the
    next batch; it returns only once every job is in its queue. A push that fails is logged and leaves the
    operations queued in the table for stale recovery."""
    import threading
    import time
    from datetime import timedelta

    from rq import Queue

    from hostbay.core import clock, renewals
    from hostbay.core.services import Service

    conn, prefix = rq_queues
    money = Queue(jobs.queue_name(jobs.MONEY), connection=conn)
    pkg = make_package(monthly_cents=1000)
    due = clock.now() - timedelta(minutes=1)
    for i in range(3):  # three customers who cannot pay: three suspensions, one per batch of one
        user = make_user(balance_cents=0)
        db.session.add(Service(user_id=user.id, package_id=pkg.id, kind="vps", state="active", cycle="monthly",
                               hostname=f"bg{i}.example.test", price_cents=1000,
                               period_start=due - timedelta(days=30), renews_at=due))
    db.session.commit()
    real, pushers, batches_done = jobs.dispatch_many, set(), []

    def slow_push(app_, ids, **kw):
        pushers.add(threading.current_thread().name)
        time.sleep(0.3)
        batches_done.append(len(ids))
        return real(app_, ids, **kw)
    monkeypatch.setattr(jobs, "dispatch_many", slow_push)
    t0 = time.perf_counter()
    got = renewals.renewal_sweep(batch_size=1)
    took = time.perf_counter() - t0
    assert got["suspended"] == 3 and got["batches"] == 3
    assert pushers == {"hostbay-dispatch"}  # not on the sweep's own thread
    assert batches_done == [1, 1, 1] and money.count == 3  # all pushed before the sweep returned
    assert took >= 0.9  # it waited for the last push

    # a failing push: logged, the operations stay queued in the table (stale recovery pushes them again)
    def broken(app_, ids, **kw):
        raise ConnectionError("redis is down")
    monkeypatch.setattr(jobs, "dispatch_many", broken)
    user = make_user(balance_cents=0)
    db.session.add(Service(user_id=user.id, package_id=pkg.id, kind="vps", state="active", cycle="monthly",
                           hostname="bg-lost.example.test", price_cents=1000,
                           period_start=due - timedelta(days=30), renews_at=due))
    db.session.commit()
    assert renewals.renewal_sweep()["suspended"] == 1
    lost = db.session.scalars(db.select(jobs.Operation).where(jobs.Operation.kind == "service.suspend")
                              .order_by(jobs.Operation.created_at.desc())).first()
    assert lost.state == jobs.QUEUED and money.count == 3
