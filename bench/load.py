"""Load held: gunicorn (4 workers) and two ``hostbay worker``s on PostgreSQL and Redis, 200 simulated customers for
60 s while a renewal sweep of 20,000 due services runs; then every wallet balance is checked against its ledger.

    HOSTBAY_BENCH_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1/hostbay_bench_load \\
    HOSTBAY_BENCH_REDIS_URL=redis://127.0.0.1:6379/12 .venv/bin/python bench/load.py \\
        [--customers 200] [--seconds 60] [--services 20000] [--web-workers 4] [--job-workers 2] [--json FILE]

Everything runs on loopback. The database named in the URL is dropped, created for the run and dropped again;
Redis is used under a queue name of the run's own (its keys are deleted afterwards).

What runs:
- ``gunicorn -w 4 'hostbay.web:create_app()'`` and two ``hostbay worker --without-scheduler`` processes, all with
  ``HOSTBAY_METRICS_DIR`` set (Prometheus multiprocess mode), plugins ``fake`` (the simulated servers),
  ``crypto_payments`` and ``status``;
- the payment provider: the BTCPay Greenfield stand-in on loopback (plugins/crypto_payments/tests/
  crypto_standins.py). The test gateway (``fake``) keeps its invoices in the memory of the process that created
  them, so with 4 gunicorn workers the pay page and the webhook's re-fetch land on a worker that never saw the
  invoice; the stand-in is the provider every worker reaches, as a real one would be;
- each customer (a thread with its own ``requests`` session) logs in through the form, then until the time is up,
  with a think time between requests: dashboard, services list, a service page, progress polling, the order form
  (review and confirm: a real debit and a provisioning job on the fake driver), and top-ups (the panel creates the
  invoice at the provider; the bench, as the provider, settles it and sends the signed webhook; the customer polls
  the payment's status until it is credited);
- after a fifth of the run the renewal sweep is enqueued (the periodic job workers run; their own schedulers are off
  so it starts at a known moment) over ``--services`` due services (customers with 5 services of $10 holding $40:
  80% renew, 20% are suspended and get a suspension job).

Output: requests per second, p50/p95/p99 per page, the count of 5xx answers (goal: zero), the sweep's time and
counts; afterwards every wallet balance is compared with the sum of its ledger entries, every settled top-up must be
credited exactly once, and the HTTP requests counted at /metrics (all processes added up) are compared with the
requests the customers made. Exit status 1 on any 5xx, transport error, balance mismatch or missing credit.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BIN = Path(sys.executable).parent
PASSWORD = "bench load password"
PRICE, PER_USER, BALANCE = 1000, 5, 4000  # the sweep's customers: 5 services of $10, $40 in the wallet
TOPUP = "25.00"
PAGES = ("login", "dashboard", "services", "service", "progress", "order_form", "order_review", "order_confirm",
         "topup", "webhook", "topup_status")


# --------------------------------------------------------------------------------------------------------------
# Database and processes
# --------------------------------------------------------------------------------------------------------------

def _maintenance_dsn(url: str) -> tuple[str, str]:
    name = url.rsplit("/", 1)[1].split("?", 1)[0]
    base = url.replace("postgresql+psycopg://", "postgresql://").rsplit("/", 1)[0] + "/postgres"
    return base, name


def recreate_database(url: str, drop_only: bool = False) -> None:
    import psycopg

    base, name = _maintenance_dsn(url)
    if not re.fullmatch(r"[A-Za-z0-9_]+", name):
        raise SystemExit(f"unexpected database name {name!r}")
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not drop_only:
            conn.execute(f'CREATE DATABASE "{name}"')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(procs, timeout: float = 30) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def wait_http(url: str, procs, timeout: float = 120) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            raise RuntimeError("gunicorn exited while starting")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def warm_up(base: str, metrics_dir: Path, processes: int, procs, timeout: float = 180) -> None:
    """Every gunicorn worker loads the app on its own after it forks, and a worker still loading accepts nothing:
    wait until every process has written its metrics file (written while the app is created), then send a round
    of concurrent requests so each worker has rendered a page before the clock starts (none of it is counted)."""
    import requests

    deadline = time.monotonic() + timeout
    while len({f.stem.rsplit("_", 1)[-1] for f in metrics_dir.glob("*.db")}) < processes:
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            break
        time.sleep(0.2)

    def hit():
        for _ in range(3):
            try:
                requests.get(f"{base}/login", timeout=60)
            except requests.RequestException:
                pass

    threads = [threading.Thread(target=hit) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def cpu_seconds(pids) -> float:
    """User + system CPU seconds the processes have used (from /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def wait_workers(conn, queue: str, n: int, procs, timeout: float = 120) -> None:
    from rq import Queue, Worker

    q = Queue(f"{queue}-money", connection=conn)  # every worker serves all classes, money first
    deadline = time.monotonic() + timeout
    while len(Worker.all(queue=q)) < n:
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            raise RuntimeError("hostbay workers did not start")
        time.sleep(0.2)


# --------------------------------------------------------------------------------------------------------------
# Seeding
# --------------------------------------------------------------------------------------------------------------

def seed(db, n_customers: int, n_services: int, provider, now: datetime) -> dict:
    """Staff, gateway, package, image, node and pool; the customers (one password hash for all, a wallet with $500,
    three active services each); the sweep's due services in bulk, like bench/renewal_sweep.py."""
    from sqlalchemy import insert
    from werkzeug.security import generate_password_hash

    from hostbay.core import payments
    from hostbay.core.accounts import User, create_user
    from hostbay.core.catalog import Image, Node, Package, PackagePrice
    from hostbay.core.ipam_pools import create_pool
    from hostbay.core.ledger import LedgerEntry, Wallet
    from hostbay.core.services import Service
    from tests.lifecycle.seed import seed_due

    db.create_all()
    admin = create_user("staff@bench.test", PASSWORD, role="admin")
    payments.save_gateway_config("btcpay", provider.settings(), True, admin)
    pkg = Package(slug="bench-vps", name="Bench VPS", kind="vps", driver="fake", vcpus=1, memory_mib=512,
                  disk_gib=10, ipv4_count=1, port_speed_mbit=1000)
    pkg.prices = [PackagePrice(cycle="monthly", price_cents=PRICE)]
    img = Image(driver="fake", slug="bench-os", name="Bench OS", source="bench.qcow2", reports_readiness=False)
    node = Node(name="bench-node", driver="fake", settings={}, vcpus=1_000_000, memory_mib=1_000_000_000,
                disk_gib=1_000_000_000)
    db.session.add_all([pkg, img, node])
    db.session.flush()
    kw = {"commit": False} if "commit" in inspect.signature(create_pool).parameters else {}
    create_pool(name="bench-ipv4", cidr="198.18.0.0/20", gateway="198.18.0.1", nameservers=["198.18.0.53"], **kw)
    db.session.commit()

    pw = generate_password_hash(PASSWORD, method="scrypt")
    users = [{"uuid": str(uuid.uuid4()), "email": f"customer{i}@bench.test", "name": f"Customer {i}",
              "role": "customer", "password_hash": pw, "active": True, "created_at": now}
             for i in range(n_customers)]
    ids = list(db.session.scalars(insert(User.__table__).returning(User.__table__.c.id), users))
    wallets = list(db.session.scalars(insert(Wallet.__table__).returning(Wallet.__table__.c.id),
                                      [{"user_id": u, "balance_cents": 50_000, "currency": "USD"} for u in ids]))
    db.session.execute(insert(LedgerEntry.__table__), [
        {"uuid": str(uuid.uuid4()), "wallet_id": w, "idempotency_key": f"bench-load:seed:{u}", "kind": "topup",
         "amount_cents": 50_000, "balance_after_cents": 50_000, "actor_type": "system",
         "description": "Seed top-up", "created_at": now} for u, w in zip(ids, wallets)])
    svc_rows = [{"uuid": str(uuid.uuid4()), "user_id": u, "package_id": pkg.id, "kind": "vps", "state": "active",
                 "hostname": f"c{u}-{k}.bench.test", "cycle": "monthly", "price_cents": PRICE, "ssh_key_ids": [],
                 "period_start": now, "renews_at": now + timedelta(days=30), "cancel_at_period_end": False,
                 "infra_ref": {}, "node_id": node.id, "created_at": now, "updated_at": now}
                for u in ids for k in range(3)]
    db.session.execute(insert(Service.__table__), svc_rows)
    db.session.commit()
    by_user: dict[int, list[str]] = {}
    for row in svc_rows:
        by_user.setdefault(row["user_id"], []).append(row["uuid"])
    seed_due(pkg, users=n_services // PER_USER, per_user=PER_USER, price_cents=PRICE, balance_cents=BALANCE,
             due_at=now - timedelta(hours=1), tag="due")
    with db.engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM ANALYZE")
    return {"customers": [(users[i]["email"], by_user[u]) for i, u in enumerate(ids)], "package": pkg.uuid,
            "image": img.uuid}


# --------------------------------------------------------------------------------------------------------------
# Customers
# --------------------------------------------------------------------------------------------------------------

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
KEY = re.compile(r'name="key" value="([^"]+)"')


class Recorder:
    def __init__(self):
        self.lock = threading.Lock()
        self.latency: dict[str, list[float]] = {p: [] for p in PAGES}
        self.statuses: dict[str, dict[int, int]] = {p: {} for p in PAGES}
        self.server_errors: list[tuple[str, int, str]] = []
        self.transport_errors: list[tuple[str, str]] = []
        self.unexpected: list[tuple[str, int, str]] = []
        self.settled: list[str] = []  # payment uuids the provider settled (and sent the webhook for)
        self.credited_seen = 0
        self.read_timeouts = 0
        self.orders = 0

    def request(self, session, page, method, url, expect=(200,), **kw):
        import requests

        kw.setdefault("timeout", 60)  # a request not answered in 60 s is a transport error (and fails the run)
        kw.setdefault("allow_redirects", False)
        t0 = time.perf_counter()
        try:
            resp = session.request(method, url, **kw)
        except requests.RequestException as exc:
            with self.lock:
                self.transport_errors.append((page, f"{type(exc).__name__}: {exc}"[:200]))
                if isinstance(exc, requests.ReadTimeout):  # it reached the panel, which answers it later
                    self.read_timeouts += 1
            return None
        elapsed = time.perf_counter() - t0
        with self.lock:
            self.latency[page].append(elapsed)
            self.statuses[page][resp.status_code] = self.statuses[page].get(resp.status_code, 0) + 1
            if resp.status_code >= 500:
                self.server_errors.append((page, resp.status_code, url))
            elif resp.status_code not in expect:
                self.unexpected.append((page, resp.status_code, url))
        return resp


def customer(i: int, base: str, email: str, services: list[str], info: dict, provider, rec: Recorder,
             deadline: float, think: tuple[float, float]) -> None:
    import requests

    rnd = random.Random(i)
    s = requests.Session()
    # customers arrive over the first half of the run (at most 30 s): a login checks a scrypt hash (~0.2 CPU-s by
    # design), 200 at once would be a storm no real panel sees
    time.sleep(rnd.uniform(0, min(30.0, max(0.0, deadline - time.monotonic()) / 2)))
    r = rec.request(s, "login", "GET", f"{base}/login")
    if r is None or r.status_code != 200:
        return
    token = CSRF.search(r.text).group(1)
    r = rec.request(s, "login", "POST", f"{base}/login", expect=(302, 303),
                    data={"email": email, "password": PASSWORD, "csrf_token": token})
    if r is None or r.status_code not in (302, 303):
        return
    r = rec.request(s, "dashboard", "GET", f"{base}/panel/")
    if r is None or r.status_code != 200:
        return
    token = CSRF.search(r.text).group(1)
    mine = list(services)
    n = 0
    while time.monotonic() < deadline:
        time.sleep(rnd.uniform(*think))
        if time.monotonic() >= deadline:
            break
        n += 1
        pick = rnd.random() if n > 1 else (0.88 if i % 2 == 0 else 0.96)  # first an order or a top-up, then at random
        if pick < 0.30:
            rec.request(s, "dashboard", "GET", f"{base}/panel/")
        elif pick < 0.40:
            rec.request(s, "services", "GET", f"{base}/panel/services/")
        elif pick < 0.62:
            rec.request(s, "service", "GET", f"{base}/panel/services/{rnd.choice(mine)}")
        elif pick < 0.84:
            rec.request(s, "progress", "GET", f"{base}/panel/services/{rnd.choice(mine[-2:])}/progress")
        elif pick < 0.92:
            _order(s, base, info, rec, token, mine, f"o{i}-{n}-{rnd.randrange(10**6)}.bench.test")
        else:
            _topup(s, base, provider, rec, token, rnd, deadline)


def _order(s, base, info, rec, token, mine, hostname):
    pkg = info["package"]
    r = rec.request(s, "order_form", "GET", f"{base}/panel/order/{pkg}")
    if r is None or r.status_code != 200:
        return
    form = {"csrf_token": token, "cycle": "monthly", "hostname": hostname, "image": info["image"]}
    r = rec.request(s, "order_review", "POST", f"{base}/panel/order/{pkg}/review", data=form)
    if r is None or r.status_code != 200:
        return
    form["key"] = KEY.search(r.text).group(1)
    r = rec.request(s, "order_confirm", "POST", f"{base}/panel/order/{pkg}/confirm", data=form, expect=(302, 303))
    if r is None or r.status_code not in (302, 303):
        return
    with rec.lock:
        rec.orders += 1
    svc = r.headers["Location"].rstrip("/").rsplit("/", 1)[1]
    mine.append(svc)  # polled from now on (progress polling picks the newest)
    rec.request(s, "service", "GET", f"{base}/panel/services/{svc}")


def _topup(s, base, provider, rec, token, rnd, deadline):
    r = rec.request(s, "topup", "POST", f"{base}/panel/topup", expect=(303,),
                    data={"csrf_token": token, "gateway": "btcpay", "amount": TOPUP})
    if r is None or r.status_code != 303:
        return
    invoice = r.headers["Location"].rstrip("/").rsplit("/", 1)[1]
    payment = provider.invoices[invoice]["metadata"]["orderId"]
    # the customer pays; the provider settles the invoice and sends its signed webhook
    provider.set_state(invoice, "Settled", paid_usd=Decimal(TOPUP))
    headers, body = provider.webhook(invoice, "InvoiceSettled")
    r = rec.request(requests_session(), "webhook", "POST", f"{base}/payments/webhook/btcpay", data=body,
                    headers=headers)
    if r is None or r.status_code != 200:
        return
    with rec.lock:
        rec.settled.append(payment)
    for _ in range(5):  # the status page polls until the payment is final
        r = rec.request(s, "topup_status", "GET", f"{base}/panel/topup/{payment}/status")
        if r is None or r.status_code != 200 or r.json().get("final") or time.monotonic() > deadline:
            break
        time.sleep(rnd.uniform(0.3, 0.7))
    if r is not None and r.status_code == 200 and r.json().get("status") == "credited":
        with rec.lock:
            rec.credited_seen += 1


_provider_sessions = threading.local()


def requests_session():
    import requests

    if getattr(_provider_sessions, "s", None) is None:
        _provider_sessions.s = requests.Session()
    return _provider_sessions.s


# --------------------------------------------------------------------------------------------------------------
# Checks afterwards
# --------------------------------------------------------------------------------------------------------------

def ledger_mismatches(db) -> list[dict]:
    from sqlalchemy import text

    rows = db.session.execute(text(
        "SELECT w.id, w.user_id, w.balance_cents, coalesce(sum(e.amount_cents), 0) AS entries "
        "FROM wallets w LEFT JOIN ledger_entries e ON e.wallet_id = w.id "
        "GROUP BY w.id, w.user_id, w.balance_cents HAVING w.balance_cents <> coalesce(sum(e.amount_cents), 0)"))
    out = [dict(r._mapping) for r in rows]
    db.session.commit()
    return out


def scraped_requests(base: str) -> float | None:
    import requests

    try:
        text = requests.get(f"{base}/metrics", timeout=30).text
    except requests.RequestException:
        return None
    total = 0.0
    for line in text.splitlines():
        if line.startswith("hostbay_http_requests_total{") and 'endpoint="metrics.scrape"' not in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, max(0, int(round(q * len(v) + 0.5)) - 1))]


# --------------------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------------------

def main(argv) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--customers", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--services", type=int, default=20_000, help="due services the renewal sweep works through")
    ap.add_argument("--web-workers", type=int, default=4)
    ap.add_argument("--job-workers", type=int, default=2)
    ap.add_argument("--think", default="2,8", help="think time between a customer's requests: min,max seconds")
    ap.add_argument("--drain-timeout", type=float, default=600, help="seconds to wait for the queue afterwards")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args(argv[1:])
    think = tuple(float(x) for x in args.think.split(","))
    url = os.environ.get("HOSTBAY_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1/hostbay_bench_load")
    redis_url = os.environ.get("HOSTBAY_BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
    run = uuid.uuid4().hex[:8]
    queue = f"hostbay-bench-load-{run}"
    tmp = Path(tempfile.mkdtemp(prefix="hostbay-bench-load-"))
    metrics_dir = tmp / "metrics"
    metrics_dir.mkdir()
    port = free_port()
    base = f"http://127.0.0.1:{port}"

    from cryptography.fernet import Fernet

    env = dict(os.environ, HOSTBAY_DATABASE_URL=url, HOSTBAY_REDIS_URL=redis_url, HOSTBAY_QUEUE=queue,
               HOSTBAY_JOBS="rq", HOSTBAY_PLUGINS="fake,crypto_payments,status", HOSTBAY_SECRET_KEY="bench-load",
               HOSTBAY_SECRET_KEYS=Fernet.generate_key().decode(), HOSTBAY_INSTANCE_PATH=str(tmp / "instance"),
               HOSTBAY_BASE_URL=base, HOSTBAY_METRICS_DIR=str(metrics_dir), HOSTBAY_LOG_LEVEL="WARNING",
               HOSTBAY_STAFF_2FA="optional")
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    os.environ.update({k: env[k] for k in ("HOSTBAY_SECRET_KEYS", "HOSTBAY_SECRET_KEY")})  # the seeding writes secrets
    (tmp / "gunicorn.conf.py").write_text(
        "def child_exit(server, worker):\n"
        "    from hostbay.core import metrics\n"
        "    metrics.mark_process_dead(worker.pid)\n")

    import logging

    from hostbay.plugins.crypto_payments.tests.crypto_standins import BTCPayStandIn

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the stand-in's access log

    provider = BTCPayStandIn()
    recreate_database(url)
    from hostbay.web import create_app

    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "HOSTBAY_JOBS": "rq", "HOSTBAY_REDIS_URL": redis_url,
                      "HOSTBAY_QUEUE": queue, "HOSTBAY_PLUGINS": ["fake", "crypto_payments", "status"],
                      "SECRET_KEY": "bench-load", "HOSTBAY_LOG_LEVEL": "WARNING", "HOSTBAY_BASE_URL": base,
                      "INSTANCE_PATH": str(tmp / "instance")})
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # (create_app set up logging anew)
    from sqlalchemy import func, select, text

    from hostbay.core import jobs
    from hostbay.core.db import db

    procs: list[subprocess.Popen] = []
    result: dict = {}
    failed = True
    try:
        with app.app_context():
            t0 = time.perf_counter()
            info = seed(db, args.customers, args.services, provider, datetime.utcnow().replace(microsecond=0))
            seed_s = time.perf_counter() - t0
            print(f"seeded {args.customers} customers and {args.services} due services in {seed_s:.1f} s",
                  file=sys.stderr)
            conn = jobs.redis_connection(app)
            web = subprocess.Popen([str(BIN / "gunicorn"), "-w", str(args.web_workers), "-b", f"127.0.0.1:{port}",
                                    "--timeout", "120", "-c", str(tmp / "gunicorn.conf.py"),
                                    "hostbay.web:create_app()"], env=env, cwd=str(tmp),
                                   stdout=subprocess.DEVNULL, stderr=open(tmp / "gunicorn.log", "wb"))
            procs.append(web)
            workers = [subprocess.Popen([str(BIN / "hostbay"), "worker", "--without-scheduler"], env=env,
                                        cwd=str(tmp), stdout=subprocess.DEVNULL,
                                        stderr=open(tmp / f"worker{k}.log", "wb")) for k in range(args.job_workers)]
            procs.extend(workers)
            wait_http(f"{base}/healthz", [web])
            wait_workers(conn, queue, args.job_workers, workers)
            warm_up(base, metrics_dir, args.web_workers + args.job_workers, procs)
            counted_before = scraped_requests(base)
            web_pids = children(web.pid)
            web_cpu_before = cpu_seconds(web_pids)

            rec = Recorder()
            started = time.monotonic()
            deadline = started + args.seconds
            threads = [threading.Thread(target=customer, args=(i, base, email, svcs, info, provider, rec, deadline,
                                                               think), daemon=True)
                       for i, (email, svcs) in enumerate(info["customers"])]
            for t in threads:
                t.start()
            time.sleep(args.seconds / 5)
            sweep = jobs.enqueue("lifecycle.renewal_sweep", key=f"bench-load:{run}:sweep", title="Renewal sweep")
            sweep_id = sweep.id
            db.session.commit()  # dispatched to the workers
            sweep_enqueued = time.monotonic()
            load = os.getloadavg()[0]
            for t in threads:
                t.join(timeout=max(1.0, deadline - time.monotonic() + 90))
            elapsed = time.monotonic() - started
            web_cpu = cpu_seconds(web_pids) - web_cpu_before
            load = max(load, os.getloadavg()[0])

            # the sweep and everything queued (suspensions, provisioning, notices) drain
            Op = jobs.Operation
            # (a wallet and its entries change in one transaction, so the check below holds at any moment; the
            # sweep is waited for because it is the run's largest mover of money)
            sweep_deadline = time.monotonic() + max(args.drain_timeout, 600)
            drain_deadline = None
            sweep_done_at = None
            busy = None
            while True:
                op = db.session.get(Op, sweep_id, populate_existing=True)
                if op.finished and sweep_done_at is None:
                    sweep_done_at = time.monotonic()
                    drain_deadline = max(sweep_done_at, started + elapsed) + args.drain_timeout
                busy = db.session.scalar(select(func.count()).select_from(Op)
                                         .where(Op.state.in_((jobs.QUEUED, jobs.RUNNING, jobs.RETRYING))))
                db.session.commit()
                now_m = time.monotonic()
                if (op.finished and (busy == 0 or now_m > drain_deadline)) or now_m > sweep_deadline:
                    break
                time.sleep(0.5)
            drained = time.monotonic()
            op = db.session.get(Op, sweep_id, populate_existing=True)
            sweep_state, sweep_result = op.state, dict(op.result or {})
            states = dict(db.session.execute(select(Op.state, func.count()).group_by(Op.state)).all())
            db.session.commit()
            mismatches = ledger_mismatches(db)
            from hostbay.core.payments import Payment

            credited = set(db.session.scalars(select(Payment.uuid).where(Payment.ledger_entry_id.is_not(None))))
            topup_entries = db.session.scalar(text(
                "SELECT count(*) FROM ledger_entries WHERE kind = 'topup' AND idempotency_key LIKE 'topup:btcpay:%'"))
            db.session.commit()
            missing_credit = sorted(set(rec.settled) - credited)
            counted_after = scraped_requests(base)
            counted = None if counted_before is None or counted_after is None else counted_after - counted_before
            made = sum(len(v) for v in rec.latency.values())

        pages = {}
        for p in PAGES:
            lat = rec.latency[p]
            pages[p] = {"requests": len(lat), "p50_ms": _ms(pct(lat, 0.50)), "p95_ms": _ms(pct(lat, 0.95)),
                        "p99_ms": _ms(pct(lat, 0.99)), "statuses": rec.statuses[p]}
        result = {
            "machine": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "load_average_max": round(load, 1), "customers": args.customers, "seconds": round(elapsed, 1),
            "services_due": args.services, "web_workers": args.web_workers, "job_workers": args.job_workers,
            "think_s": think, "requests": made, "requests_per_s": round(made / elapsed, 1),
            "pages": pages, "five_xx": len(rec.server_errors), "five_xx_samples": rec.server_errors[:10],
            "transport_errors": len(rec.transport_errors), "transport_error_samples": rec.transport_errors[:10],
            "unexpected_status": len(rec.unexpected), "unexpected_samples": rec.unexpected[:10],
            "orders": rec.orders, "topups_settled": len(rec.settled), "topups_credited": len(credited),
            "topup_ledger_entries": topup_entries, "topups_seen_credited_by_customer": rec.credited_seen,
            "missing_credits": missing_credit[:10],
            "sweep": {"state": sweep_state, "result": sweep_result,
                      "seconds_from_enqueue": round((sweep_done_at or drained) - sweep_enqueued, 1)},
            "queue_drained_s_after_load": round(drained - (started + elapsed), 1) if busy == 0 else None,
            "jobs_left_when_checked": busy, "operations": states,
            "wallet_mismatches": len(mismatches), "wallet_mismatch_samples": mismatches[:10],
            "metrics_http_requests": counted, "client_requests_to_panel": made + rec.read_timeouts,
            "client_read_timeouts": rec.read_timeouts,
            "gunicorn_cpu_s": round(web_cpu, 1),
            "gunicorn_cpu_ms_per_request": round(web_cpu * 1000 / max(1, made + rec.read_timeouts), 1),
        }
        failed = bool(rec.server_errors or rec.transport_errors or mismatches or missing_credit
                      or sweep_state != jobs.SUCCEEDED or topup_entries != len(credited))
        result["ok"] = not failed
    finally:
        stop(procs)
        provider.close()
        try:
            from hostbay.core import jobs as _jobs

            conn = _jobs.redis_connection(app)
            for key in conn.scan_iter(f"*{queue}*"):
                conn.delete(key)
        except Exception as exc:  # noqa: BLE001
            print(f"could not clean Redis: {exc}", file=sys.stderr)
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
        recreate_database(url, drop_only=True)
        if result and not result.get("ok"):
            for name in ("gunicorn.log", "worker0.log", "worker1.log"):
                path = tmp / name
                if path.exists() and path.stat().st_size:
                    print(f"--- {name} (last 3000 bytes)\n{path.read_bytes()[-3000:].decode(errors='replace')}",
                          file=sys.stderr)
        shutil.rmtree(tmp, ignore_errors=True)

    print_report(result)
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"load-{time.strftime('%Y%m%dT%H%M%S')}.json").write_text(json.dumps(result, indent=2, default=str))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    return 1 if failed else 0


def _ms(v):
    return None if v is None else round(v * 1000, 1)


def print_report(r: dict) -> None:
    print(f"load: {r['customers']} customers for {r['seconds']} s, {r['web_workers']} gunicorn workers, "
          f"{r['job_workers']} hostbay workers, renewal sweep over {r['services_due']} due services; "
          f"{r['cpus']} CPUs, load average up to {r['load_average_max']}")
    print(f"requests: {r['requests']} ({r['requests_per_s']}/s); 5xx: {r['five_xx']}; transport errors: "
          f"{r['transport_errors']}; other unexpected statuses: {r['unexpected_status']}")
    print(f"{'page':14s} {'requests':>8s} {'p50 ms':>8s} {'p95 ms':>8s} {'p99 ms':>8s}  statuses")
    for p, v in r["pages"].items():
        if v["requests"]:
            print(f"{p:14s} {v['requests']:8d} {v['p50_ms']:8.1f} {v['p95_ms']:8.1f} {v['p99_ms']:8.1f}  "
                  f"{v['statuses']}")
    s = r["sweep"]
    drained = (f"queue drained {r['queue_drained_s_after_load']} s after the load" if r["jobs_left_when_checked"] == 0
               else f"{r['jobs_left_when_checked']} jobs still queued when checked")
    print(f"renewal sweep: {s['state']} {s['result']} {s['seconds_from_enqueue']} s from enqueue to done; {drained}; "
          f"operations {r['operations']}")
    print(f"gunicorn workers' CPU during the load: {r['gunicorn_cpu_s']} s, "
          f"{r['gunicorn_cpu_ms_per_request']} ms per request")
    print(f"orders placed: {r['orders']}; top-ups settled {r['topups_settled']}, credited {r['topups_credited']} "
          f"(ledger entries {r['topup_ledger_entries']}); missing credits: {len(r['missing_credits'])}")
    print(f"wallets whose balance differs from the sum of their ledger entries: {r['wallet_mismatches']}")
    print(f"HTTP requests counted at /metrics (all processes): {r['metrics_http_requests']}; made to the panel: "
          f"{r['client_requests_to_panel']} (of which {r['client_read_timeouts']} given up on after 60 s)")
    for key in ("five_xx_samples", "transport_error_samples", "unexpected_samples", "wallet_mismatch_samples"):
        if r.get(key):
            print(f"{key}: {r[key]}")
    print("OK" if r.get("ok") else "FAILED")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
