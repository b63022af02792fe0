"""The public status page with 20 probes and 90 days of 1-minute samples, rolled up as in production.

Usage: python bench/status_page.py [--url postgresql+psycopg://postgres@127.0.0.1/hostbay_bench_status]
                                   [--days 90] [--probes 20] [--requests 300] [--concurrency 50]

The database named by --url (default: $HOSTBAY_BENCH_DATABASE_URL) is emptied and filled: 20 components with one
probe each, one sample per probe and minute for --days days (a few failures, a one-hour outage, a two-hour
maintenance), folded day by day by the real rollup job (`status.rollup`, which also applies retention), an open
incident, a resolved one and an upcoming maintenance. Then:

- rollup time of one day of samples (each day's run: minutes, hours, the day and retention);
- database size of the status tables after 90 days (PostgreSQL: pg_total_relation_size);
- server time of /status, summary.json and the 24 h / 7 d / 90 d latency series with the cache off (every request
  rendered from the database), measured around the WSGI application call; p95 target <= 50 ms;
- cached requests per second of /status under 50 concurrent keep-alive clients (ApacheBench) against gunicorn
  (2 workers) on loopback.

Prints a table and writes bench/results/status_page.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

TARGET_P95_MS = 50.0
ROOT = Path(__file__).resolve().parents[1]


def build_app(url: str, cache_seconds: int = 0):
    from hostbay.web import create_app

    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": "bench", "HOSTBAY_JOBS": "sync",
                      "WTF_CSRF_ENABLED": False, "RATELIMIT_ENABLED": False, "HOSTBAY_REDIS_URL": None,
                      "INSTANCE_PATH": tempfile.mkdtemp(prefix="hostbay-bench-"), "HOSTBAY_LOG_LEVEL": "WARNING",
                      "HOSTBAY_STATUS_CACHE_SECONDS": cache_seconds})
    return app


def reset(app):
    from hostbay.core.db import db

    with app.app_context():
        db.drop_all()
        with db.engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
        db.create_all()


def seed(app, n_probes: int, days: int) -> dict:
    from hostbay.core import clock
    from hostbay.core.db import db
    from hostbay.plugins.status import rollup
    from hostbay.plugins.status.incidents import (add_update, open_incident, save_component, save_probe,
                                                  schedule_maintenance)
    from hostbay.plugins.status.models import Sample

    rnd = random.Random(16)
    with app.app_context():
        comps, probes = [], []
        for i in range(n_probes):
            c = save_component(None, name=f"Location {i + 1}", group_name=f"Region {i // 5 + 1}", kind="location",
                               location=f"loc{i + 1}", position=i)
            comps.append(c)
        db.session.flush()
        for i, c in enumerate(comps):
            probes.append(save_probe(None, name=f"gw{i + 1}", component_id=c.id, kind="tcp", host="127.0.0.1",
                                     port=9, interval_seconds=60))
        db.session.commit()
        pids = [p.id for p in probes]
        base = {pid: rnd.uniform(3, 60) for pid in pids}
        now = clock.now().replace(second=0)
        first_day = (now - timedelta(days=days)).replace(hour=0, minute=0)
        outage_day, maint_day = first_day + timedelta(days=days // 3), first_day + timedelta(days=days // 2)
        rollup_times, rows_total = [], 0
        day = first_day
        while day < now.replace(hour=0, minute=0):
            rows = []
            for minute in range(1440):
                ts = day + timedelta(minutes=minute)
                for pid in pids:
                    down = rnd.random() < 0.001 or (day == outage_day and 600 <= minute < 660 and pid == pids[0])
                    maint = day == maint_day and 120 <= minute < 240 and pid in pids[:5]
                    rows.append({"probe_id": pid, "ts": ts, "ok": not down, "maintenance": maint,
                                 "latency_ms": None if down else round(base[pid] * rnd.uniform(0.8, 1.6), 3),
                                 "error": "connection refused" if down else None})
            for i in range(0, len(rows), 10000):
                db.session.execute(Sample.__table__.insert(), rows[i:i + 10000])
            db.session.commit()
            rows_total += len(rows)
            t0 = time.perf_counter()
            rollup.run(now=day + timedelta(days=1, minutes=3))
            rollup_times.append(time.perf_counter() - t0)
            day += timedelta(days=1)
        # today so far, left raw as the live system would have it between rollups
        rows = [{"probe_id": pid, "ts": day + timedelta(minutes=m), "ok": True, "maintenance": False,
                 "latency_ms": round(base[pid], 3), "error": None}
                for m in range(int((now - day).total_seconds() // 60)) for pid in pids]
        if rows:
            db.session.execute(Sample.__table__.insert(), rows)
        db.session.commit()
        t0 = time.perf_counter()
        rollup.run(now=now)
        rollup_times.append(time.perf_counter() - t0)
        inc = open_incident(name="Past packet loss", impact="minor", component_status="degraded_performance",
                            component_ids=[comps[1].id], body="Investigating.")
        add_update(inc, status="resolved", body="Resolved.")
        open_incident(name="Elevated latency in Region 1", impact="major", component_status="partial_outage",
                      component_ids=[comps[0].id, comps[2].id], body="We are looking into it.")
        schedule_maintenance(name="Switch upgrade", body="", scheduled_for=now + timedelta(days=3),
                             scheduled_until=now + timedelta(days=3, hours=1), component_ids=[comps[3].id])
        db.session.commit()
        return {"rollup_seconds": rollup_times, "samples": rows_total, "component_uuid": comps[0].uuid}


TABLES = ["status_samples", "status_rollups", "status_probes", "status_components", "status_incidents",
          "status_incident_updates", "status_maintenances", "status_state"]


def _bytes(db) -> int:
    return int(db.session.execute(db.text(
        "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c WHERE c.relname = ANY(:t)"), {"t": TABLES}).scalar())


def db_size(app) -> dict:
    """Row counts and, on PostgreSQL, the size of the status tables (with their indexes and TOAST): as the bench
    left them (the 2.6 million samples it inserted and the rollup deleted are dead tuples until a vacuum), and
    after VACUUM FULL, which is what the data itself needs. In production autovacuum reuses the space of the
    samples each rollup deletes, so the tables stay near the second number."""
    from hostbay.core.db import db

    with app.app_context():
        out = {"rows": {t: db.session.execute(db.text(f'SELECT count(*) FROM "{t}"')).scalar() for t in TABLES}}
        if db.engine.dialect.name == "postgresql":
            out["bytes_before_vacuum"] = _bytes(db)
            db.session.commit()
            with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                for t in TABLES:
                    conn.exec_driver_sql(f'VACUUM FULL ANALYZE "{t}"')
            out["bytes"] = _bytes(db)
        return out


def server_times(app, path: str, n: int) -> list[float]:
    """Milliseconds spent in the WSGI application per request (the cache is off in this app)."""
    inner = app.wsgi_app
    spent: list[float] = []
    cpu: list[float] = []

    def timed(environ, start_response):
        t0, c0 = time.perf_counter(), time.process_time()
        body = b"".join(inner(environ, start_response))
        spent.append((time.perf_counter() - t0) * 1000.0)
        cpu.append((time.process_time() - c0) * 1000.0)
        return [body]

    app.wsgi_app = timed
    client = app.test_client()
    try:
        for _ in range(5):
            assert client.get(path).status_code == 200, path
        spent.clear()
        cpu.clear()
        for _ in range(n):
            client.get(path)
    finally:
        app.wsgi_app = inner
    return spent, cpu


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def cached_rps(url: str, concurrency: int, total: int) -> dict:
    gunicorn = Path(sys.executable).with_name("gunicorn")
    if not gunicorn.exists() or not shutil.which("ab"):
        return {"skipped": "needs gunicorn in the venv and ApacheBench (apache2-utils)"}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, HOSTBAY_DATABASE_URL=url, HOSTBAY_JOBS="sync", HOSTBAY_REDIS_URL="",
               HOSTBAY_INSTANCE_PATH=tempfile.mkdtemp(prefix="hostbay-bench-"), HOSTBAY_LOG_LEVEL="WARNING",
               HOSTBAY_SECRET_KEY="bench", HOSTBAY_STATUS_CACHE_SECONDS="300")
    env.pop("HOSTBAY_REDIS_URL")
    proc = subprocess.Popen([str(gunicorn), "-w", "2", "-k", "gthread", "--threads", "8", "-b", f"127.0.0.1:{port}",
                             "--log-level", "warning", "hostbay.web:create_app()"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}/status"
        for _ in range(100):
            try:
                out = subprocess.run(["ab", "-n", "20", "-c", "2", base], capture_output=True, text=True, timeout=20)
                if "Complete requests:      20" in out.stdout:
                    break
            except subprocess.TimeoutExpired:
                pass
            time.sleep(0.2)
        out = subprocess.run(["ab", "-k", "-n", str(total), "-c", str(concurrency), base], capture_output=True,
                             text=True, timeout=600).stdout
        rps = float(re.search(r"Requests per second:\s+([\d.]+)", out).group(1))
        failed = int(re.search(r"Failed requests:\s+(\d+)", out).group(1))
        p95 = re.search(r"\s95%\s+(\d+)", out)
        return {"requests_per_second": rps, "failed": failed, "requests": total, "concurrency": concurrency,
                "p95_ms_client": int(p95.group(1)) if p95 else None}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default=os.environ.get("HOSTBAY_BENCH_DATABASE_URL",
                                                    "postgresql+psycopg://postgres@127.0.0.1/hostbay_bench_status"))
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--probes", type=int, default=20)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--rps-requests", type=int, default=20000)
    ap.add_argument("--reuse", action="store_true", help="measure the pages of the data a previous run left")
    args = ap.parse_args()

    app = build_app(args.url, cache_seconds=0)
    if args.reuse:
        prev = json.loads((ROOT / "bench" / "results" / "status_page.json").read_text())
        with app.app_context():
            from hostbay.core.db import db
            from hostbay.plugins.status.models import Component

            cu = db.session.scalar(db.select(Component.uuid).order_by(Component.id))
        seeded = {"rollup_seconds": [prev["rollup_one_day_seconds"]["median"]] * 2,
                  "samples": prev["samples_written"]}
        seed_s, size = prev["seed_seconds"], prev["db"]
    else:
        reset(app)
        t0 = time.perf_counter()
        seeded = seed(app, args.probes, args.days)
        seed_s = time.perf_counter() - t0
        size = db_size(app)
        cu = seeded["component_uuid"]
    paths = {"/status": "/status", "summary.json": "/status/api/v2/summary.json",
             "latency 24h": f"/status/api/latency/{cu}.json?range=24h",
             "latency 7d": f"/status/api/latency/{cu}.json?range=7d",
             "latency 90d": f"/status/api/latency/{cu}.json?range=90d"}
    timings = {}
    with app.app_context():
        for label, path in paths.items():
            t, cpu = server_times(app, path, args.requests)
            timings[label] = {"p50_ms": round(statistics.median(t), 2), "p95_ms": round(pct(t, 95), 2),
                              "max_ms": round(max(t), 2), "cpu_p95_ms": round(pct(cpu, 95), 2)}
    rps = cached_rps(args.url, args.concurrency, args.rps_requests)
    days_rolled = seeded["rollup_seconds"][:-1]
    result = {
        "probes": args.probes, "days": args.days, "samples_written": seeded["samples"], "seed_seconds": round(seed_s, 1),
        "rollup_one_day_seconds": {"median": round(statistics.median(days_rolled), 3),
                                   "max": round(max(days_rolled), 3)},
        "db": size, "server_time_uncached": timings, "cached": rps,
        "target_p95_ms": TARGET_P95_MS, "python": platform.python_version(),
        "load": os.getloadavg(), "db_url": args.url.split("@")[-1],
    }
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "status_page.json").write_text(json.dumps(result, indent=2))
    print(f"samples written: {seeded['samples']:,} ({args.probes} probes x {args.days} days x 1440), seeded in "
          f"{seed_s:.0f} s")
    print(f"rollup of one day of samples: median {result['rollup_one_day_seconds']['median'] * 1000:.0f} ms, "
          f"max {result['rollup_one_day_seconds']['max'] * 1000:.0f} ms")
    if "bytes" in size:
        print(f"status tables after {args.days} days: {size['bytes'] / 1024 / 1024:.1f} MiB after VACUUM FULL "
              f"({size['bytes_before_vacuum'] / 1024 / 1024:.1f} MiB before); rows {size['rows']}")
    print("| request (cache off) | p50 ms | p95 ms | max ms | CPU p95 ms |")
    print("|---|---|---|---|---|")
    for label, t in timings.items():
        print(f"| {label} | {t['p50_ms']} | {t['p95_ms']} | {t['max_ms']} | {t['cpu_p95_ms']} |")
    print("cached /status:", rps)
    print("load average:", os.getloadavg())


if __name__ == "__main__":
    main()
