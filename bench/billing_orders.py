"""Billing throughput: ledger credits, orders (debit + service + queued job, one transaction), package-change
quotes and changes, and the billing history page and CSV export of a customer with many entries.

    python bench/billing_orders.py [--db URL] [--n 300] [--background 20000]

Before anything is timed the database gets ``--background`` other customers' services (4 per customer, with
their wallets and top-ups), so the orders are measured on a database that is not empty.

Without --db a temporary SQLite file is used. With a PostgreSQL URL the tables are created if missing and emptied
afterwards: point it at a scratch database. Prints a table and writes bench/results/billing_orders-<db>.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", default=None)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--background", type=int, default=20000, help="other customers' services seeded first")
    args = ap.parse_args()
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.lifecycle.seed
    tmp = tempfile.mkdtemp(prefix="hostbay-bench-")
    url = args.db or f"sqlite:///{tmp}/bench.sqlite3"

    from hostbay.core import billing, ledger, services
    from hostbay.core.accounts import User
    from hostbay.core.catalog import CYCLES, Image, Package, PackagePrice
    from hostbay.core.clock import FrozenClock
    from hostbay.core.db import db
    from hostbay.testing.pytest_plugin import DEFAULT_NOW, _empty_tables
    from hostbay.web import create_app

    clock = FrozenClock(DEFAULT_NOW)
    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "TESTING": True, "HOSTBAY_JOBS": "manual",
                      "WTF_CSRF_ENABLED": False, "INSTANCE_PATH": f"{tmp}/instance", "SECRET_KEY": "bench",
                      "RATELIMIT_ENABLED": False, "HOSTBAY_REDIS_URL": None}, clock=clock)
    rows = []

    def measure(name, n, fn):
        t0 = time.perf_counter()
        for i in range(n):
            fn(i)
        dt = time.perf_counter() - t0
        rows.append({"case": name, "n": n, "total_s": round(dt, 3), "per_op_ms": round(dt / n * 1000, 2),
                     "ops_per_s": round(n / dt, 1)})

    with app.app_context():
        db.create_all()
        try:
            user = User(email="bench@example.test", password_hash="-")
            db.session.add(user)
            pkgs = []
            for slug, price, disk in (("s", 1000, 20), ("m", 2000, 40)):
                p = Package(slug=f"bench-{slug}", name=f"Bench {slug}", driver="fake", disk_gib=disk)
                p.prices = [PackagePrice(cycle=c, price_cents=price * m) for c, m in CYCLES.items()]
                db.session.add(p)
                pkgs.append(p)
            img = Image(driver="fake", slug="bench", name="Bench", source="x")
            db.session.add(img)
            db.session.commit()
            if args.background:
                from datetime import timedelta

                from tests.lifecycle.seed import seed_due

                seed_due(pkgs[0], users=args.background // 4, per_user=4, price_cents=1000, balance_cents=5000,
                         due_at=DEFAULT_NOW + timedelta(days=20), tag="bg")
                if db.engine.dialect.name == "postgresql":
                    with db.engine.connect() as conn:
                        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM ANALYZE")
            background = db.session.scalar(db.select(db.func.count()).select_from(services.Service))
            db.session.commit()
            n = args.n

            def topup(i):
                ledger.credit(user.id, 10000, kind="topup", key=f"bench-topup-{i}", description="Top-up")
                db.session.commit()

            measure("ledger credit + commit", n, topup)
            svcs = []

            def order(i):
                svcs.append(billing.place_order(user, pkgs[0], "monthly", f"h{i}.example.test", img, key=f"o{i}"))
                db.session.commit()  # the caller's commit, as the order view does

            measure("place_order (debit + service + job)", n, order)
            measure("place_order replay (same key)", n, lambda i: billing.place_order(
                user, pkgs[0], "monthly", f"h{i}.example.test", img, key=f"o{i}"))
            for s in svcs:
                services.transition(s, services.PROVISIONING)
                services.transition(s, services.ACTIVE)
            db.session.commit()
            clock.advance(days=9, hours=5)
            measure("quote_change", n, lambda i: billing.quote_change(svcs[i], pkgs[1]))
            measure("change_package (upgrade)", n, lambda i: billing.change_package(svcs[i], pkgs[1], user,
                                                                                    key=f"c{i}"))
            entries = db.session.scalar(db.select(db.func.count()).select_from(ledger.LedgerEntry))
            client = app.test_client()
            with client.session_transaction() as sess:
                sess["_user_id"] = user.uuid
                sess["_fresh"] = True
            measure(f"GET /panel/billing ({entries} entries, latest 500 shown)", 20,
                    lambda i: client.get("/panel/billing"))
            measure(f"GET /panel/billing/export.csv ({entries} entries)", 20,
                    lambda i: client.get("/panel/billing/export.csv"))
            assert ledger.balance_cents(user.id) == ledger.ledger_sum_cents(user.id)
        finally:
            db.session.remove()
            if args.db:
                _empty_tables(db)
            db.engine.dispose()

    dialect = url.split(":")[0].split("+")[0]
    width = max(len(r["case"]) for r in rows)
    print(f"billing benchmark on {dialect} ({platform.python_version()}, {platform.machine()}), "
          f"{background} services in the database before the orders")
    print(f"{'case':<{width}}  {'n':>5}  {'total s':>8}  {'ms/op':>8}  {'ops/s':>8}")
    for r in rows:
        print(f"{r['case']:<{width}}  {r['n']:>5}  {r['total_s']:>8}  {r['per_op_ms']:>8}  {r['ops_per_s']:>8}")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / f"billing_orders-{dialect}.json").write_text(json.dumps(
        {"benchmark": "billing_orders", "database": dialect, "background_services": background, "python": platform.python_version(), "rows": rows},
        indent=2))


if __name__ == "__main__":
    main()
