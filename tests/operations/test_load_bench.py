"""bench/load.py in its small form (20 customers, 20 s, 2,000 due services), so the load bench cannot rot: gunicorn
and two hostbay workers on PostgreSQL and Redis, customers logging in, ordering and topping up while the renewal
sweep runs; no 5xx, every wallet equal to its ledger, every settled top-up credited once, and the HTTP requests
counted at /metrics across all processes equal to the requests made. (Its timings go to docs/benchmarks.md, not
into assertions.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]


@pytest.mark.timeout(900)
def test_load_bench_small_form(tmp_path):
    db_url = os.environ.get("HOSTBAY_TEST_DATABASE_URL", "")
    redis_url = os.environ.get("HOSTBAY_TEST_REDIS_URL", "")
    if not db_url.startswith("postgresql") or not redis_url:
        pytest.skip("needs PostgreSQL (HOSTBAY_TEST_DATABASE_URL) and Redis (HOSTBAY_TEST_REDIS_URL)")
    bench_db = db_url.rsplit("/", 1)[0] + "/" + db_url.rsplit("/", 1)[1].split("?")[0] + "_load"
    out = tmp_path / "load.json"
    env = dict(os.environ, HOSTBAY_BENCH_DATABASE_URL=bench_db, HOSTBAY_BENCH_REDIS_URL=redis_url)
    env.pop("HOSTBAY_METRICS_DIR", None)
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "load.py"), "--customers", "20", "--seconds", "20",
                           "--services", "2000", "--drain-timeout", "5", "--json", str(out)],
                          env=env, capture_output=True, text=True, timeout=880)
    assert out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads(out.read_text())
    report = proc.stdout[-4000:]
    assert r["five_xx"] == 0, report
    assert r["transport_errors"] == 0, report
    assert r["wallet_mismatches"] == 0, report
    assert r["sweep"]["state"] == "succeeded", report
    assert r["sweep"]["result"]["renewed"] == 1600 and r["sweep"]["result"]["suspended"] == 400, report
    assert r["pages"]["login"]["requests"] == 40 and r["pages"]["dashboard"]["requests"] >= 20, report
    assert r["orders"] >= 1 and r["pages"]["order_confirm"]["statuses"], report
    assert r["topups_settled"] >= 1, report
    assert r["topups_credited"] == r["topups_settled"] == r["topup_ledger_entries"], report
    assert r["missing_credits"] == [], report
    assert r["metrics_http_requests"] == r["client_requests_to_panel"], report  # multiprocess mode adds up
    assert proc.returncode == 0, report
    # the bench dropped its database
    import psycopg

    base = bench_db.replace("postgresql+psycopg://", "postgresql://").rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(base) as conn:
        assert conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                            (bench_db.rsplit("/", 1)[1],)).fetchone() is None
