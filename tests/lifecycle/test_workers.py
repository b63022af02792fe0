"""Renewal sweeps in separate ``hostbay worker`` processes on PostgreSQL and Redis: several at once charge each due
service exactly once, and a worker killed in the middle of a sweep leaves work that a re-run finishes."""
import os
import signal
import time
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select, text

from hostbay.core import jobs, ledger
from hostbay.core.ledger import LedgerEntry, Wallet
from hostbay.core.services import Service

from .seed import expected_outcome, seed_due

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

PRICE, PER_USER = 1000, 3


def _now():
    return datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)


def _balance(i):
    # most customers pay all three services; every tenth pays one of three, every other tenth none
    return {0: 1400, 5: 0}.get(i % 10, 3000)


def _enqueue_sweeps(db, n, batch, tag):
    for i in range(n):
        jobs.enqueue("lifecycle.renewal_sweep", key=f"{tag}:{i}", payload={"batch": batch}, title="Renewal sweep")
    db.session.commit()


def _kill_balance(i):
    return 0 if i % 50 == 0 else 3000


def _check_exactly_once(db, user_ids, balance=_balance):
    db.session.commit()
    per_service = dict(db.session.execute(
        select(LedgerEntry.reference_id, func.count()).where(LedgerEntry.kind == "renewal")
        .group_by(LedgerEntry.reference_id)).all())
    assert per_service and max(per_service.values()) == 1
    svcs = db.session.execute(select(Service.uuid, Service.user_id, Service.state)
                              .where(Service.user_id.in_(user_ids))).all()
    by_user = {}
    for s in svcs:
        by_user.setdefault(s.user_id, []).append(s)
        assert (s.state == "active") == (s.uuid in per_service)
        assert s.state in ("active", "suspended")
    for i, uid in enumerate(sorted(user_ids)):
        renew, suspend = expected_outcome(balance(i), PER_USER, PRICE)
        states = sorted(s.state for s in by_user[uid])
        assert states == sorted(["active"] * renew + ["suspended"] * suspend), (uid, states)
        assert ledger.balance_cents(uid) == ledger.ledger_sum_cents(uid) == balance(i) - renew * PRICE
    assert db.session.scalar(select(func.count()).select_from(Service).where(
        Service.state == "active", Service.renews_at <= _now())) == 0


def test_two_workers_charge_each_due_service_once(db, running_workers, make_package):
    pkg = make_package(monthly_cents=PRICE)
    users = seed_due(pkg, users=600, per_user=PER_USER, price_cents=PRICE, balance_cents=_balance,
                     due_at=_now() - timedelta(hours=1), tag="w")
    _enqueue_sweeps(db, 6, 10, "two-workers")  # six overlapping sweeps, small batches: they contend
    running_workers.burst(2)
    sweeps = db.session.scalars(select(jobs.Operation).where(jobs.Operation.kind == "lifecycle.renewal_sweep")).all()
    assert len(sweeps) == 6 and all(o.state == "succeeded" for o in sweeps), [(o.state, o.error) for o in sweeps]
    assert sum(o.result["renewed"] + o.result["suspended"] for o in sweeps) == 600 * PER_USER
    assert sum(1 for o in sweeps if o.result["batches"]) >= 2  # the work really was shared
    _check_exactly_once(db, users)
    suspends = db.session.scalars(select(jobs.Operation).where(jobs.Operation.kind == "service.suspend")).all()
    assert len(suspends) == db.session.scalar(select(func.count()).select_from(Service)
                                              .where(Service.state == "suspended"))
    assert all(o.state == "succeeded" for o in suspends)


def test_worker_killed_mid_sweep_then_rerun(db, running_workers, make_package):
    pkg = make_package(monthly_cents=PRICE)
    users = seed_due(pkg, users=1500, per_user=PER_USER, price_cents=PRICE, balance_cents=_kill_balance,
                     due_at=_now() - timedelta(hours=1), tag="k")
    total = 1500 * PER_USER
    _enqueue_sweeps(db, 1, 10, "killed")
    proc = running_workers.start(quiet=True)
    deadline = time.time() + 120
    done = 0
    while time.time() < deadline:
        done = db.session.execute(text("SELECT count(*) FROM services WHERE state='suspended' OR "
                                       "renews_at > now() AT TIME ZONE 'UTC'")).scalar()
        db.session.commit()
        if done >= 300:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = db.session.execute(text("SELECT count(*) FROM services WHERE state='suspended' OR "
                                   "renews_at > now() AT TIME ZONE 'UTC'")).scalar()
    db.session.commit()
    assert 0 < done < total, "the worker should have been killed in the middle of the sweep"
    # every batch that committed is complete, none is half-written
    per_service = dict(db.session.execute(select(LedgerEntry.reference_id, func.count())
                                          .where(LedgerEntry.kind == "renewal")
                                          .group_by(LedgerEntry.reference_id)).all())
    renewed = set(db.session.scalars(select(Service.uuid).where(Service.renews_at > _now())))
    assert set(per_service) == renewed
    for w in db.session.scalars(select(Wallet)):
        assert w.balance_cents == ledger.ledger_sum_cents(w.user_id)
    # the re-run (a new scheduled sweep in a new worker) finishes the work
    _enqueue_sweeps(db, 1, 200, "rerun")
    running_workers.burst(1)
    _check_exactly_once(db, users, _kill_balance)
