"""REST API cost on the server side (WSGI test client, no network): a token-authenticated list of 100 services,
an order with a fresh Idempotency-Key (debit + service + queued job + key row) and its replay.

    python bench/api.py [--db URL] [--n 200]

Without --db a temporary SQLite file is used. With a PostgreSQL URL the tables are created if missing and emptied
afterwards: point it at a scratch database. Prints a table and writes bench/results/api-<db>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", default=None)
    ap.add_argument("--n", type=int, default=200)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="hostbay-bench-")
    url = args.db or f"sqlite:///{tmp}/bench.sqlite3"

    from hostbay.core import credentials, ledger
    from hostbay.core.accounts import create_user
    from hostbay.core.catalog import CYCLES, Image, Package, PackagePrice, add_cycle
    from hostbay.core.clock import FrozenClock
    from hostbay.core.db import db
    from hostbay.core.services import Service
    from hostbay.testing.pytest_plugin import DEFAULT_NOW, _empty_tables
    from hostbay.web import create_app

    clock = FrozenClock(DEFAULT_NOW)
    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "TESTING": True, "HOSTBAY_JOBS": "manual",
                      "INSTANCE_PATH": f"{tmp}/instance", "SECRET_KEY": "bench", "RATELIMIT_ENABLED": False,
                      "HOSTBAY_REDIS_URL": None, "HOSTBAY_API_RATE_LIMIT": "1000000 per minute"}, clock=clock)
    rows = []

    def timed(name, n, fn):
        samples = []
        for i in range(n):
            t0 = time.perf_counter()
            fn(i)
            samples.append((time.perf_counter() - t0) * 1000)
        samples.sort()
        rows.append({"case": name, "n": n, "p50_ms": round(statistics.median(samples), 2),
                     "p95_ms": round(samples[int(0.95 * (n - 1))], 2)})

    with app.app_context():
        db.create_all()
        try:
            user = create_user("bench-api@example.test", "bench password 1")
            pkg = Package(slug="bench-api", name="Bench", driver="fake", disk_gib=20)
            pkg.prices = [PackagePrice(cycle=c, price_cents=100 * m) for c, m in CYCLES.items()]
            img = Image(driver="fake", slug="bench-img", name="Bench image", source="x.qcow2")
            db.session.add_all([pkg, img])
            db.session.flush()
            for i in range(100):
                db.session.add(Service(user_id=user.id, package_id=pkg.id, state="active", hostname=f"s{i}.example",
                                       cycle="monthly", price_cents=100, period_start=DEFAULT_NOW,
                                       renews_at=add_cycle(DEFAULT_NOW, "monthly")))
            ledger.credit(user.id, 10 ** 9, kind="topup", key="bench-api", description="Bench")
            raw = credentials.create_api_token(user, "bench")[1]
            db.session.commit()
            client = app.test_client()
            h = {"Authorization": f"Bearer {raw}"}

            def list_services(_i):
                r = client.get("/api/v1/services?per_page=100", headers=h)
                assert r.status_code == 200 and len(r.get_json()["items"]) == 100

            body = {"package": pkg.uuid, "cycle": "monthly", "hostname": "web.example", "image": img.uuid}

            def order(i):
                r = client.post("/api/v1/orders", json=body, headers=h | {"Idempotency-Key": f"bench-{i}"})
                assert r.status_code == 201, r.data

            def replay(i):
                r = client.post("/api/v1/orders", json=body, headers=h | {"Idempotency-Key": f"bench-{i}"})
                assert r.headers.get("Idempotent-Replayed") == "true"

            timed("GET /api/v1/services (100 services)", args.n, list_services)
            timed("POST /api/v1/orders (new key)", args.n, order)
            timed("POST /api/v1/orders (replayed key)", args.n, replay)
        finally:
            db.session.remove()
            _empty_tables(db)
    kind = url.split(":")[0].split("+")[0]
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / f"api-{kind}.json").write_text(json.dumps(rows, indent=2))
    for r in rows:
        print(f"{r['case']:40s} n={r['n']:4d}  p50 {r['p50_ms']:7.2f} ms  p95 {r['p95_ms']:7.2f} ms")


if __name__ == "__main__":
    main()
