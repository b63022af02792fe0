"""Faults survived, on real services: a private Redis restarted under queued and running jobs, a worker's database
connection terminated in the middle of a money-moving job, PostgreSQL unreachable for a while.

Each test starts its own servers on spare loopback ports (tests/operations/faultkit.py) where it stops them."""
import os
import time
import uuid
from types import SimpleNamespace
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


def _now():
    return datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)


def test_worker_database_connection_terminated_mid_sweep(app, db, database_url, make_package, tmp_path):
    """A renewal sweep (money and state in one transaction per batch) whose worker connection is terminated with
    ``pg_terminate_backend`` after the batch wrote its ledger entries, debits and suspensions: the batch rolls back
    whole, the job is retried and finishes; every due service is charged once, every balance is the sum of its
    entries, and every suspension has its operation and notice."""
    from redis import Redis

    from hostbay.core import ledger
    from hostbay.core.ledger import LedgerEntry
    from hostbay.core.notices import Notice
    from hostbay.core.services import Service
    from lifecycle.seed import expected_outcome, seed_due  # tests/lifecycle (rootdir-relative packages)

    _needs_postgres(database_url)
    redis_url = os.environ.get("HOSTBAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/2")
    Redis.from_url(redis_url).ping()
    queue = f"hostbay-fault-{uuid.uuid4().hex[:8]}"
    app.config.update(HOSTBAY_JOBS="rq", HOSTBAY_REDIS_URL=redis_url, HOSTBAY_QUEUE=queue)
    app.extensions.pop("hostbay.redis", None)
    price, per_user, users_n, poor = 1000, 3, 120, 60

    def balance(i):
        return 0 if i == poor else 3000

    pkg = make_package(monthly_cents=price)
    users = seed_due(pkg, users=users_n, per_user=per_user, price_cents=price, balance_cents=balance,
                     due_at=_now() - timedelta(hours=1), tag="pgkill")
    victim = db.session.execute(select(Service.uuid, Service.renews_at).where(Service.user_id == sorted(users)[poor])
                                .order_by(Service.id).limit(1)).one()
    db.session.commit()
    # A transaction of ours holds the notice key the sweep will insert for the poor customer's first service: the
    # worker's batch waits on it after writing everything else, and is terminated there.
    blocker = db.engine.connect()
    btx = blocker.begin()
    blocker.execute(Notice.__table__.insert().values(
        key=f"suspended:{victim.uuid}:{victim.renews_at:%Y%m%dT%H%M%S}", user_id=sorted(users)[poor],
        kind="suspended", subject="placeholder", body="placeholder", created_at=_now(), attempts=0))
    op = jobs.enqueue("lifecycle.renewal_sweep", key=f"pgkill:{uuid.uuid4()}", payload={"batch": 50},
                      title="Renewal sweep")
    op_id = op.id
    db.session.commit()
    env = _worker_env(database_url, redis_url, queue, tmp_path)
    worker = start_worker(env, "--without-scheduler", log_path=tmp_path / "worker.log")
    try:
        def waiting_backend():
            row = db.session.execute(text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND wait_event_type = 'Lock' AND query ILIKE '%%notices%%'")).first()
            db.session.commit()
            return row and row.pid

        pid = wait_for(waiting_backend, 60, interval=0.05, what="the sweep's batch waiting on the notice key")
        # the batch has written the renewals and suspensions of its customers, not committed them
        assert db.session.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar() is True
        db.session.commit()
        btx.rollback()
        blocker.close()
        wait_for(lambda: _op_states(db, "lifecycle.renewal_sweep") == {jobs.SUCCEEDED: 1}, 90, interval=0.25,
                 what="the sweep retried and finished")
    finally:
        stop_processes([worker])
        app.extensions.pop("hostbay.redis", None)
    sweep = db.session.get(jobs.Operation, op_id)
    assert sweep.attempts == 2 and sweep.state == jobs.SUCCEEDED, (sweep.attempts, sweep.error)
    per_service = dict(db.session.execute(select(LedgerEntry.reference_id, func.count())
                                          .where(LedgerEntry.kind == "renewal")
                                          .group_by(LedgerEntry.reference_id)).all())
    assert len(per_service) == (users_n - 1) * per_user and set(per_service.values()) == {1}
    for i, uid in enumerate(sorted(users)):
        renew, suspend = expected_outcome(balance(i), per_user, price)
        states = sorted(db.session.scalars(select(Service.state).where(Service.user_id == uid)))
        assert states == sorted(["active"] * renew + ["suspended"] * suspend), (uid, states)
        assert ledger.balance_cents(uid) == ledger.ledger_sum_cents(uid) == balance(i) - renew * price
    suspended = db.session.scalars(select(Service.id).where(Service.user_id == sorted(users)[poor])).all()
    Op = jobs.Operation
    assert db.session.scalar(select(func.count()).select_from(Op).where(
        Op.kind == "service.suspend", Op.service_id.in_(suspended))) == per_user
    assert db.session.scalar(select(func.count()).select_from(Notice).where(
        Notice.kind == "suspended", Notice.service_id.in_(suspended))) == per_user
    db.session.commit()


def test_postgres_unreachable_for_30s(tmp_path):
    """A private PostgreSQL stopped for 30 s under a logged-in customer and a worker with jobs waiting in Redis:
    the panel answers a plain 503 page (no stack trace) and the API a problem+json 503, /healthz names the
    database as down (Redis ok), the worker stays up and backs off, and when PostgreSQL is back every job
    finishes and /healthz is ok again."""
    from redis import Redis

    from hostbay.core.accounts import create_user
    from hostbay.core.db import db
    from hostbay.testing.pytest_plugin import login
    from hostbay.web import create_app

    redis_url = os.environ.get("HOSTBAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/2")
    Redis.from_url(redis_url).ping()
    try:
        pg = PostgresCluster()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    queue = f"hostbay-fault-{uuid.uuid4().hex[:8]}"
    worker = None
    try:
        pg.start()
        pg.create_database("hostbay")
        url = pg.url("hostbay")
        app = create_app({"SQLALCHEMY_DATABASE_URI": url, "TESTING": True, "HOSTBAY_JOBS": "rq",
                          "HOSTBAY_REDIS_URL": redis_url, "HOSTBAY_QUEUE": queue, "WTF_CSRF_ENABLED": False,
                          "RATELIMIT_ENABLED": False, "SECRET_KEY": "fault", "HOSTBAY_PLUGINS": ["fake"],
                          "INSTANCE_PATH": str(tmp_path / "instance")})
        # requests run outside the test's app context, each in its own (as under gunicorn)
        with app.app_context():
            db.create_all()
            create_user("outage@example.test", "correct horse battery")
            db.session.commit()
            db.session.remove()

        def states():
            with app.app_context():
                got = _op_states(db, "fake.wait")
                db.session.remove()
                return got

        client = app.test_client()
        login(client, SimpleNamespace(email="outage@example.test"))
        assert client.get("/panel/").status_code == 200
        worker = start_worker(_worker_env(url, redis_url, queue, tmp_path, HOSTBAY_PLUGINS="fake"),
                              "--without-scheduler", log_path=tmp_path / "worker.log")
        with app.app_context():
            for _ in range(20):
                jobs.enqueue("fake.wait", payload={"seconds": 0.5}, title="Wait")
            db.session.commit()
        wait_for(lambda: states().get(jobs.SUCCEEDED, 0) >= 2, 60, what="first jobs")

        pg.stop("fast")
        down_at = time.monotonic()
        page = client.get("/panel/")
        assert page.status_code == 503 and page.headers["Retry-After"]
        body = page.get_data(as_text=True)
        assert "Temporarily unavailable" in body and "Traceback" not in body and "psycopg" not in body
        api = client.get("/api/v1/services", headers={"Authorization": "Bearer hb_nothing"})
        assert api.status_code == 503 and api.mimetype == "application/problem+json", api.status_code
        health = client.get("/healthz")
        assert health.status_code == 503
        assert health.json["down"] == ["database"] and health.json["dependencies"]["redis"] == "ok"
        while time.monotonic() - down_at < 30:
            assert worker.poll() is None  # the worker waits, it does not exit
            assert client.get("/healthz").status_code == 503
            time.sleep(2)
        pg.start()

        wait_for(lambda: client.get("/healthz").status_code == 200, 30, what="healthz ok again")
        wait_for(lambda: states() == {jobs.SUCCEEDED: 20}, 90, interval=0.5,
                 what="every job finished after the outage")
        assert client.get("/panel/").status_code == 200
        assert worker.poll() is None
        with app.app_context():
            db.engine.dispose()
        log = (tmp_path / "worker.log").read_text()
        assert "database unreachable; operation" in log
    finally:
        if worker is not None:
            stop_processes([worker])
        pg.remove()
        conn = Redis.from_url(redis_url)
        for key in conn.scan_iter(f"rq:*{queue}*"):
            conn.delete(key)
