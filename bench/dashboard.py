"""Server-side latency of the customer dashboard (/panel/) for a customer with 5 and with 500 services.

Usage: python bench/dashboard.py [--url postgresql+psycopg://postgres@127.0.0.1/hostbay_bench] [--requests 300]

The database named by --url (default: $HOSTBAY_BENCH_DATABASE_URL) is emptied and filled. Time is measured around
the WSGI application call (routing, session, login, queries, template rendering, response body), not the test
client: wall time (what the target is about) and this process's CPU time (which a busy shared machine inflates
less). Prints a table and writes bench/results/dashboard.json. Target: p95 <= 25 ms at 500 services.
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
from pathlib import Path

from sqlalchemy import event

TARGET_P95_MS = 25.0


def build_app(url: str):
    from hostbay.core.db import db
    from hostbay.web import create_app

    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": "bench", "HOSTBAY_JOBS": "sync",
                      "WTF_CSRF_ENABLED": False, "RATELIMIT_ENABLED": False, "HOSTBAY_REDIS_URL": None,
                      "INSTANCE_PATH": tempfile.mkdtemp(prefix="hostbay-bench-"), "HOSTBAY_LOG_LEVEL": "WARNING"})
    with app.app_context():
        db.drop_all()
        with db.engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
        db.create_all()
    return app


def seed(app, n_services: int, email: str) -> None:
    from hostbay.core import clock, ledger
    from hostbay.core.accounts import create_user
    from hostbay.core.catalog import CYCLES, Package, PackagePrice, add_cycle
    from hostbay.core.db import db
    from hostbay.core.services import Service

    with app.app_context():
        pkgs = []
        for slug, kind, cents in ((f"{email}-vps", "vps", 500), (f"{email}-metal", "dedicated", 9900)):
            p = Package(slug=slug, name=slug, kind=kind, driver="fake", vcpus=2, memory_mib=2048, disk_gib=40)
            p.prices = [PackagePrice(cycle=c, price_cents=cents * m) for c, m in CYCLES.items()]
            db.session.add(p)
            pkgs.append(p)
        user = create_user(email, "bench password 1")
        ledger.credit(user.id, 123456, kind="topup", key=f"bench:{email}", description="Bench top-up")
        db.session.flush()
        now = clock.now()
        states = ["active"] * 8 + ["suspended", "provisioning"]
        db.session.add_all(
            Service(user_id=user.id, package_id=pkgs[i % 5 == 0].id, kind=pkgs[i % 5 == 0].kind,
                    state=states[i % len(states)], hostname=f"s{i}.bench.example", cycle="monthly",
                    price_cents=500, period_start=now, renews_at=add_cycle(now, "monthly"))
            for i in range(n_services))
        # Services a customer does not see, and another customer's, so the filters do real work.
        other = create_user(f"other-{email}", "bench password 1")
        db.session.add_all(
            Service(user_id=uid, package_id=pkgs[0].id, kind="vps", state=state, hostname=f"x{i}.bench.example",
                    cycle="monthly", price_cents=500, period_start=now, renews_at=add_cycle(now, "monthly"))
            for i, (uid, state) in enumerate([(user.id, "terminated")] * 50 + [(other.id, "active")] * 500))
        db.session.commit()
        # Every live service holds an address, as in production (the dashboard shows the main IP).
        from hostbay.core import ipam

        pool = ipam.create_pool(name=f"bench-{email}", cidr=f"10.{len(email) % 200}.0.0/16", gateway=None)
        live = db.session.scalars(db.select(Service.id).where(Service.user_id == user.id,
                                                              Service.state != "terminated")).all()
        for sid in live:
            ipam.take_ipv4(pool.id, 1, sid)
        db.session.commit()


def measure(app, email: str, requests: int) -> dict:
    from hostbay.core.db import db

    timings: list[float] = []
    cpu: list[float] = []
    inner = app.wsgi_app

    def timed(environ, start_response):
        t0, c0 = time.perf_counter(), time.thread_time()
        body = b"".join(inner(environ, start_response))
        timings.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
        return [body]

    app.wsgi_app = timed
    client = app.test_client()
    resp = client.post("/login", data={"email": email, "password": "bench password 1"})
    assert resp.status_code == 302, resp.status_code
    for _ in range(20):  # warm-up: template compilation, connection pool, statement caches
        assert client.get("/panel/").status_code == 200
    statements = []
    with app.app_context():
        engine = db.engine

    def count(*_a, **_k):
        statements.append(1)

    event.listen(engine, "before_cursor_execute", count)
    timings.clear()
    cpu.clear()
    size = 0
    for _ in range(requests):
        r = client.get("/panel/")
        size = len(r.data)
    event.remove(engine, "before_cursor_execute", count)
    app.wsgi_app = inner
    ms = sorted(t * 1000 for t in timings)
    cpu_ms = sorted(t * 1000 for t in cpu)

    def pct(p, values=ms):
        return values[min(len(values) - 1, max(0, int(round(p / 100 * len(values) + 0.5)) - 1))]

    return {"requests": len(ms), "p50_ms": round(statistics.median(ms), 2), "p95_ms": round(pct(95), 2),
            "cpu_p50_ms": round(statistics.median(cpu_ms), 2), "cpu_p95_ms": round(pct(95, cpu_ms), 2),
            "p99_ms": round(pct(99), 2), "max_ms": round(ms[-1], 2), "mean_ms": round(statistics.fmean(ms), 2),
            "queries_per_request": len(statements) / len(ms), "response_bytes": size}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("HOSTBAY_BENCH_DATABASE_URL",
                                                        "postgresql+psycopg://postgres@127.0.0.1/hostbay_account"))
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--sizes", default="5,500")
    args = parser.parse_args(argv)

    app = build_app(args.url)
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    for n in sizes:
        email = f"bench{n}@example.test"
        seed(app, n, email)
    for n in sizes:
        res = measure(app, f"bench{n}@example.test", args.requests)
        res["services"] = n
        rows.append(res)

    db_kind = args.url.split(":", 1)[0]
    print(f"dashboard /panel/ — server-side latency ({db_kind}, {args.requests} requests each)")
    print(f"{'services':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8} {'cpu p50':>8} {'cpu p95':>8} "
          f"{'queries':>8} {'bytes':>8}")
    for r in rows:
        print(f"{r['services']:>8} {r['p50_ms']:>8} {r['p95_ms']:>8} {r['p99_ms']:>8} {r['max_ms']:>8} "
              f"{r['cpu_p50_ms']:>8} {r['cpu_p95_ms']:>8} {r['queries_per_request']:>8.1f} {r['response_bytes']:>8}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    print(f"load average (1 min) during the run: {load:.2f} on {os.cpu_count()} CPUs" if load is not None else "")
    big = max(rows, key=lambda r: r["services"])
    ok = big["p95_ms"] <= TARGET_P95_MS
    print(f"target p95 <= {TARGET_P95_MS} ms at {big['services']} services: {'met' if ok else 'NOT met'}")

    out = Path(__file__).parent / "results" / "dashboard.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"bench": "dashboard", "database": db_kind, "target_p95_ms": TARGET_P95_MS,
                               "target_met": ok, "python": platform.python_version(),
                               "machine": platform.machine(), "cpus": os.cpu_count(),
                               "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
                               "results": rows}, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
