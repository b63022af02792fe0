"""/metrics: who may read it, what it counts, and several processes adding up in one scrape."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from hostbay.core import jobs
from hostbay.core.hookspecs import hookimpl


def _value(text: str, name: str, **labels) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
        if not labels and line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_loopback_reads_others_do_not(client, app):
    assert client.get("/metrics").status_code == 200
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "203.0.113.9"}).status_code == 404
    app.config["HOSTBAY_METRICS_TOKEN"] = "scrape-token-123456"
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "203.0.113.9"},
                      headers={"Authorization": "Bearer wrong-token-000000"}).status_code == 404
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "203.0.113.9"},
                      headers={"Authorization": "Bearer scrape-token-123456"}).status_code == 200
    app.config["HOSTBAY_METRICS_ALLOW"] = "198.51.100.0/24, not-a-network"
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "198.51.100.7"}).status_code == 200
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "198.51.101.7"}).status_code == 404


def test_requests_are_counted_by_endpoint_and_status(client):
    before = client.get("/metrics").get_data(as_text=True)
    client.get("/healthz")
    client.get("/healthz")
    client.get("/no-such-page")
    after = client.get("/metrics").get_data(as_text=True)
    assert _value(after, "hostbay_http_requests_total", endpoint="healthz", method="GET", status="200") == \
        _value(before, "hostbay_http_requests_total", endpoint="healthz", method="GET", status="200") + 2
    assert _value(after, "hostbay_http_requests_total", endpoint="unmatched", method="GET", status="404") >= 1
    assert _value(after, "hostbay_http_request_duration_seconds_count", endpoint="healthz") >= 2
    assert after.count("# TYPE hostbay_http_requests_total counter") == 1


class _Jobs:
    @hookimpl
    def hostbay_job_handlers(self):
        def ok(op, payload):
            return {}

        def bad(op, payload):
            from hostbay.core.errors import FatalDriverError

            raise FatalDriverError("no such template")

        return {"test.metrics.ok": ok, "test.metrics.bad": bad}


def test_jobs_by_kind_and_outcome_and_operations_by_state(client, db, register_plugin):
    with register_plugin(_Jobs()):
        jobs.enqueue("test.metrics.ok", key="m-ok-1")
        jobs.enqueue("test.metrics.ok", key="m-ok-2")
        jobs.enqueue("test.metrics.bad", key="m-bad-1")
        db.session.commit()
    text = client.get("/metrics").get_data(as_text=True)
    assert _value(text, "hostbay_jobs_total", kind="test.metrics.ok", outcome="succeeded") >= 2
    assert _value(text, "hostbay_jobs_total", kind="test.metrics.bad", outcome="failed") >= 1
    assert _value(text, "hostbay_job_duration_seconds_count", kind="test.metrics.ok") >= 2
    assert _value(text, "hostbay_operations", state="failed") == 1  # read from the database at scrape time


def test_several_processes_add_up_in_one_scrape(tmp_path):
    """prometheus_client's multiprocess mode: two processes count, a third one serves the sum."""
    env = dict(os.environ, HOSTBAY_METRICS_DIR=str(tmp_path / "metrics"))
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    for n in (2, 3):
        subprocess.run([sys.executable, "-c",
                        "from hostbay.core import metrics\n"
                        f"metrics.JOBS.labels('mp.kind', 'succeeded').inc({n})\n"
                        "metrics.WALLET_CENTS.labels('credit', 'topup').inc(1250)"], env=env, check=True)
    out = subprocess.run([sys.executable, "-c",
                          "from hostbay.web import create_app\n"
                          "app = create_app({'SQLALCHEMY_DATABASE_URI': 'sqlite://', 'TESTING': True})\n"
                          "from hostbay.core.db import db\n"
                          "with app.app_context(): db.create_all()\n"
                          "print(app.test_client().get('/metrics').get_data(as_text=True))"],
                         env=dict(env, HOSTBAY_INSTANCE_PATH=str(tmp_path / "i")), check=True, capture_output=True,
                         text=True).stdout
    assert _value(out, "hostbay_jobs_total", kind="mp.kind", outcome="succeeded") == 5
    assert _value(out, "hostbay_wallet_cents_total", direction="credit", kind="topup") == 2500
    assert re.search(r"^hostbay_operations\{state=\"failed\"\} 0\.0$", out, re.M)
