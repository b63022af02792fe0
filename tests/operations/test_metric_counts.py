"""Every metric is counted where it happens and documented: wallet movements after commit, payment webhooks by
result, driver calls by outcome, probe results, several processes adding up, and docs/operations.md listing every
hostbay_* metric that /metrics exposes."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
from decimal import Decimal
from pathlib import Path

import pytest

from hostbay.core import jobs, ledger, payments
from hostbay.core.errors import FatalDriverError, TransientDriverError
from hostbay.core.hookspecs import hookimpl

ROOT = Path(__file__).resolve().parents[2]


def _value(text: str, name: str, **labels) -> float:
    """The sample ``name{labels...}`` (a subset of its labels must match; the first match), 0 when absent."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, rest = head.partition("{")
        if metric != name:
            continue
        have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', rest))
        if all(have.get(k) == str(v) for k, v in labels.items()):
            return float(value)
    return 0.0


def _scrape(client) -> str:
    resp = client.get("/metrics")
    assert resp.status_code == 200
    return resp.get_data(as_text=True)


# --------------------------------------------------------------------------------------------------------------
# Wallet movements
# --------------------------------------------------------------------------------------------------------------

def test_a_committed_topup_counts_its_credit_cents(client, db, make_user):
    user = make_user()
    before = _scrape(client)
    ledger.credit(user.id, 1234, kind="topup", key="m-topup-1", description="Top-up")
    mid = _scrape(client)  # flushed, not committed: not counted yet
    db.session.commit()
    after = _scrape(client)
    cents = ("hostbay_wallet_cents_total", {"direction": "credit", "kind": "topup"})
    moves = ("hostbay_wallet_movements_total", {"direction": "credit", "kind": "topup"})
    assert _value(mid, cents[0], **cents[1]) == _value(before, cents[0], **cents[1])
    assert _value(after, cents[0], **cents[1]) == _value(before, cents[0], **cents[1]) + 1234
    assert _value(after, moves[0], **moves[1]) == _value(before, moves[0], **moves[1]) + 1
    # a replay of the same key is the same entry: no new movement
    ledger.credit(user.id, 1234, kind="topup", key="m-topup-1", description="Top-up")
    db.session.commit()
    assert _value(_scrape(client), cents[0], **cents[1]) == _value(after, cents[0], **cents[1])


def test_a_rolled_back_debit_does_not_count(client, db, make_user):
    user = make_user(balance_cents=5000)
    labels = {"direction": "debit", "kind": "admin_charge"}
    before = _value(_scrape(client), "hostbay_wallet_cents_total", **labels)
    ledger.debit(user.id, 700, kind="admin_charge", key="m-debit-rolled-back", description="Charge")
    db.session.rollback()
    assert _value(_scrape(client), "hostbay_wallet_cents_total", **labels) == before
    # a debit whose SAVEPOINT rolls back while the outer transaction commits another one: only that one counts
    with pytest.raises(RuntimeError):
        with db.session.begin_nested():
            ledger.debit(user.id, 900, kind="admin_charge", key="m-debit-savepoint", description="Charge")
            raise RuntimeError("the work it paid for failed")
    ledger.debit(user.id, 300, kind="admin_charge", key="m-debit-kept", description="Charge")
    db.session.commit()
    after = _scrape(client)
    assert _value(after, "hostbay_wallet_cents_total", **labels) == before + 300
    assert ledger.balance_cents(user.id) == 4700 == ledger.ledger_sum_cents(user.id)


# --------------------------------------------------------------------------------------------------------------
# Payment webhooks
# --------------------------------------------------------------------------------------------------------------

def test_verified_rejected_and_duplicate_webhooks_count_in_their_labels(client, db, make_user):
    from hostbay.core.drivers import PaymentStatus
    from hostbay.testing.fakes import FakePaymentGateway

    admin = make_user(role="admin")
    payments.save_gateway_config("fake", {"secret": "whsec-metrics"}, True, admin)
    user = make_user()
    db.session.add(payments.Payment(user_id=user.id, gateway="fake", amount_cents=2500, provider_ref="fk_metrics"))
    db.session.commit()
    FakePaymentGateway.invoices["fk_metrics"] = {"amount": Decimal("25.00"), "status": PaymentStatus.SETTLED}
    body = json.dumps({"id": "evt-m-1", "invoice": "fk_metrics", "status": "settled", "amount": "25.00"}).encode()
    sig = FakePaymentGateway({"secret": "whsec-metrics"}).sign(body)
    before = _scrape(client)

    def post(path, data, signature):
        return client.post(path, data=data, headers={"X-Fake-Signature": signature,
                                                     "Content-Type": "application/json"})

    try:
        assert post("/payments/webhook/fake", body, sig).status_code == 200  # verified, credited
        assert post("/payments/webhook/fake", body, sig).status_code == 200  # the same event again
        assert post("/payments/webhook/fake", body, "0" * 64).status_code == 401  # forged
        assert post("/payments/webhook/fake", b"not json", FakePaymentGateway({"secret": "whsec-metrics"})
                    .sign(b"not json")).status_code == 400  # malformed
        assert post("/payments/webhook/no-such-gateway-xyz", body, sig).status_code == 404
    finally:
        FakePaymentGateway.invoices.pop("fk_metrics", None)
    after = _scrape(client)

    def delta(**labels):
        return _value(after, "hostbay_payment_webhooks_total", **labels) - \
            _value(before, "hostbay_payment_webhooks_total", **labels)

    assert delta(gateway="fake", result="verified", outcome="processed") == 1
    assert delta(gateway="fake", result="duplicate", outcome="duplicate") == 1
    assert delta(gateway="fake", result="rejected", outcome="forged") == 1
    assert delta(gateway="fake", result="rejected", outcome="malformed") == 1
    # the name in the URL is the sender's: it never becomes a label value
    assert delta(gateway="unknown", result="rejected", outcome="unknown_gateway") == 1
    assert "no-such-gateway-xyz" not in after
    # the credit the verified delivery made was committed, and counted as such
    assert _value(after, "hostbay_wallet_cents_total", direction="credit", kind="topup") - \
        _value(before, "hostbay_wallet_cents_total", direction="credit", kind="topup") == 2500


# --------------------------------------------------------------------------------------------------------------
# Driver calls
# --------------------------------------------------------------------------------------------------------------

class _MetricsDriver:
    name = "metricsdrv"

    def start(self, ref):
        return {"ok": ref}

    def stop(self, ref):
        raise ConnectionError("node unreachable")

    def suspend(self, ref):
        raise TransientDriverError("lock held")

    def delete(self, ref):
        raise FatalDriverError("no such domain")

    def reinstall(self, ref):
        raise NotImplementedError("no reinstall here")


class _DriverJobs:
    @hookimpl
    def hostbay_job_handlers(self):
        def call(op, payload):
            drv = _MetricsDriver()
            jobs.call_driver(op, getattr(drv, payload["method"]), "ref-1", pct=10, text="Working")
            return {"text": "Done"}

        return {"test.metrics.driver": call}


def test_a_driver_call_through_call_driver_counts_with_its_outcome(client, db, register_plugin):
    before = _scrape(client)
    with register_plugin(_DriverJobs()):
        for n, method in enumerate(("start", "start", "stop", "suspend", "delete", "reinstall")):
            jobs.enqueue("test.metrics.driver", key=f"m-drv-{n}", payload={"method": method}, max_attempts=1)
        db.session.commit()
    after = _scrape(client)
    name = "hostbay_driver_call_duration_seconds_count"

    def delta(action, outcome):
        labels = {"driver": "metricsdrv", "action": action, "outcome": outcome}
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert delta("start", "ok") == 2
    assert delta("stop", "transient") == 1  # ConnectionError: retried by the job layer
    assert delta("suspend", "transient") == 1
    assert delta("delete", "fatal") == 1
    assert delta("reinstall", "fatal") == 1  # the driver lacks the primitive
    assert delta("start", "fatal") == delta("delete", "ok") == 0
    ops = db.session.scalars(db.select(jobs.Operation).where(jobs.Operation.kind == "test.metrics.driver")).all()
    assert sorted(o.state for o in ops) == ["failed"] * 4 + ["succeeded"] * 2


# --------------------------------------------------------------------------------------------------------------
# Probe results (the status plugin)
# --------------------------------------------------------------------------------------------------------------

@pytest.fixture
def listening_port():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    stop = threading.Event()

    def loop():
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
                conn.close()
            except OSError:
                continue

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    yield sock.getsockname()[1]
    stop.set()
    t.join(2)
    sock.close()


def test_a_probe_result_counts(client, db, listening_port):
    from hostbay.plugins.status import probes
    from hostbay.plugins.status.incidents import save_component, save_probe

    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    comp = save_component(None, name="Metrics DC")
    db.session.commit()
    up = save_probe(None, component_id=comp.id, name="metrics-up", kind="tcp", host="127.0.0.1",
                    port=listening_port, timeout_seconds=2)
    down = save_probe(None, component_id=comp.id, name="metrics-down", kind="tcp", host="127.0.0.1",
                      port=closed_port, timeout_seconds=2)
    db.session.commit()
    before = _scrape(client)
    got = probes.sweep(probe_ids=[up.id, down.id])
    assert got == {"probes": 2, "down": 1}
    after = _scrape(client)
    name = "hostbay_status_probe_results_total"
    assert _value(after, name, probe="metrics-up", kind="tcp", result="up") - \
        _value(before, name, probe="metrics-up", kind="tcp", result="up") == 1
    assert _value(after, name, probe="metrics-down", kind="tcp", result="down") - \
        _value(before, name, probe="metrics-down", kind="tcp", result="down") == 1
    assert _value(after, name, probe="metrics-up", kind="tcp", result="down") == 0
    assert _value(after, "hostbay_status_probe_latency_seconds_count", probe="metrics-up", kind="tcp") >= 1


# --------------------------------------------------------------------------------------------------------------
# Several processes
# --------------------------------------------------------------------------------------------------------------

_WRITER = """
import sys
from hostbay.web import create_app
app = create_app({'SQLALCHEMY_DATABASE_URI': sys.argv[1], 'TESTING': True, 'HOSTBAY_JOBS': 'sync',
                  'HOSTBAY_REDIS_URL': None})
from hostbay.core import ledger
from hostbay.core.accounts import create_user
from hostbay.core.db import db
with app.app_context():
    db.create_all()  # the first writer creates the schema
    user = create_user(sys.argv[2] + '@metrics.test', 'correct horse battery')
    ledger.credit(user.id, int(sys.argv[3]), kind='bonus', key='mp:' + sys.argv[2], description='Bonus')
    ledger.debit(user.id, 1, kind='admin_charge', key='mp-rb:' + sys.argv[2], description='Charge')
    db.session.rollback()  # the credit and the debit both roll back: nothing counted yet
    user = create_user(sys.argv[2] + '@metrics.test', 'correct horse battery')
    ledger.credit(user.id, int(sys.argv[3]), kind='bonus', key='mp:' + sys.argv[2], description='Bonus')
    db.session.commit()
"""


def test_two_processes_committed_credits_add_up_in_one_scrape(tmp_path):
    """Multiprocess mode: two processes commit a credit each (after rolling back one), the folder holds the sum."""
    db_url = f"sqlite:///{tmp_path / 'mp.sqlite3'}"
    env = dict(os.environ, HOSTBAY_METRICS_DIR=str(tmp_path / "metrics"), HOSTBAY_INSTANCE_PATH=str(tmp_path / "i"))
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, f"{db_url}-{who}", who, str(cents)], env=env)
             for who, cents in (("a", 700), ("b", 550))]  # at the same time, each on its own database file
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    assert len(list((tmp_path / "metrics").glob("counter_*.db"))) >= 2  # one file per writing process
    # what /metrics serves in multiprocess mode (test_metrics.py scrapes a served one): the sum of the files
    from prometheus_client import CollectorRegistry, generate_latest, multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(tmp_path / "metrics"))
    out = generate_latest(registry).decode()
    assert _value(out, "hostbay_wallet_cents_total", direction="credit", kind="bonus") == 1250
    assert _value(out, "hostbay_wallet_movements_total", direction="credit", kind="bonus") == 2
    assert _value(out, "hostbay_wallet_cents_total", direction="debit", kind="admin_charge") == 0


# --------------------------------------------------------------------------------------------------------------
# Every metric documented
# --------------------------------------------------------------------------------------------------------------

def _documented() -> set[str]:
    text = (ROOT / "docs" / "operations.md").read_text()
    section = text.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `(hostbay_[a-z0-9_]+)` \|", section, re.M))


def _source_names() -> set[str]:
    """Every hostbay_* metric name created in the code (Counter, Histogram, Gauge or a scrape-time family)."""
    names = set()
    for folder in ("core", "web", "plugins"):
        for path in (ROOT / folder).rglob("*.py"):
            if "tests" in path.parts:
                continue
            names.update(re.findall(r'(?:Counter|Histogram|Gauge|Summary|GaugeMetricFamily|CounterMetricFamily)'
                                    r'\(\s*(?:f?)"(hostbay_[a-z0-9_]+)"', path.read_text()))
    return names


def test_every_metric_at_metrics_is_documented(app, client):
    import hostbay.plugins.status.probes  # noqa: F401 - the status plugin's metrics (loaded with the plugin)

    if os.environ.get("HOSTBAY_TEST_REDIS_URL"):  # the Redis-backed gauges (queue depth, workers) need Redis
        app.config["HOSTBAY_REDIS_URL"] = os.environ["HOSTBAY_TEST_REDIS_URL"]
    text = _scrape(client)
    exposed = set(re.findall(r"^# TYPE (hostbay_[a-z0-9_]+) ", text, re.M))
    documented = _documented()
    assert {"hostbay_http_requests_total", "hostbay_operations", "hostbay_wallet_cents_total",
            "hostbay_payment_webhooks_total", "hostbay_driver_call_duration_seconds",
            "hostbay_status_probe_results_total"} <= exposed
    if os.environ.get("HOSTBAY_TEST_REDIS_URL"):
        assert {"hostbay_queue_depth", "hostbay_workers"} <= exposed
    assert exposed - documented == set(), f"not in docs/operations.md's metrics table: {exposed - documented}"
    created = _source_names()
    assert created - documented == set(), f"not in docs/operations.md's metrics table: {created - documented}"
    assert documented - created == set(), f"documented but no longer created: {documented - created}"
