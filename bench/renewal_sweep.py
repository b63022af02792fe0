"""Renewal sweep over 100,000 due services on PostgreSQL (80% renew, 20% suspend), timed beside one raw set-based
SQL statement that performs the same ledger inserts, wallet updates and service updates.

    HOSTBAY_BENCH_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1/hostbay_lifecycle_bench \
    HOSTBAY_BENCH_REDIS_URL=redis://127.0.0.1:6379/0 .venv/bin/python bench/renewal_sweep.py [N] [--manual]

Jobs are dispatched as in production (``rq``: the suspension operations are pushed to Redis, to a queue no worker
serves, and counted there); ``--manual`` leaves them in the table.

The database's tables are dropped and created. Customers own 5 services of $10 each and hold $40, so each renews
four and has one suspended: the sweep must respect the balance across several services of one customer.
The raw statement writes the same suspension rows as the sweep (operation, activity, audit entry and notice per
suspended service; the counts are compared).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select, text  # noqa: E402

DUE = datetime(2026, 3, 1, 12, 0, 0)
PER_USER, PRICE, BALANCE = 5, 1000, 4000

RAW_SQL = """
WITH due AS (
  SELECT s.id, s.uuid, s.user_id, s.price_cents, s.renews_at, s.hostname, w.id AS wallet_id, w.balance_cents,
         sum(s.price_cents) OVER (PARTITION BY s.user_id ORDER BY s.renews_at, s.id) AS running
  FROM services s JOIN wallets w ON w.user_id = s.user_id
  WHERE s.state = 'active' AND s.renews_at <= :now),
paid AS (SELECT * FROM due WHERE running <= balance_cents),
ins AS (
  INSERT INTO ledger_entries (uuid, wallet_id, idempotency_key, kind, amount_cents, balance_after_cents,
                              reference_type, reference_id, actor_type, description, created_at)
  SELECT gen_random_uuid()::text, wallet_id,
         'renewal:' || uuid || ':' || to_char(renews_at, 'YYYYMMDD"T"HH24MISS'), 'renewal', -price_cents,
         balance_cents - running, 'service', uuid, 'system', 'Renewal of ' || hostname, :now
  FROM paid
  ON CONFLICT (idempotency_key) DO NOTHING
  RETURNING wallet_id, amount_cents),
wupd AS (
  UPDATE wallets w SET balance_cents = w.balance_cents + t.total
  FROM (SELECT wallet_id, sum(amount_cents) AS total FROM ins GROUP BY wallet_id) t WHERE w.id = t.wallet_id),
ren AS (
  UPDATE services s SET period_start = s.renews_at, renews_at = s.renews_at + interval '1 month', updated_at = :now
  FROM paid WHERE s.id = paid.id),
sus AS (
  UPDATE services s SET state = 'suspended', suspended_at = :now, suspension_reason = 'unpaid', updated_at = :now
  FROM due WHERE s.id = due.id AND due.running > due.balance_cents
  RETURNING s.id, s.uuid, s.user_id, s.hostname, due.price_cents, due.renews_at,
            due.balance_cents - (due.running - due.price_cents) AS left_cents),
act AS (
  INSERT INTO activity_entries (user_id, service_id, event, message, created_at)
  SELECT user_id, id, 'suspend', hostname || ' was suspended: the renewal of $' || to_char(price_cents / 100.0, 'FM999990.00')
         || ' could not be paid from your wallet ($' || to_char(left_cents / 100.0, 'FM999990.00') || '). Add at least $'
         || to_char((price_cents - left_cents) / 100.0, 'FM999990.00') || ' within 14 days and renew it to keep it.', :now
  FROM sus),
aud AS (
  INSERT INTO audit_entries (actor_type, action, target_type, target_id, before, after, detail, created_at)
  SELECT 'system', 'service.suspended', 'service', uuid,
         json_build_object('state', 'active', 'renews_at', renews_at),
         json_build_object('state', 'suspended', 'balance_cents', left_cents, 'price_cents', price_cents),
         'renewal sweep: insufficient balance', :now
  FROM sus),
ops AS (
  INSERT INTO operations (id, key, kind, service_id, user_id, payload, state, title, progress_pct, progress_text,
                          attempts, max_attempts, created_at)
  SELECT gen_random_uuid()::text, 'suspend:' || uuid || ':' || to_char(renews_at, 'YYYYMMDD"T"HH24MISS'),
         'service.suspend', id, user_id, json_build_object('reason', 'unpaid'), 'queued', 'Suspend server', 0,
         'Queued', 0, 4, :now
  FROM sus ON CONFLICT (key) DO NOTHING)
INSERT INTO notices (key, user_id, service_id, kind, subject, body, created_at, attempts)
SELECT 'suspended:' || uuid || ':' || to_char(renews_at, 'YYYYMMDD"T"HH24MISS'), user_id, id, 'suspended',
       hostname || ' is suspended: renew within 14 days',
       'Your server ' || hostname || ' was suspended because its renewal of $' || to_char(price_cents / 100.0, 'FM999990.00')
       || ' could not be paid: your wallet balance is $' || to_char(left_cents / 100.0, 'FM999990.00') || E'.\n\n'
       || 'Add at least $' || to_char((price_cents - left_cents) / 100.0, 'FM999990.00')
       || E' and renew the service within 14 days to keep it; after that it is removed with its data.\n\n'
       || E'Top up: https://panel.example/wallet/topup\nYour service: https://panel.example/services/' || uuid || E'\n',
       :now, 0
FROM sus ON CONFLICT (key) DO NOTHING
"""


BENCH_QUEUE = "hostbay-bench-sweep"


def build_app(url, redis_url=None):
    """Production dispatch (``rq``: every new operation is pushed to Redis after its batch commits) when
    ``redis_url`` is given, else ``manual`` (operations stay in the table)."""
    from hostbay.core.clock import FrozenClock
    from hostbay.web import create_app

    return create_app({"SQLALCHEMY_DATABASE_URI": url, "HOSTBAY_JOBS": "rq" if redis_url else "manual",
                       "TESTING": True, "HOSTBAY_REDIS_URL": redis_url, "HOSTBAY_QUEUE": BENCH_QUEUE,
                       "SECRET_KEY": "bench", "HOSTBAY_LOG_LEVEL": "WARNING",
                       "INSTANCE_PATH": str(ROOT / "instance" / "bench")}, clock=FrozenClock(DUE))


def suspension_rows(db):
    """What a suspension writes besides the state: operations, activity, audit and notice rows."""
    return dict(db.session.execute(text(
        "SELECT (SELECT count(*) FROM operations WHERE kind = 'service.suspend') AS ops,"
        " (SELECT count(*) FROM activity_entries WHERE event = 'suspend') AS acts,"
        " (SELECT count(*) FROM audit_entries WHERE action = 'service.suspended') AS audits,"
        " (SELECT count(*) FROM notices WHERE kind = 'suspended') AS notices")).mappings().one())


def reset_and_seed(db, n):
    from hostbay.core.catalog import Package, PackagePrice
    from tests.lifecycle.seed import seed_due

    db.session.remove()
    db.drop_all()
    with db.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
    db.create_all()
    pkg = Package(slug="bench", name="Bench", driver="fake", vcpus=1, memory_mib=512, disk_gib=10)
    pkg.prices = [PackagePrice(cycle="monthly", price_cents=PRICE)]
    db.session.add(pkg)
    db.session.commit()
    seed_due(pkg, users=n // PER_USER, per_user=PER_USER, price_cents=PRICE, balance_cents=BALANCE, due_at=DUE,
             tag="b")
    with db.engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM ANALYZE")


def verify(db, n):
    from hostbay.core.ledger import LedgerEntry, Wallet
    from hostbay.core.services import Service

    counts = dict(db.session.execute(select(Service.state, func.count()).group_by(Service.state)).all())
    renewals = db.session.scalar(select(func.count()).select_from(LedgerEntry).where(LedgerEntry.kind == "renewal"))
    bad_wallets = db.session.scalar(select(func.count()).select_from(Wallet).where(Wallet.balance_cents != 0))
    db.session.commit()
    assert counts == {"active": n * 4 // 5, "suspended": n // 5}, counts
    assert renewals == n * 4 // 5 and bad_wallets == 0, (renewals, bad_wallets)


def main(argv):
    args = [a for a in argv[1:] if not a.startswith("--")]
    n = int(args[0]) if args else 100_000
    batch = int(os.environ.get("HOSTBAY_BENCH_BATCH", "10000"))
    url = os.environ.get("HOSTBAY_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1/hostbay_lifecycle_bench")
    manual = "--manual" in argv
    redis_url = None if manual else os.environ.get("HOSTBAY_BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
    app = build_app(url, redis_url)
    from hostbay.core import renewals
    from hostbay.core.db import db

    rows = []
    with app.app_context():
        reset_and_seed(db, n)
        queued = 0
        if redis_url:
            from rq import Queue

            from hostbay.core import jobs
            # suspensions are money-and-lifecycle jobs: they go to the money queue
            bench_q = Queue(jobs.queue_name(jobs.MONEY, app), connection=jobs.redis_connection(app))
            bench_q.empty()
        t0 = time.perf_counter()
        got = renewals.renewal_sweep(now=DUE, batch_size=batch, dispatch=bool(redis_url))
        sweep_s = time.perf_counter() - t0
        assert got["renewed"] + got["suspended"] == n, got
        verify(db, n)
        sweep_rows = suspension_rows(db)
        db.session.commit()
        if redis_url:
            queued = bench_q.count  # every suspension job reached Redis
            assert queued == n // 5, queued
            bench_q.empty()
        again = renewals.renewal_sweep(now=DUE, batch_size=batch, dispatch=False)
        assert again["batches"] == 0, again

        reset_and_seed(db, n)
        t0 = time.perf_counter()
        with db.engine.begin() as conn:
            conn.execute(text(RAW_SQL), {"now": DUE})
        raw_s = time.perf_counter() - t0
        verify(db, n)
        raw_rows = suspension_rows(db)
        db.session.commit()
        assert sweep_rows == raw_rows == {"ops": n // 5, "acts": n // 5, "audits": n // 5, "notices": n // 5}, \
            (sweep_rows, raw_rows)
        db.session.remove()
        db.engine.dispose()

    ratio = sweep_s / raw_s
    rows = [
        {"case": "renewal_sweep", "metric": "hostbay sweep", "value": round(sweep_s, 2), "unit": "s"},
        {"case": "renewal_sweep", "metric": "hostbay sweep rate", "value": round(n / sweep_s), "unit": "services/s",
         "target": ">= 5000"},
        {"case": "renewal_sweep", "metric": "raw set-based SQL", "value": round(raw_s, 2), "unit": "s"},
        {"case": "renewal_sweep", "metric": "raw SQL rate", "value": round(n / raw_s), "unit": "services/s"},
        {"case": "renewal_sweep", "metric": "sweep / raw", "value": round(ratio, 2), "unit": "x",
         "target": "<= 2" if redis_url else "<= 3"},
        {"case": "renewal_sweep", "metric": "suspension jobs pushed to Redis", "value": queued, "unit": "jobs"},
    ]
    cols = ["case", "metric", "value", "unit", "target"]
    widths = [max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols]
    mode = "manual (no dispatch)" if manual else "rq (production dispatch, one pipeline per batch)"
    print(f"renewal sweep over {n:,} due services (batch {batch}), 80% renew / 20% suspend, jobs: {mode}")
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    for r in rows:
        print("  ".join(str(r.get(c, "")).ljust(w) for c, w in zip(cols, widths)))
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"renewal_sweep-{time.strftime('%Y%m%dT%H%M%S')}.json").write_text(json.dumps(
        {"machine": platform.platform(), "python": platform.python_version(), "services": n, "batch": batch,
         "database": url.split("@")[-1], "jobs": "manual" if manual else "rq", "rows": rows}, indent=2))
    return 0


def _case():
    main(["renewal_sweep"])
    return []


CASES = []

if __name__ == "__main__":
    sys.exit(main(sys.argv))
