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
