"""The job layer: operations, idempotency, retries, failure, scheduling, and a real RQ worker process."""

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta

import pytest

from hostbay.core import jobs
from hostbay.core.activity import AuditEntry
from hostbay.core.errors import FatalDriverError, TransientDriverError
from hostbay.core.hookspecs import hookimpl

CALLS = []


@pytest.fixture(autouse=True)
def handlers(app, monkeypatch):
    CALLS.clear()

    def ok(op, payload):
        op.progress(40, "Halfway")
        CALLS.append(("ok", payload))
        return {"n": len(CALLS)}

    def flaky(op, payload):
        CALLS.append(("flaky", op.attempts))
        if op.attempts < 3:
            raise TransientDriverError("connection refused by node-7.internal")
        return {}

    def fatal(op, payload):
        CALLS.append(("fatal", op.attempts))
        raise FatalDriverError("template /var/lib/tpl/x.qcow2 missing")

    handlers = app.extensions["hostbay"].job_handlers
    monkeypatch.setitem(handlers, "test.ok", ok)
    monkeypatch.setitem(handlers, "test.flaky", flaky)
    monkeypatch.setitem(handlers, "test.fatal", fatal)
    monkeypatch.setattr(jobs, "RETRY_DELAYS", (0,))


def test_runs_after_commit_and_records_progress(db):
    op = jobs.enqueue("test.ok", key="k1", payload={"a": 1})
    assert CALLS == []  # nothing runs before the commit
    db.session.commit()
    db.session.refresh(op)
    assert CALLS == [("ok", {"a": 1})]
    assert op.state == "succeeded" and op.progress_pct == 100 and op.result == {"n": 1}
    # a finished operation's text says it finished, not the last step's intention ("Halfway")
    assert op.progress_text == "Done" and op.attempts == 1


def test_same_key_is_one_operation(db):
    a = jobs.enqueue("test.ok", key="same")
    b = jobs.enqueue("test.ok", key="same")
    db.session.commit()
    assert a.id == b.id and len(CALLS) == 1
    c = jobs.enqueue("test.ok", key="same")
    db.session.commit()
    assert c.id == a.id and len(CALLS) == 1
    assert jobs.run_operation(a.id) == "succeeded" and len(CALLS) == 1  # a finished operation never runs again


def test_rollback_dispatches_nothing(db):
    jobs.enqueue("test.ok", key="rolled")
    db.session.rollback()
    db.session.commit()
    assert CALLS == [] and db.session.scalar(db.select(jobs.Operation).filter_by(key="rolled")) is None


def test_an_event_of_a_rolled_back_transaction_never_fires(app, db, monkeypatch):
    fired = []
    monkeypatch.setattr(app.extensions["hostbay"], "notify", lambda name, **kw: fired.append((name, kw)))
    db.session.execute(db.select(1))
    jobs.notify_after_commit("hostbay_wallet_credited", lambda: {"n": "rolled back"})
    db.session.rollback()
    db.session.execute(db.select(1))
    jobs.notify_after_commit("hostbay_wallet_credited", lambda: {"n": "committed"})
    db.session.commit()  # the next unit of work: only its own event fires
    assert fired == [("hostbay_wallet_credited", {"n": "committed"})]


def test_transient_errors_are_retried(db, job_runner):
    op = jobs.enqueue("test.flaky", key="flaky")
    db.session.commit()
    for _ in range(5):
        job_runner.run_all()
    db.session.refresh(op)
    assert op.state == "succeeded" and op.attempts == 3
    assert [c for c in CALLS] == [("flaky", 1), ("flaky", 2), ("flaky", 3)]


def test_retries_are_bounded(db, job_runner):
    op = jobs.enqueue("test.flaky", key="flaky2", max_attempts=2)
    db.session.commit()
    for _ in range(5):
        job_runner.run_all()
    db.session.refresh(op)
    assert op.state == "failed" and op.attempts == 2


def test_fatal_error_fails_at_once_with_customer_safe_message(db, register_plugin):
    failed = []

    class Listener:
        @hookimpl
        def hostbay_operation_failed(self, operation):
            failed.append(operation.id)

    with register_plugin(Listener()):
        op = jobs.enqueue("test.fatal", key="fatal")
        db.session.commit()
    db.session.refresh(op)
    assert op.state == "failed" and op.attempts == 1
    assert "qcow2" in op.error and "qcow2" not in op.customer_error
    assert failed == [op.id]
    assert db.session.scalar(db.select(AuditEntry).filter_by(action="operation.failed", target_id=op.id))
    jobs.retry(op)
    db.session.commit()
    db.session.refresh(op)
    assert op.state == "failed" and op.attempts == 1 and len(CALLS) == 2


def test_stale_claim_is_taken_over(db, job_runner):
    op = jobs.enqueue("test.ok", key="stale")
    db.session.commit()
    assert jobs._claim(op.id)  # a worker claimed it, then died
    assert jobs.run_operation(op.id) == "running" and CALLS == []  # a live claim is respected
    op.heartbeat_at = jobs._utcnow() - timedelta(seconds=jobs.STALE_SECONDS + 1)
    db.session.commit()
    assert jobs.run_operation(op.id) == "succeeded" and len(CALLS) == 1


def test_schedule_enqueues_once_per_period(app, db, job_runner, monkeypatch):
    monkeypatch.setattr(app.extensions["hostbay"], "schedules", [("test.ok", 300)])
    a = jobs.schedule_due(now_ts=3000.0)
    b = jobs.schedule_due(now_ts=3299.0)
    c = jobs.schedule_due(now_ts=3300.0)
    assert a[0].id == b[0].id != c[0].id


@pytest.mark.redis
def test_real_worker_process_completes_a_job(app, db, database_url, tmp_path):
    redis_url = os.environ.get("HOSTBAY_TEST_REDIS_URL")
    if not redis_url:
        pytest.skip("HOSTBAY_TEST_REDIS_URL is not set")
    from redis import Redis

    Redis.from_url(redis_url).flushdb()
    app.config.update(HOSTBAY_JOBS="rq", HOSTBAY_REDIS_URL=redis_url, HOSTBAY_QUEUE="hostbay-test")
    env = dict(os.environ, HOSTBAY_DATABASE_URL=database_url, HOSTBAY_REDIS_URL=redis_url,
               HOSTBAY_QUEUE="hostbay-test", HOSTBAY_INSTANCE_PATH=str(tmp_path / "w"))
    worker = subprocess.Popen([sys.executable, "-m", "hostbay.web.cli", "worker", "--without-scheduler"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        op = jobs.enqueue("core.ping", key="ping-1", payload={"value": 42})
        db.session.commit()
        deadline = time.time() + 60
        while time.time() < deadline:
            db.session.expire_all()
            op = db.session.get(jobs.Operation, op.id)
            finished = op.finished
            db.session.commit()  # end the read transaction: on SQLite it would hold the single write lock
            if finished:
                break
            time.sleep(0.2)
        db.session.refresh(op)
        if op.state != "succeeded":
            worker.send_signal(signal.SIGTERM)
            pytest.fail(f"operation {op.state}: {op.error}; worker said:\n{worker.communicate(timeout=20)[0]}")
        assert op.result["pong"] == 42 and op.result["pid"] == worker.pid  # ran in the worker, not here
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            out, _ = worker.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            out, _ = worker.communicate()
    assert "hostbay worker listening" in out


def test_a_driver_call_longer_than_the_stale_threshold_is_not_taken_over(app, db, job_runner, monkeypatch):
    """The driver-call template keeps the heartbeat alive: while the worker lives, a call that outlasts
    STALE_SECONDS is neither claimed nor run a second time by another worker's recovery."""
    import threading

    monkeypatch.setattr(jobs, "STALE_SECONDS", 1)  # heartbeats every 0.25 s
    started, release, runs = threading.Event(), threading.Event(), []

    def slow_driver_call(ref):
        runs.append(ref)
        started.set()
        assert release.wait(20)

    def handler(op, payload):
        jobs.call_driver(op, slow_driver_call, "ref-1", pct=10, text="Working")
        return {"text": "Worked"}

    monkeypatch.setitem(app.extensions["hostbay"].job_handlers, "test.slow", handler)
    op = jobs.enqueue("test.slow", key="slow")
    op_id = op.id
    db.session.commit()  # and no transaction left open here: on SQLite it would hold the only write lock
    worker = threading.Thread(target=jobs._run_in_context, args=(app, op_id))
    worker.start()
    try:
        assert started.wait(20)
        for _ in range(3):  # 3 s: three times the stale threshold
            time.sleep(1)
            db.session.expire_all()
            assert jobs._claim(op_id) is False  # another worker may not take it
            assert jobs.run_pending() == 0
            db.session.commit()
    finally:
        release.set()
        worker.join(30)
    db.session.expire_all()
    op = db.session.get(jobs.Operation, op_id)
    assert op.state == jobs.SUCCEEDED and op.attempts == 1 and runs == ["ref-1"]
    assert op.progress_text == "Worked"


def test_without_the_template_a_long_call_is_taken_over(app, db, job_runner, monkeypatch):
    """The counter-check of the test above: a call that does not beat looks like a dead worker's."""
    import threading

    monkeypatch.setattr(jobs, "STALE_SECONDS", 1)
    started, release = threading.Event(), threading.Event()

    def handler(op, payload):
        db.session.commit()
        started.set()
        release.wait(20)
        return {}

    monkeypatch.setitem(app.extensions["hostbay"].job_handlers, "test.silent", handler)
    op = jobs.enqueue("test.silent", key="silent")
    op_id = op.id
    db.session.commit()
    worker = threading.Thread(target=jobs._run_in_context, args=(app, op_id))
    worker.start()
    try:
        assert started.wait(20)
        time.sleep(1.5)
        db.session.expire_all()
        assert jobs._claim(op_id) is True  # stale: taken over
    finally:
        release.set()
        worker.join(30)


def test_call_driver_maps_errors(app, db, monkeypatch):
    from hostbay.core.errors import DriverError

    op = jobs.enqueue("core.ping", key="map-errors")
    db.session.commit()

    def missing(ref):
        raise NotImplementedError

    def refused(ref):
        raise ConnectionRefusedError("node-7 port 16509")

    with pytest.raises(FatalDriverError) as fatal:
        jobs.call_driver(op, missing, {})
    assert "node-7" not in fatal.value.customer_message and "does not support" in fatal.value.customer_message
    with pytest.raises(TransientDriverError):
        jobs.call_driver(op, refused, {})
    with pytest.raises(FatalDriverError):  # a driver error passes unchanged
        jobs.call_driver(op, lambda ref: (_ for _ in ()).throw(FatalDriverError("x")), {})
    assert issubclass(TransientDriverError, DriverError)


def test_staff_retry_runs_the_handler_again(app, db, job_runner, monkeypatch):
    attempts = []

    def handler(op, payload):
        attempts.append(payload.get("retried", 0))
        if len(attempts) == 1:
            raise FatalDriverError("first time fails")
        return {"text": "Done again"}

    monkeypatch.setitem(app.extensions["hostbay"].job_handlers, "test.retry", handler)
    op = jobs.enqueue("test.retry", key="retry-me")
    db.session.commit()
    job_runner.run_all()
    db.session.refresh(op)
    assert op.state == jobs.FAILED
    jobs.retry(op)
    db.session.commit()
    job_runner.run_all()
    db.session.refresh(op)
    assert attempts == [0, 1] and op.state == jobs.SUCCEEDED and op.progress_text == "Done again"
    assert op.error is None and op.customer_error is None
