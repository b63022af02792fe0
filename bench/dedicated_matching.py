"""Dedicated orders under contention: many customers order at once from a small inventory; every order reserves a
server (``LIMIT 1 FOR UPDATE SKIP LOCKED`` + conditional UPDATE) and pays, or is refused before any charge.

    python bench/dedicated_matching.py --db postgresql+psycopg://postgres@127.0.0.1/scratch [--orders 400]
        [--servers 200] [--threads 16]

Point --db at a scratch PostgreSQL database (tables are created and emptied). Checks the outcome (exactly
``servers`` orders charged, each server once, wallets equal their ledgers) and prints orders/s and latency.
Writes bench/results/dedicated_matching.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import threading
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", required=True)
    ap.add_argument("--orders", type=int, default=400)
    ap.add_argument("--servers", type=int, default=200)
    ap.add_argument("--threads", type=int, default=16)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="hostbay-bench-")

    from sqlalchemy import func, select

    from hostbay.core import billing, ledger
    from hostbay.core.accounts import User
    from hostbay.core.catalog import CYCLES, Package, PackagePrice
    from hostbay.core.clock import FrozenClock
    from hostbay.core.db import db
    from hostbay.core.inventory import HardwareServer, OutOfStock
    from hostbay.core.ledger import LedgerEntry
    from hostbay.testing.pytest_plugin import DEFAULT_NOW, _empty_tables
    from hostbay.web import create_app

    app = create_app({"SQLALCHEMY_DATABASE_URI": args.db, "TESTING": True, "HOSTBAY_JOBS": "manual",
                      "WTF_CSRF_ENABLED": False, "INSTANCE_PATH": f"{tmp}/instance", "SECRET_KEY": "bench",
                      "RATELIMIT_ENABLED": False, "HOSTBAY_REDIS_URL": None,
                      "SQLALCHEMY_ENGINE_OPTIONS": {"pool_size": args.threads + 2}}, clock=FrozenClock(DEFAULT_NOW))
    with app.app_context():
        db.create_all()
        _empty_tables(db)
        pkg = Package(slug="bench-metal", name="Bench metal", kind="dedicated", driver="ipmi", ipv4_count=0,
                      hardware={"min_cores": 8, "min_ram_gib": 32, "location": "fra1"})
        pkg.prices = [PackagePrice(cycle=c, price_cents=9900 * m) for c, m in CYCLES.items()]
        db.session.add(pkg)
        for i in range(args.servers * 3):  # a third match; the rest are too small or elsewhere
            kind = i % 3
            db.session.add(HardwareServer(name=f"b{i}", cpu_model="Xeon", cpu_cores=8 if kind == 0 else 4,
                                          ram_gib=64, disk_size_gib=960,
                                          location="fra1" if kind != 2 else "ams1"))
        users = [User(email=f"b{i}@example.test", password_hash="-") for i in range(args.orders)]
        db.session.add_all(users)
        db.session.flush()
        for u in users:
            ledger.credit(u.id, 10000, kind="topup", key=f"bench:{u.id}", description="Bench")
        db.session.commit()
        user_ids, pkg_id = [u.id for u in users], pkg.id

    lat_ok, lat_refused, lock = [], [], threading.Lock()
    todo = list(enumerate(user_ids))
    start = threading.Barrier(args.threads)

    def worker():
        with app.app_context():
            start.wait()
            while True:
                with lock:
                    if not todo:
                        break
                    i, uid = todo.pop()
                user, package = db.session.get(User, uid), db.session.get(Package, pkg_id)
                t0 = time.perf_counter()
                try:
                    billing.place_order(user, package, "monthly", f"m{i}.example.com", key=f"o{i}")
                    db.session.commit()
                    dt, out = time.perf_counter() - t0, lat_ok
                except OutOfStock:
                    dt, out = time.perf_counter() - t0, lat_refused
                with lock:
                    out.append(dt)
                db.session.remove()

    threads = [threading.Thread(target=worker) for _ in range(args.threads)]
    t0 = time.perf_counter()
    [t.start() for t in threads]
    [t.join() for t in threads]
    total = time.perf_counter() - t0

    with app.app_context():
        charged = db.session.scalar(select(func.count()).select_from(LedgerEntry).where(LedgerEntry.kind == "order"))
        owned = db.session.scalar(select(func.count(func.distinct(HardwareServer.service_id)))
                                  .where(HardwareServer.service_id.is_not(None)))
        assert len(lat_ok) == args.servers == charged == owned, (len(lat_ok), charged, owned)
        assert len(lat_refused) == args.orders - args.servers
        bad = [u for u in user_ids if ledger.balance_cents(u) != ledger.ledger_sum_cents(u)]
        assert not bad
        db.session.remove()  # TRUNCATE waits for every open transaction, this one's too
        _empty_tables(db)

    def pct(xs, p):
        xs = sorted(xs)
        return round(xs[min(len(xs) - 1, int(len(xs) * p))] * 1000, 1) if xs else None

    row = {"orders": args.orders, "servers": args.servers, "threads": args.threads, "total_s": round(total, 2),
           "orders_per_s": round(args.orders / total, 1), "charged": len(lat_ok), "refused": len(lat_refused),
           "ok_p50_ms": pct(lat_ok, 0.5), "ok_p95_ms": pct(lat_ok, 0.95), "refused_p50_ms": pct(lat_refused, 0.5),
           "refused_p95_ms": pct(lat_refused, 0.95), "python": platform.python_version()}
    for k, v in row.items():
        print(f"{k:16s} {v}")
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / "dedicated_matching.json").write_text(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
