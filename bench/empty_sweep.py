"""A renewal sweep when nothing is due, on PostgreSQL: 20,000 active services (none due) and 20,000 ended ones
whose renewal dates are long past. The sweep runs every 30 s, so this is its standing cost; the due-time query's
plan is printed (it must use ``ix_services_state_renews_at``).

    HOSTBAY_BENCH_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1/hostbay_lifecycle_bench \
    .venv/bin/python bench/empty_sweep.py [N] [RUNS]

The database's tables are dropped and created.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import text  # noqa: E402

NOW = datetime(2026, 3, 1, 12, 0, 0)


def main(argv):
    args = [a for a in argv[1:] if not a.startswith("--")]
    n = int(args[0]) if args else 20_000
    runs = int(args[1]) if len(args) > 1 else 200
    url = os.environ.get("HOSTBAY_BENCH_DATABASE_URL",
                         "postgresql+psycopg://postgres@127.0.0.1/hostbay_lifecycle_bench")
    from hostbay.core.catalog import Package, PackagePrice
    from hostbay.core.clock import FrozenClock
    from hostbay.core.db import db
    from hostbay.core import renewals
    from hostbay.web import create_app
    from tests.lifecycle.seed import seed_due

    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "HOSTBAY_JOBS": "manual", "TESTING": True,
                      "SECRET_KEY": "bench", "HOSTBAY_LOG_LEVEL": "WARNING",
                      "INSTANCE_PATH": str(ROOT / "instance" / "bench")}, clock=FrozenClock(NOW))
    with app.app_context():
        db.session.remove()
        db.drop_all()
        with db.engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
        db.create_all()
        pkg = Package(slug="bench", name="Bench", driver="fake", vcpus=1, memory_mib=512, disk_gib=10)
        pkg.prices = [PackagePrice(cycle="monthly", price_cents=1000)]
        db.session.add(pkg)
        db.session.commit()
        seed_due(pkg, users=n // 5, per_user=5, price_cents=1000, balance_cents=0, due_at=NOW + timedelta(days=10),
                 tag="e")
        db.session.execute(text(
            "INSERT INTO services (uuid, user_id, package_id, kind, state, hostname, cycle, price_cents, ssh_key_ids,"
            " period_start, renews_at, cancel_at_period_end, infra_ref, created_at, updated_at)"
            " SELECT gen_random_uuid()::text, user_id, package_id, kind, 'terminated', hostname, cycle, price_cents,"
            " ssh_key_ids, period_start - interval '400 days', renews_at - interval '400 days', false, infra_ref,"
            " created_at, updated_at FROM services"))
        db.session.commit()
        with db.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM ANALYZE")
        q = renewals.due_query(NOW).compile(dialect=db.engine.dialect, compile_kwargs={"literal_binds": True})
        plan = "\n".join(db.session.execute(text(f"EXPLAIN ANALYZE {q}")).scalars())
        db.session.rollback()
        assert "ix_services_state_renews_at" in plan, plan
        for _ in range(10):  # warm the pool and caches
            renewals.renewal_sweep(now=NOW)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            got = renewals.renewal_sweep(now=NOW)
            times.append((time.perf_counter() - t0) * 1000)
            assert got["batches"] == 0, got
        db.session.remove()
        db.engine.dispose()
    times.sort()
    print(f"empty renewal sweep: {n:,} active services none due + {n:,} ended ones past due, {runs} runs")
    print(f"  p50 {statistics.median(times):.2f} ms   p95 {times[int(runs * 0.95) - 1]:.2f} ms   "
          f"max {times[-1]:.2f} ms")
    print("due-time query plan (EXPLAIN ANALYZE):")
    print("  " + plan.replace("\n", "\n  "))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
