"""Scale-out: 2,000 jobs whose one driver call waits 50 ms (I/O-bound, like a hypervisor call) through 1, 2, 4 and
8 ``hostbay worker`` processes on one Redis and one PostgreSQL.

    HOSTBAY_BENCH_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1/hostbay_scaleout_bench \\
    HOSTBAY_BENCH_REDIS_URL=redis://127.0.0.1:6379/12 .venv/bin/python bench/scaleout.py [--jobs 2000] [--wait 0.05] [--workers 1,2,4,8]

For each worker count the workers are started first and waited for (registered with RQ), then the jobs are
enqueued in one transaction (``fake.wait`` operations, dispatched after commit in one Redis pipeline per 1,000) and
the clock runs from that commit until every operation is ``succeeded``. Proof that no job ran twice: each run of
the handler appends its operation id to a Redis list; the list holds exactly one entry per operation, and every
operation was claimed once (``attempts == 1``). The database's tables are dropped and created.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select, text  # noqa: E402

HOSTBAY = Path(sys.executable).with_name("hostbay")


def ensure_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    base = url.replace("postgresql+psycopg://", "postgresql://").rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(base, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def build_app(url, redis_url, queue):
    from hostbay.web import create_app

    return create_app({"SQLALCHEMY_DATABASE_URI": url, "HOSTBAY_JOBS": "rq", "TESTING": True,
                       "HOSTBAY_REDIS_URL": redis_url, "HOSTBAY_QUEUE": queue, "HOSTBAY_PLUGINS": ["fake"],
                       "SECRET_KEY": "bench", "HOSTBAY_LOG_LEVEL": "WARNING",
                       "INSTANCE_PATH": str(ROOT / "instance" / "bench")})


def start_workers(n, env, conn, queue, timeout=60):
    from rq import Queue, Worker

    procs = [subprocess.Popen([str(HOSTBAY), "worker", "--without-scheduler"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(n)]
    q = Queue(f"{queue}-money", connection=conn)  # every worker serves all classes, money first
    deadline = time.monotonic() + timeout
    while len(Worker.all(queue=q)) < n:
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            stop_workers(procs)
            raise RuntimeError("workers did not start: " + b"".join(p.stderr.read() or b"" for p in procs
                                                                      if p.poll() is not None).decode()[-2000:])
        time.sleep(0.1)
    return procs


def stop_workers(procs, timeout=30):
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)  # RQ's warm shutdown: finish the current job, then exit
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def run_count(app, db, env, conn, queue, workers, n_jobs, wait_s, timeout):
    from hostbay.core import jobs

    record = f"hostbay-bench-scaleout:{uuid.uuid4().hex[:8]}"
    with db.engine.begin() as c:
        c.execute(text("DELETE FROM operations WHERE kind = 'fake.wait'"))
    procs = start_workers(workers, env, conn, queue)
    try:
        for i in range(n_jobs):
            jobs.enqueue("fake.wait", key=f"{record}:{i}", payload={"seconds": wait_s, "record": record},
                         title="Wait")
        t0 = time.perf_counter()
        db.session.commit()  # dispatch after commit: one Redis pipeline per 1,000 jobs
        Op = jobs.Operation
        deadline = time.monotonic() + timeout
        while True:
            done = db.session.scalar(select(func.count()).select_from(Op)
                                     .where(Op.kind == "fake.wait", Op.state.in_(jobs.FINISHED)))
            db.session.commit()
            if done >= n_jobs:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{workers} worker(s): only {done} of {n_jobs} jobs finished in {timeout}s")
            time.sleep(0.05)
        elapsed = time.perf_counter() - t0
    finally:
        stop_workers(procs)
    states = dict(db.session.execute(select(Op.state, func.count()).where(Op.kind == "fake.wait")
                                     .group_by(Op.state)).all())
    claims = dict(db.session.execute(select(Op.attempts, func.count()).where(Op.kind == "fake.wait")
                                     .group_by(Op.attempts)).all())
    pids = {r["pid"] for r in db.session.scalars(select(Op.result).where(Op.kind == "fake.wait"))}
    db.session.commit()
    runs = [r.decode() for r in conn.lrange(record, 0, -1)]
    conn.delete(record)
    assert states == {jobs.SUCCEEDED: n_jobs}, states
    assert claims == {1: n_jobs}, claims
    assert len(runs) == n_jobs and len(set(runs)) == n_jobs, (len(runs), len(set(runs)))
    return {"workers": workers, "seconds": elapsed, "jobs_per_s": n_jobs / elapsed, "runs": len(runs),
            "distinct": len(set(runs)), "pids": len(pids)}


def main(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--wait", type=float, default=0.05)
    ap.add_argument("--workers", default="1,2,4,8")
    ap.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args(argv[1:])
    url = os.environ.get("HOSTBAY_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1/hostbay_scaleout_bench")
    redis_url = os.environ.get("HOSTBAY_BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
    queue = f"hostbay-bench-scaleout-{uuid.uuid4().hex[:8]}"
    ensure_database(url)
    app = build_app(url, redis_url, queue)
    from hostbay.core import jobs
    from hostbay.core.db import db

    env = dict(os.environ, HOSTBAY_DATABASE_URL=url, HOSTBAY_REDIS_URL=redis_url, HOSTBAY_QUEUE=queue,
               HOSTBAY_JOBS="rq", HOSTBAY_PLUGINS="fake", HOSTBAY_INSTANCE_PATH=str(ROOT / "instance" / "bench"),
               HOSTBAY_SECRET_KEY="bench", HOSTBAY_LOG_LEVEL="WARNING")
    results = []
    with app.app_context():
        db.session.remove()
        db.drop_all()
        with db.engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
        db.create_all()
        conn = jobs.redis_connection(app)
        try:
            for w in [int(x) for x in args.workers.split(",")]:
                got = run_count(app, db, env, conn, queue, w, args.jobs, args.wait, args.timeout)
                results.append(got)
                print(f"  {w} worker(s): {got['seconds']:.1f} s, {got['jobs_per_s']:.1f} jobs/s", file=sys.stderr)
        finally:
            for key in conn.scan_iter(f"rq:*{queue}*"):
                conn.delete(key)
            db.session.remove()
            db.engine.dispose()
    base = results[0]["jobs_per_s"] / results[0]["workers"]
    ceiling = 1 / args.wait
    rows = []
    for r in results:
        eff = r["jobs_per_s"] / (base * r["workers"])
        rows += [
            {"case": f"scaleout x{r['workers']}", "metric": "jobs/s", "value": round(r["jobs_per_s"], 1),
             "unit": "jobs/s", "target": f"ideal {ceiling * r['workers']:.0f}"},
            {"case": f"scaleout x{r['workers']}", "metric": "vs linear from 1 worker", "value": round(eff, 2),
             "unit": "x", "target": ">= 0.8"},
            {"case": f"scaleout x{r['workers']}", "metric": "handler runs / distinct / jobs",
             "value": f"{r['runs']}/{r['distinct']}/{args.jobs}", "unit": "", "target": "equal"},
        ]
    cols = ["case", "metric", "value", "unit", "target"]
    widths = [max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols]
    print(f"scale-out: {args.jobs} jobs x {args.wait * 1000:.0f} ms driver wait, load {os.getloadavg()[0]:.1f}")
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    for r in rows:
        print("  ".join(str(r.get(c, "")).ljust(w) for c, w in zip(cols, widths)))
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"scaleout-{time.strftime('%Y%m%dT%H%M%S')}.json").write_text(json.dumps(
        {"machine": platform.platform(), "python": platform.python_version(), "jobs": args.jobs,
         "wait": args.wait, "results": results, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
