"""Console and ISO benchmarks: token issue and redeem latency, proxy connection set-up (WebSocket open to the first
RFB byte through the real websockify proxy), and ISO upload throughput through the panel's streaming form parser.

    python bench/console.py            # SQLite in a temporary folder
    HOSTBAY_BENCH_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1/hostbay_bench python bench/console.py

Prints a table and writes bench/results/console.json. Loops are bounded (a few hundred iterations)."""

from __future__ import annotations

import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOKENS = 300
CONNECTS = 30
UPLOAD_MIB = 64


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main():
    from hostbay.core import console
    from hostbay.core.accounts import create_user
    from hostbay.core.catalog import CYCLES, Node, Package, PackagePrice, add_cycle
    from hostbay.core.clock import SystemClock
    from hostbay.core.db import db
    from hostbay.core.services import Service
    from hostbay.web import create_app

    tmp = Path(tempfile.mkdtemp(prefix="hostbay-bench-"))
    url = os.environ.get("HOSTBAY_BENCH_DATABASE_URL") or f"sqlite:///{tmp / 'bench.sqlite3'}"
    from hostbay.testing.console import LoopVncPlugin

    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "TESTING": True, "HOSTBAY_JOBS": "sync",
                      "INSTANCE_PATH": str(tmp / "instance"), "SECRET_KEY": "bench", "WTF_CSRF_ENABLED": False,
                      "HOSTBAY_REDIS_URL": None, "HOSTBAY_ISO_MAX_BYTES": (UPLOAD_MIB + 1) * 2**20,
                      "HOSTBAY_ISO_QUOTA_BYTES": 2**40, "HOSTBAY_ISO_QUOTA_COUNT": 100, "RATELIMIT_ENABLED": False},
                     extra_plugins=[LoopVncPlugin()])
    results = {"database": url.split(":")[0]}
    vnc = socket.create_server(("127.0.0.1", 0))
    vnc_port = vnc.getsockname()[1]

    def vnc_loop():
        while True:
            try:
                c, _ = vnc.accept()
            except OSError:
                return
            c.sendall(b"RFB 003.008\n")
            threading.Thread(target=lambda c=c: (c.recv(10), c.close()), daemon=True).start()
    threading.Thread(target=vnc_loop, daemon=True).start()

    with app.app_context():
        db.drop_all()
        db.create_all()
        user = create_user("bench@example.test", "bench password 1")
        pkg = Package(slug="b", name="B", driver="loopvnc", kind="vps", vcpus=1, memory_mib=512, disk_gib=10,
                      ipv4_count=1, port_speed_mbit=1000)
        pkg.prices = [PackagePrice(cycle=c, price_cents=100 * m) for c, m in CYCLES.items()]
        node = Node(name="bench-node", driver="loopvnc", settings={})
        db.session.add_all([pkg, node])
        db.session.flush()
        now = SystemClock().now()
        svc = Service(user_id=user.id, package_id=pkg.id, kind="vps", state="active", cycle="monthly",
                      hostname="b.example.test", period_start=now, renews_at=add_cycle(now, "monthly"),
                      price_cents=100, node_id=node.id, infra_ref={"vnc_port": vnc_port})
        db.session.add(svc)
        db.session.commit()

        issue_ms, redeem_ms, tokens = [], [], []
        for _ in range(TOKENS):
            t0 = time.perf_counter()
            tokens.append(console.issue(user, svc))
            db.session.commit()
            issue_ms.append((time.perf_counter() - t0) * 1000)
        for tok in tokens:
            t0 = time.perf_counter()
            console.redeem(tok)
            redeem_ms.append((time.perf_counter() - t0) * 1000)
        results["token_issue_ms"] = {"p50": statistics.median(issue_ms), "p95": pct(issue_ms, 95)}
        results["token_redeem_ms"] = {"p50": statistics.median(redeem_ms), "p95": pct(redeem_ms, 95)}

        # Proxy: WebSocket open -> first RFB byte, through the real proxy process.
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            pport = s.getsockname()[1]
        env = dict(os.environ, HOSTBAY_DATABASE_URL=url, HOSTBAY_INSTANCE_PATH=str(tmp / "proxy"),
                   HOSTBAY_SECRET_KEY="bench", HOSTBAY_PLUGINS="fake")
        proc = subprocess.Popen([sys.executable, "-m", "hostbay.testing.console", str(pport)],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", pport), 0.2).close()
                    break
                except OSError:
                    time.sleep(0.1)
            from websockets.sync.client import connect

            connect_ms = []
            from hostbay.core.accounts import User

            uid, sid = user.id, svc.id
            for _ in range(CONNECTS):
                tok = console.issue(db.session.get(User, uid), db.session.get(Service, sid))
                db.session.commit()
                db.session.remove()
                t0 = time.perf_counter()
                with connect(f"ws://127.0.0.1:{pport}/?token={tok}", open_timeout=10) as ws:
                    assert ws.recv(timeout=10).startswith(b"RFB")
                connect_ms.append((time.perf_counter() - t0) * 1000)
            results["proxy_connect_ms"] = {"p50": statistics.median(connect_ms), "p95": pct(connect_ms, 95)}
        finally:
            proc.terminate()
            proc.wait(10)

        # Upload throughput through the streaming form parser (test client, no network).
        data = bytearray(UPLOAD_MIB * 2**20)
        data[32769:32774] = b"CD001"
        client = app.test_client()
        client.post("/login", data={"email": "bench@example.test", "password": "bench password 1"})
        t0 = time.perf_counter()
        resp = client.post("/panel/isos", data={"iso": (io.BytesIO(bytes(data)), "bench.iso")},
                           content_type="multipart/form-data")
        secs = time.perf_counter() - t0
        assert resp.status_code == 303, resp.status_code
        results["upload_mib_per_s"] = round(UPLOAD_MIB / secs, 1)
        results["upload_mib"] = UPLOAD_MIB
        db.session.remove()
        db.drop_all()
    vnc.close()

    print(f"{'case':<22}{'p50':>10}{'p95':>10}")
    for key in ("token_issue_ms", "token_redeem_ms", "proxy_connect_ms"):
        print(f"{key:<22}{results[key]['p50']:>10.2f}{results[key]['p95']:>10.2f}")
    print(f"{'upload MiB/s':<22}{results['upload_mib_per_s']:>10} ({UPLOAD_MIB} MiB, {results['database']})")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"console-{results['database']}.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
