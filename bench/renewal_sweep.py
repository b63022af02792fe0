"""Renewal sweep over 100,000 due services on PostgreSQL (80% renew, 20% suspend), timed beside one raw set-based
SQL statement that performs the same ledger inserts, wallet updates and service updates.

    HOSTBAY_BENCH_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1/hostbay_lifecycle_bench .venv/bin/python bench/renewal_sweep.py [N]

The database's tables are dropped and created. Customers own 5 services of $10 each and hold $40, so each renews
four and has one suspended: the sweep must respect the balance across several services of one customer.
The sweep also writes what the raw statement does not: customer activity and audit rows for every service, and
the suspension operations and notices; both figures are printed.
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
  FROM paid WHERE s.id = paid.id)
UPDATE services s SET state = 'suspended', suspended_at = :now, updated_at = :now
FROM due WHERE s.id = due.id AND due.running > due.balance_cents
"""


def build_app(url):
    from hostbay.core.clock import FrozenClock
    from hostbay.web import create_app

    return create_app({"SQLALCHEMY_DATABASE_URI": url, "HOSTBAY_JOBS": "manual", "TESTING": True,
                       "HOSTBAY_REDIS_URL": None, "SECRET_KEY": "bench", "HOSTBAY_LOG_LEVEL": "WARNING",
                       "INSTANCE_PATH": str(ROOT / "instance" / "bench")}, clock=FrozenClock(DUE))


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
    n = int(argv[1]) if len(argv) > 1 else 100_000
    batch = int(os.environ.get("HOSTBAY_BENCH_BATCH", "10000"))
    url = os.environ.get("HOSTBAY_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1/hostbay_lifecycle_bench")
    app = build_app(url)
    from hostbay.core import lifecycle
    from hostbay.core.db import db

    rows = []
    with app.app_context():
        reset_and_seed(db, n)
        t0 = time.perf_counter()
        got = lifecycle.renewal_sweep(now=DUE, batch_size=batch, dispatch=False)
        sweep_s = time.perf_counter() - t0
        assert got["renewed"] + got["suspended"] == n, got
        verify(db, n)
        again = lifecycle.renewal_sweep(now=DUE, batch_size=batch, dispatch=False)
        assert again["batches"] == 0, again

        reset_and_seed(db, n)
        t0 = time.perf_counter()
        with db.engine.begin() as conn:
            conn.execute(text(RAW_SQL), {"now": DUE})
        raw_s = time.perf_counter() - t0
        verify(db, n)
        db.session.remove()
        db.engine.dispose()

    ratio = sweep_s / raw_s
    rows = [
        {"case": "renewal_sweep", "metric": "hostbay sweep", "value": round(sweep_s, 2), "unit": "s"},
        {"case": "renewal_sweep", "metric": "hostbay sweep rate", "value": round(n / sweep_s), "unit": "services/s",
         "target": ">= 5000"},
        {"case": "renewal_sweep", "metric": "raw set-based SQL", "value": round(raw_s, 2), "unit": "s"},
        {"case": "renewal_sweep", "metric": "raw SQL rate", "value": round(n / raw_s), "unit": "services/s"},
        {"case": "renewal_sweep", "metric": "sweep / raw", "value": round(ratio, 2), "unit": "x", "target": "<= 3"},
    ]
    cols = ["case", "metric", "value", "unit", "target"]
    widths = [max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols]
    print(f"renewal sweep over {n:,} due services (batch {batch}), 80% renew / 20% suspend")
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    for r in rows:
        print("  ".join(str(r.get(c, "")).ljust(w) for c, w in zip(cols, widths)))
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"renewal_sweep-{time.strftime('%Y%m%dT%H%M%S')}.json").write_text(json.dumps(
        {"machine": platform.platform(), "python": platform.python_version(), "services": n, "batch": batch,
         "database": url.split("@")[-1], "rows": rows}, indent=2))
    return 0


def _case():
    main(["renewal_sweep"])
    return []


CASES = []

if __name__ == "__main__":
    sys.exit(main(sys.argv))
