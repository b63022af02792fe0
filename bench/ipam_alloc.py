"""Time to allocate the next free IPv4 address from a /16 pool that is 1% and 99% used.

    python bench/ipam_alloc.py [--db URL] [--runs 300]

``--db`` defaults to HOSTBAY_BENCH_DATABASE_URL, then HOSTBAY_TEST_DATABASE_URL, then a temporary SQLite file.
The database's tables are dropped and re-created: point it at a scratch database. Each case builds a fresh /16
(65,536 rows), marks a random share of the addresses as assigned with one bulk UPDATE, runs ANALYZE (VACUUM ANALYZE
on PostgreSQL, as autovacuum would), then times ``--runs`` allocations of one address, each in its own committed
transaction (what provisioning does). The "no vacuum" case skips the VACUUM to show the cost right after a mass
change, before autovacuum has run. Prints a table and writes bench/results/ipam_alloc.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", default=os.environ.get("HOSTBAY_BENCH_DATABASE_URL")
                    or os.environ.get("HOSTBAY_TEST_DATABASE_URL"))
    ap.add_argument("--runs", type=int, default=300)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="hostbay-bench-")
    url = args.db or f"sqlite:///{tmp}/bench.sqlite3"

    from sqlalchemy import text

    from hostbay.core import ipam
    from hostbay.core.accounts import create_user
    from hostbay.core.catalog import Package
    from hostbay.core.db import db
    from hostbay.core.services import Service
    from hostbay.web import create_app

    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "TESTING": True, "HOSTBAY_JOBS": "sync",
                      "INSTANCE_PATH": tmp, "SECRET_KEY": "bench", "HOSTBAY_REDIS_URL": None})
    cases = [("1% used", 0.01, True), ("99% used", 0.99, True)]
    if url.startswith("postgresql"):
        cases.append(("99% used, no vacuum", 0.99, False))
    rows = []
    with app.app_context():
        dialect = db.engine.dialect.name
        for label, fill, vacuum in cases:
            db.session.remove()
            db.drop_all()
            db.create_all()
            now = datetime(2026, 1, 1)
            user = create_user("bench@example.test", "bench password 1")
            pkg = Package(slug="bench", name="Bench", driver="fake")
            db.session.add(pkg)
            db.session.flush()
            holder = Service(user_id=user.id, package_id=pkg.id, hostname="holder.example.test", cycle="monthly",
                             price_cents=0, period_start=now, renews_at=now, state="active")
            taker = Service(user_id=user.id, package_id=pkg.id, hostname="taker.example.test", cycle="monthly",
                            price_cents=0, period_start=now, renews_at=now, state="active")
            db.session.add_all([holder, taker])
            pool = ipam.create_pool(name="bench", cidr="10.128.0.0/16")
            rand = "random() < :fill" if dialect == "postgresql" else "(abs(random()) % 1000000) < :fill * 1000000"
            db.session.execute(text(f"UPDATE ip_addresses SET state='assigned', service_id=:s "
                                    f"WHERE pool_id=:p AND state='free' AND {rand}"),
                               {"s": holder.id, "p": pool.id, "fill": fill})
            db.session.commit()
            with db.engine.connect() as conn:
                if dialect == "postgresql":
                    conn = conn.execution_options(isolation_level="AUTOCOMMIT")
                    conn.exec_driver_sql("VACUUM ANALYZE ip_addresses" if vacuum else "ANALYZE ip_addresses")
                else:
                    conn.exec_driver_sql("ANALYZE")
                    conn.commit()
            used = ipam.pool_usage(pool)
            pool_id, taker_id = pool.id, taker.id
            db.session.commit()
            plan = {}
            if dialect == "postgresql":
                # Server-side cost of the same statement, independent of client overhead and machine load.
                explain = db.session.execute(text(
                    "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) WITH picked AS MATERIALIZED ("
                    " SELECT id FROM ip_addresses WHERE pool_id = :p AND state = 'free' AND available_at <= :now"
                    " ORDER BY available_at, ordinal LIMIT 1 FOR UPDATE SKIP LOCKED)"
                    " UPDATE ip_addresses SET state = 'assigned', service_id = :s FROM picked"
                    " WHERE ip_addresses.id = picked.id AND ip_addresses.state = 'free' RETURNING ip_addresses.id"),
                    {"p": pool_id, "s": taker_id, "now": datetime(2026, 1, 1)}).scalar()
                db.session.rollback()
                top = explain[0]
                plan = {"server_exec_ms": round(top["Execution Time"], 3),
                        "shared_buffers_touched": top["Plan"].get("Shared Hit Blocks", 0)
                        + top["Plan"].get("Shared Read Blocks", 0)}
            alloc, total, trip = [], [], []
            for _ in range(args.runs):
                t_ = time.perf_counter()
                db.session.execute(text("SELECT 1"))  # opens the transaction; also the round-trip baseline
                trip.append((time.perf_counter() - t_) * 1000)
                t0 = time.perf_counter()
                got = ipam.take_ipv4(pool_id, 1, taker_id)
                t1 = time.perf_counter()
                db.session.commit()
                t2 = time.perf_counter()
                alloc.append((t1 - t0) * 1000)
                total.append((t2 - t0) * 1000)
                assert len(got) == 1
            alloc.sort()
            total.sort()
            p95 = lambda xs: xs[int(len(xs) * 0.95) - 1]  # noqa: E731
            rows.append({"case": label, "used_pct": round(100 * used["assigned"] / used["size"], 2),
                         "free_before": used["free"], "runs": args.runs,
                         "alloc_median_ms": round(statistics.median(alloc), 3), "alloc_p95_ms": round(p95(alloc), 3),
                         "alloc_mean_ms": round(statistics.fmean(alloc), 3),
                         "with_commit_median_ms": round(statistics.median(total), 3),
                         "with_commit_p95_ms": round(p95(total), 3),
                         "select1_median_ms": round(statistics.median(trip), 3), **plan})
        db.session.remove()
        db.drop_all()
    print(f"IPv4 allocation from a /16, one address per committed transaction ({dialect}, {args.runs} runs)")
    print("allocation = the UPDATE that picks and assigns; + commit = including the durable commit;")
    print("SELECT 1 = one client round trip on the same connection (the floor of any statement)")
    print(f"{'case':<22}{'used %':>8}{'alloc median':>14}{'alloc p95':>11}{'alloc mean':>12}"
          f"{'+commit median':>16}{'+commit p95':>13}{'SELECT 1':>10}  (ms)")
    for r in rows:
        print(f"{r['case']:<22}{r['used_pct']:>8}{r['alloc_median_ms']:>14}{r['alloc_p95_ms']:>11}"
              f"{r['alloc_mean_ms']:>12}{r['with_commit_median_ms']:>16}{r['with_commit_p95_ms']:>13}"
              f"{r['select1_median_ms']:>10}"
              + (f"   server {r['server_exec_ms']} ms, {r['shared_buffers_touched']} buffers"
                 if "server_exec_ms" in r else ""))
    out = Path(__file__).parent / "results" / f"ipam_alloc_{dialect}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"bench": "ipam_alloc", "database": dialect, "python": platform.python_version(),
                               "at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "results": rows},
                              indent=2) + "\n")
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
