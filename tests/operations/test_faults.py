"""Faults survived, on real services: a private Redis restarted under queued and running jobs, a worker's database
connection terminated in the middle of a money-moving job, PostgreSQL unreachable for a while.

Each test starts its own servers on spare loopback ports (tests/operations/faultkit.py) where it stops them."""
import os
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select, text

from hostbay.core import jobs

from .faultkit import PostgresCluster, RedisServer, start_worker, stop_processes, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]


def _needs_postgres(database_url):
    if not database_url.startswith("postgresql"):
        pytest.skip("needs PostgreSQL (HOSTBAY_TEST_DATABASE_URL)")


def _worker_env(database_url, redis_url, queue, tmp_path, **extra):
    return dict(os.environ, HOSTBAY_DATABASE_URL=database_url, HOSTBAY_REDIS_URL=redis_url, HOSTBAY_QUEUE=queue,
                HOSTBAY_JOBS="rq", HOSTBAY_INSTANCE_PATH=str(tmp_path / "worker"), HOSTBAY_SECRET_KEY="w",
                HOSTBAY_LOG_LEVEL="INFO", **extra)


def _op_states(db, kind):
    Op = jobs.Operation
    got = dict(db.session.execute(select(Op.state, func.count()).where(Op.kind == kind).group_by(Op.state)).all())
    db.session.commit()
    return got


def test_redis_restart_under_queued_and_running_jobs(app, database_url, tmp_path):
    """30 jobs of 0.4 s on two workers; Redis is shut down while two run and the rest wait, and started again
    3 s later: every job finishes, each handler ran exactly once."""
    from hostbay.core.db import db

    _needs_postgres(database_url)
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    queue = f"hostbay-fault-{uuid.uuid4().hex[:8]}"
    app.config.update(HOSTBAY_JOBS="rq", HOSTBAY_REDIS_URL=redis.url, HOSTBAY_QUEUE=queue)
    app.extensions.pop("hostbay.redis", None)
    record = tmp_path / "runs.txt"
    env = _worker_env(database_url, redis.url, queue, tmp_path, HOSTBAY_PLUGINS="fake")
    workers = [start_worker(env, "--without-scheduler", log_path=tmp_path / f"worker{i}.log") for i in range(2)]
    try:
        ops = [jobs.enqueue("fake.wait", payload={"seconds": 0.4, "record_file": str(record)}, title="Wait")
               for _ in range(30)]
        ids = [op.id for op in ops]
        db.session.commit()
        wait_for(lambda: _op_states(db, "fake.wait").get(jobs.SUCCEEDED, 0) >= 2, 60, what="first jobs done")
        assert _op_states(db, "fake.wait").get(jobs.QUEUED, 0) >= 10  # many still wait in Redis
        redis.stop()
        time.sleep(3)
        redis.start()
        wait_for(lambda: _op_states(db, "fake.wait") == {jobs.SUCCEEDED: 30}, 45, interval=0.5,
                 what=f"all jobs succeeded (now {_op_states(db, 'fake.wait')})")
    finally:
        stop_processes(workers)
        redis.stop()
        app.extensions.pop("hostbay.redis", None)
    runs = record.read_text().split()
    assert sorted(runs) == sorted(ids)  # every job ran, none twice
    Op = jobs.Operation
    assert set(db.session.scalars(select(Op.attempts).where(Op.id.in_(ids)))) == {1}
