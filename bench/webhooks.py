"""Webhook throughput: signature verification, verification + deduplication through core, settlement with the
provider re-fetch, and the end-to-end figure through the Flask endpoint.

    python bench/webhooks.py [--deliveries 3000] [--database-url postgresql+psycopg://...]
    python bench/run.py webhooks      (through the bench runner: bench/bench_webhooks.py)

Default database: a temporary SQLite file (embedded mode). The provider APIs are the loopback stand-ins of the
tests. Single-threaded, so each rate is per core. Prints a table and writes bench/results/webhooks-<db>.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _mix(api, refs, n, rng):
    """n deliveries: ~20% first deliveries, ~70% replays of earlier ones, ~10% forged."""
    originals, out = [], []
    for i in range(n):
        roll = rng.random()
        if roll < 0.10:
            h, b = api.webhook(rng.choice(refs), "InvoiceProcessing", secret="forger")
            out.append(("forged", h, b))
        elif roll < 0.30 or not originals:
            d = api.webhook(rng.choice(refs), rng.choice(("InvoiceReceivedPayment", "InvoiceProcessing")))
            originals.append(d)
            out.append(("new", *d))
        else:
            out.append(("replay", *rng.choice(originals)))
    return out


def _backend_cpu(db) -> float:
    """CPU seconds used so far by this database's PostgreSQL backends (local server: read from /proc), so a
    per-core figure counts the database's work, not only this process's. 0 on SQLite."""
    if db.engine.dialect.name != "postgresql":
        return 0.0
    with db.engine.connect() as conn:
        pids = conn.exec_driver_sql("SELECT pid FROM pg_stat_activity WHERE datname = current_database()").scalars().all()
    tick, total = os.sysconf("SC_CLK_TCK"), 0.0
    for pid in pids:
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        except (OSError, IndexError, ValueError):
            pass  # not local, or gone
    return total


def run(deliveries: int = 3000, settlements: int = 200, database_url: str | None = None):
    """Run every case; returns (database dialect, [(case, n, wall seconds, cpu seconds)])."""
    args = argparse.Namespace(deliveries=deliveries, settlements=settlements,
                              database_url=database_url or os.environ.get("HOSTBAY_BENCH_DATABASE_URL"))

    from hostbay.core import payments
    from hostbay.core.accounts import create_user
    from hostbay.core.db import db
    from hostbay.plugins.crypto_payments import BTCPayGateway, NOWPaymentsGateway
    from hostbay.plugins.crypto_payments.tests.crypto_standins import BTCPayStandIn, NOWPaymentsStandIn
    from hostbay.web import create_app

    tmp = tempfile.mkdtemp(prefix="hostbay-bench-")
    url = args.database_url or f"sqlite:///{tmp}/bench.sqlite3"
    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "TESTING": True, "HOSTBAY_JOBS": "sync",
                      "INSTANCE_PATH": tmp, "SECRET_KEY": "bench", "WTF_CSRF_ENABLED": True,
                      "RATELIMIT_ENABLED": False, "HOSTBAY_REDIS_URL": None})
    logging.getLogger().setLevel(logging.ERROR)  # forged deliveries log a warning each; keep the terminal quiet
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    btc, nowp = BTCPayStandIn(), NOWPaymentsStandIn()
    rng = random.Random(42)
    rows = []

    def cpu():  # this process and the database's backends (a backend that ended between two reads is missed)
        return time.process_time() + _backend_cpu(db)

    try:
        with app.app_context():
            db.drop_all()
            db.create_all()
            user = create_user("bench@example.test", "correct horse battery")
            payments.save_gateway_config("btcpay", btc.settings(), True, None)
            payments.save_gateway_config("nowpayments", nowp.settings(), True, None)
            db.session.commit()

            # 1. signature verification alone (CPU)
            drv = BTCPayGateway(btc.settings())
            sample = [btc.webhook(f"inv{i}", "InvoiceSettled") for i in range(1000)]
            t, c = time.perf_counter(), cpu()
            for h, b in sample:
                drv.parse_webhook(h, b)
            rows.append(("BTCPay verify (HMAC-SHA256, parse)", len(sample), time.perf_counter() - t,
                         cpu() - c))
            npdrv = NOWPaymentsGateway(nowp.settings())
            nsample = []
            for i in range(50):
                inv = npdrv.create_checkout(payments.cents_to_decimal(1000 + i), f"b{i}", "http://x/r", "http://x/n")
                nsample.append(nowp.ipn(nowp.pay(inv.provider_ref, "confirming")))
            nsample = nsample * 20
            t, c = time.perf_counter(), cpu()
            for h, b in nsample:
                npdrv.parse_webhook(h, b)
            rows.append(("NOWPayments verify (sorted raw tokens, HMAC-SHA512)", len(nsample),
                         time.perf_counter() - t, cpu() - c))

            # payments to deliver to
            refs = []
            for i in range(100):
                p = payments.start_topup(user, "btcpay", 1000 + i)
                payments.db.session.commit()
                payments.open_checkout(p)
                payments.db.session.commit()
                refs.append(p.provider_ref)
                btc.set_state(p.provider_ref, "Processing")
            mix = _mix(btc, refs, args.deliveries, rng)

            # 2. verification + dedupe + apply through core (no HTTP: non-settling events need no re-fetch)
            t, c = time.perf_counter(), cpu()
            outcomes = {}
            for _kind, h, b in mix:
                r = payments.handle_webhook("btcpay", h, b)
                outcomes[r.outcome] = outcomes.get(r.outcome, 0) + 1
            rows.append((f"core first pass {outcomes}", len(mix), time.perf_counter() - t,
                         cpu() - c))

            # 2b. the same deliveries again: every one is now a replay or a forgery (pure verification + dedupe),
            # first from this process's memory of recent deliveries, then from the database (another process)
            for label in ("replays, dedupe from memory", "replays, dedupe from the database"):
                if "database" in label:
                    payments._caches()["seen"].clear()
                t, c = time.perf_counter(), cpu()
                outcomes = {}
                for _kind, h, b in mix:
                    r = payments.handle_webhook("btcpay", h, b)
                    outcomes[r.outcome] = outcomes.get(r.outcome, 0) + 1
                rows.append((f"core {label} {outcomes}", len(mix), time.perf_counter() - t,
                             cpu() - c))

            # 3. end to end through the Flask endpoint (test client, full WSGI stack), a fresh mix
            client = app.test_client()
            mix2 = _mix(btc, refs, args.deliveries, rng)
            t, c = time.perf_counter(), cpu()
            codes = {}
            for _kind, h, b in mix2:
                code = client.post("/payments/webhook/btcpay", data=b, headers=h).status_code
                codes[code] = codes.get(code, 0) + 1
            rows.append((f"web endpoint first pass (HTTP {codes})", len(mix2), time.perf_counter() - t,
                         cpu() - c))

            # 4. settlement: re-fetch from the loopback provider + ledger credit, each delivered 3 times
            settle = []
            for i in range(args.settlements):
                p = payments.start_topup(user, "btcpay", 2000 + i)
                payments.db.session.commit()
                payments.open_checkout(p)
                payments.db.session.commit()
                btc.set_state(p.provider_ref, "Settled")
                settle.append(btc.webhook(p.provider_ref, "InvoiceSettled"))
            before = payments.ledger.balance_cents(user.id)
            t, c = time.perf_counter(), cpu()
            for h, b in settle * 3:
                client.post("/payments/webhook/btcpay", data=b, headers=h)
            rows.append(("web settlement: re-fetch over loopback + credit, each sent 3x", len(settle) * 3,
                         time.perf_counter() - t, cpu() - c))
            wall_s, cpu_s = rows[-1][2], rows[-1][3]
            credited = payments.ledger.balance_cents(user.id) - before
            expected = sum(2000 + i for i in range(args.settlements))
            assert credited == expected, (credited, expected)
            # what counts: settled payments credited (once each), over the time and CPU all 3x deliveries took
            rows.append((f"web settlement: credited deliveries ({args.settlements} credited of {len(settle) * 3} sent)",
                         args.settlements, wall_s, cpu_s))
    finally:
        btc.close()
        nowp.close()

    return url.split(":")[0].split("+")[0], rows


def webhook_throughput():
    """Rows in the format of bench/run.py."""
    dialect, rows = run()
    out = []
    for name, n, secs, cpu in rows:
        target = 1000 if name.startswith("core replays") else None
        row = {"case": f"webhooks: {name} ({dialect})", "metric": "deliveries/s per core (CPU)",
               "value": round(n / max(cpu, 1e-9)), "unit": "1/s", "wall_per_s": round(n / secs)}
        if target:
            row["target"] = f">= {target}"
        out.append(row)
    return out


CASES = [webhook_throughput]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--deliveries", type=int, default=3000)
    ap.add_argument("--settlements", type=int, default=200)
    ap.add_argument("--database-url", default=os.environ.get("HOSTBAY_BENCH_DATABASE_URL"))
    args = ap.parse_args(argv)
    dialect, rows = run(args.deliveries, args.settlements, args.database_url)
    print(f"\nWebhook throughput ({dialect}, 1 thread, Python {platform.python_version()})")
    print(f"{'case':<86} {'n':>6} {'wall s':>7} {'per s':>7} {'cpu s':>7} {'per cpu s':>9}")
    results = []
    for name, n, secs, cpu in rows:
        print(f"{name:<86} {n:>6} {secs:>7.3f} {n / secs:>7.0f} {cpu:>7.3f} {n / max(cpu, 1e-9):>9.0f}")
        results.append({"case": name, "n": n, "wall_seconds": round(secs, 4), "per_second": round(n / secs, 1),
                        "cpu_seconds": round(cpu, 4), "per_cpu_second": round(n / max(cpu, 1e-9), 1)})
    out = ROOT / "bench" / "results" / f"webhooks-{dialect}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"database": dialect, "python": platform.python_version(),
                               "cpu_count": os.cpu_count(), "results": results}, indent=2) + "\n")
    print(f"\nwritten {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
