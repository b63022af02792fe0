"""Queues by class on PostgreSQL, real Redis and real ``hostbay worker`` processes: 500 slow provisioning jobs wait
on the driver queue while a worker serving only the money queue renews one due service and suspends another
well within 60 s of their due time, through the real scheduler (every worker's periodic enqueuer), the money
queue and the renewal sweep. The due time is placed just after a sweep has run: the worst case, a whole period."""
import os
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from hostbay.core import ipam, jobs, renewals
from hostbay.core.catalog import add_cycle
from hostbay.core.ledger import LedgerEntry
from hostbay.core.services import Service

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

REDIS_URL = os.environ.get("HOSTBAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/2")
HOSTBAY = Path(sys.executable).with_name("hostbay")
BACKLOG = 500
SWEEP = "lifecycle.renewal_sweep"


def _now():
    return datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)


@pytest.fixture
def rq_env(app, database_url, tmp_path):
    if not database_url.startswith("postgresql"):
        pytest.skip("needs PostgreSQL (HOSTBAY_TEST_DATABASE_URL)")
    from redis import Redis

    try:
        conn = Redis.from_url(REDIS_URL)
        conn.ping()
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"needs Redis at {REDIS_URL}: {exc}")
    prefix = f"hostbay-queues-test-{uuid.uuid4().hex[:8]}"
    app.config.update(HOSTBAY_JOBS="rq", HOSTBAY_REDIS_URL=REDIS_URL, HOSTBAY_QUEUE=prefix)
    env = dict(os.environ, HOSTBAY_DATABASE_URL=database_url, HOSTBAY_REDIS_URL=REDIS_URL, HOSTBAY_QUEUE=prefix,
               HOSTBAY_JOBS="rq", HOSTBAY_INSTANCE_PATH=str(tmp_path / "worker"), HOSTBAY_SECRET_KEY="w",
               HOSTBAY_LOG_LEVEL="WARNING", HOSTBAY_PLUGINS="fake")
    procs = []
    yield app, env, conn, procs
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    for key in conn.scan_iter(f"rq:*{prefix}*"):
        conn.delete(key)
    app.extensions.pop("hostbay.redis", None)


def _worker(env, procs, *queues):
    args = [str(HOSTBAY), "worker"] + [a for q in queues for a in ("--queue", q)]
    p = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(p)
    return p


def _queued_provisions(db):
    n = db.session.scalar(select(func.count()).select_from(jobs.Operation).where(
        jobs.Operation.kind == "service.provision", jobs.Operation.state == jobs.QUEUED))
    db.session.commit()
    return n


def _wait(pred, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}")


def test_renewal_within_60s_while_500_provisionings_wait(db, rq_env, make_user, make_package, make_node,
                                                         make_image):
    app, env, conn, procs = rq_env
    from rq import Queue

    pkg = make_package(monthly_cents=1000)
    node = make_node(settings={"step_delay": 2})  # each provisioning's driver call takes seconds
    image = make_image()
    ipam.create_pool(name="queues-v4", cidr="198.51.100.0/24", gateway="198.51.100.1", node_ids=[node.id])
    owner = make_user(balance_cents=0)
    now = _now()  # the workers' clock is the real one (the test app's is frozen)
    for i in range(BACKLOG):
        svc = Service(user_id=owner.id, package_id=pkg.id, kind="vps", state="pending", cycle="monthly",
                      hostname=f"backlog{i}.example.test", price_cents=1000, image_id=image.id, period_start=now,
                      renews_at=add_cycle(now, "monthly"))
        db.session.add(svc)
        db.session.flush()
        jobs.enqueue("service.provision", key=f"provision:{svc.uuid}", service=svc, title="Set up server")
    db.session.commit()  # dispatched after commit, to the driver queue in one pipeline
    driver_q = Queue(jobs.queue_name(jobs.DRIVER), connection=conn)
    money_q = Queue(jobs.queue_name(jobs.MONEY), connection=conn)
    assert driver_q.count == BACKLOG and money_q.count == 0

    _worker(env, procs, "driver")
    _worker(env, procs, "money")
    _wait(lambda: _queued_provisions(db) < BACKLOG, 30, "the driver worker to start provisioning")

    def sweeps_run():
        n = db.session.scalar(select(func.count()).select_from(jobs.Operation).where(
            jobs.Operation.kind == SWEEP, jobs.Operation.state == jobs.SUCCEEDED))
        db.session.commit()
        return n
    # the schedulers enqueue a sweep when the workers start, then one per 30 s period: wait for the sweep of a new
    # period to have run (nothing was due), so the service below falls due just after it, the worst case
    _wait(lambda: sweeps_run() >= 2, 90, "a renewal sweep of a new period")
    due = _now() + timedelta(seconds=1)
    payer, broke = make_user(balance_cents=1000), make_user(balance_cents=0)
    renewed, suspended = [], []
    for user, out in ((payer, renewed), (broke, suspended)):
        svc = Service(user_id=user.id, package_id=pkg.id, kind="vps", state="active", cycle="monthly",
                      hostname=f"due-{user.id}.example.test", price_cents=1000, period_start=due - timedelta(days=30),
                      renews_at=due)
        db.session.add(svc)
        db.session.flush()
        out.append(svc.id)
    db.session.commit()

    def done():
        states = dict(db.session.execute(select(Service.id, Service.state).where(
            Service.id.in_(renewed + suspended))).all())
        moved = db.session.scalar(select(Service.renews_at).where(Service.id == renewed[0])) > due
        db.session.commit()
        return moved and states[suspended[0]] == "suspended"

    _wait(done, 120, "the due services to be renewed and suspended")
    backlog_left = _queued_provisions(db)
    entry = db.session.scalar(select(LedgerEntry).where(LedgerEntry.kind == "renewal",
                                                         LedgerEntry.reference_id == db.session.get(
                                                             Service, renewed[0]).uuid))
    svc_renewed, svc_suspended = db.session.get(Service, renewed[0]), db.session.get(Service, suspended[0])
    renewal_latency = (entry.created_at - due).total_seconds()
    suspension_latency = (svc_suspended.suspended_at - due).total_seconds()
    print(f"renewed {renewal_latency:.0f} s and suspended {suspension_latency:.0f} s after the due time; "
          f"{backlog_left} provisioning jobs still queued")
    # the recorded times (the sweep's clock): within 60 s of the due time, after it
    assert 0 <= renewal_latency <= 60 and 0 <= suspension_latency <= 60
    assert svc_renewed.renews_at == add_cycle(due, "monthly") and svc_renewed.state == "active"
    assert svc_suspended.suspension_reason == "unpaid"
    # the provisioning backlog was still there: the renewal did not wait for it
    assert backlog_left >= BACKLOG - 100 and driver_q.count >= BACKLOG - 100
    # the sweeps ran from the scheduler, through the money queue (its only worker serves nothing else)
    sweeps = db.session.scalars(select(jobs.Operation).where(jobs.Operation.kind == SWEEP)).all()
    assert all(o.key.startswith(f"schedule:{SWEEP}:") for o in sweeps)
    ran = [o for o in sweeps if o.state == jobs.SUCCEEDED]
    assert len(ran) >= 3 and any(o.result["renewed"] == 1 and o.result["suspended"] == 1 for o in ran), \
        [o.result for o in ran]
    # its suspension job went to the money queue too, and ran there
    susp_op = db.session.scalar(select(jobs.Operation).where(jobs.Operation.kind == "service.suspend",
                                                              jobs.Operation.service_id == suspended[0]))
    _wait(lambda: db.session.get(jobs.Operation, susp_op.id, populate_existing=True).finished
          or db.session.commit(), 60, "the suspension job")


def test_due_query_uses_the_state_renews_at_index(db, database_url, make_package):
    """EXPLAIN on PostgreSQL of the sweep's own due-time query over 20,000 active services, none due, and 20,000
    ended ones whose renewal dates are long past."""
    from .seed import seed_due

    if not database_url.startswith("postgresql"):
        pytest.skip("needs PostgreSQL (HOSTBAY_TEST_DATABASE_URL)")
    pkg = make_package(monthly_cents=1000)
    seed_due(pkg, users=4000, per_user=5, price_cents=1000, balance_cents=0, due_at=_now() + timedelta(days=10),
             tag="ix")
    # and services that ended long ago, their renews_at in the past (they accumulate): not due, never scanned
    db.session.execute(text(
        "INSERT INTO services (uuid, user_id, package_id, kind, state, hostname, cycle, price_cents, ssh_key_ids,"
        " period_start, renews_at, cancel_at_period_end, infra_ref, created_at, updated_at)"
        " SELECT gen_random_uuid()::text, user_id, package_id, kind, 'terminated', hostname, cycle, price_cents,"
        " ssh_key_ids, period_start - interval '400 days', renews_at - interval '400 days', false, infra_ref,"
        " created_at, updated_at FROM services"))
    db.session.execute(text("ANALYZE services"))
    db.session.commit()
    q = renewals.due_query(_now())
    compiled = q.compile(dialect=db.engine.dialect, compile_kwargs={"literal_binds": True})
    plan = "\n".join(db.session.execute(text(f"EXPLAIN {compiled}")).scalars())
    db.session.commit()
    print(plan)
    assert "ix_services_state_renews_at" in plan and "Seq Scan on services" not in plan, plan
    assert renewals.renewal_sweep()["batches"] == 0
