"""Logs: JSON lines with request, operation, service and user context; no secret in any record."""

from __future__ import annotations

import io
import json
import logging

import pytest

from hostbay.core import jobs, logs
from hostbay.core.drivers import Driver, Setting
from hostbay.core.hookspecs import hookimpl

log = logging.getLogger("hostbay.test.logs")


@pytest.fixture
def captured():
    """hostbay's own handler writing JSON lines to a buffer, at DEBUG."""
    buf = io.StringIO()
    handler = logs.configure("DEBUG", "json")
    old_fmt = handler.formatter
    handler.setStream(buf)
    yield buf
    handler.setStream(None)  # back to the process stderr
    handler.setFormatter(old_fmt)
    logging.getLogger().setLevel("WARNING")


def _lines(buf) -> list[dict]:
    return [json.loads(line) for line in buf.getvalue().splitlines() if line.strip()]


def test_request_id_is_honoured_echoed_and_logged(app, client, captured):
    @app.get("/_test/log-me")
    def _log_me():
        log.info("inside the request")
        return "ok"

    resp = client.get("/_test/log-me", headers={"X-Request-ID": "req-42.abc"})
    assert resp.headers["X-Request-ID"] == "req-42.abc"
    rec = [r for r in _lines(captured) if r["message"] == "inside the request"]
    assert rec and rec[0]["request_id"] == "req-42.abc" and rec[0]["level"] == "INFO"
    assert rec[0]["logger"] == "hostbay.test.logs" and rec[0]["time"].endswith("+00:00")


def test_a_request_id_that_is_not_a_token_is_replaced(app, client, captured):
    resp = client.get("/healthz", headers={"X-Request-ID": "bad id <script>"})
    rid = resp.headers["X-Request-ID"]
    assert rid != "bad id <script>" and logs.REQUEST_ID_RE.match(rid) and len(rid) == 32
    assert client.get("/healthz").headers["X-Request-ID"] != rid  # a fresh one per request


def test_signed_in_user_and_service_uuid_are_in_the_context(app, client, make_user, make_package, make_node,
                                                             captured):
    from hostbay.testing.pytest_plugin import login

    @app.get("/_test/svc/<service_uuid>")
    def _svc(service_uuid):
        log.warning("looking at a service")
        return "ok"

    user = make_user(balance_cents=0)
    login(client, user)
    client.get("/_test/svc/3f0c3d56-0000-4000-8000-000000000001")
    rec = [r for r in _lines(captured) if r["message"] == "looking at a service"][0]
    assert rec["user_uuid"] == user.uuid
    assert rec["service_uuid"] == "3f0c3d56-0000-4000-8000-000000000001"


class _LoggingJob:
    @hookimpl
    def hostbay_job_handlers(self):
        def handler(op, payload):
            log.info("job step with %s", payload["word"])
            return {}

        return {"test.logs": handler}


def test_job_records_carry_operation_and_service(app, db, register_plugin, captured, make_user, make_package):
    from hostbay.core.services import Service

    user = make_user()
    pkg = make_package()
    from hostbay.core import clock

    now = clock.now()
    svc = Service(user_id=user.id, package_id=pkg.id, hostname="logs.example.test", state="active",
                  cycle="monthly", price_cents=1000, period_start=now, renews_at=now)
    db.session.add(svc)
    db.session.commit()
    with register_plugin(_LoggingJob()):
        op = jobs.enqueue("test.logs", key="logs-1", payload={"word": "hello"}, service=svc)
        db.session.commit()
    rec = [r for r in _lines(captured) if r["message"] == "job step with hello"]
    assert rec and rec[0]["operation_id"] == op.id and rec[0]["service_uuid"] == svc.uuid
    # the context ends with the job
    log.info("after the job")
    after = [r for r in _lines(captured) if r["message"] == "after the job"][0]
    assert "operation_id" not in after and "service_uuid" not in after


class _SecretDriver(Driver):
    name, label = "secret-test", "Secret test"
    settings = [Setting("api_url", "API URL", type="url"), Setting("api_token", "API token", type="secret")]


def test_driver_secret_settings_never_reach_a_log_line(captured):
    secret = "pve-token-9f2d7c1e-4b1a-4c55-a7e0-2d1f00c0ffee"
    _SecretDriver({"api_url": "https://hv.example.test:8006", "api_token": secret})
    log.debug("calling with %s", secret)
    log.error("failed: {'api_token': '%s', 'url': 'x'}", secret)
    try:
        raise RuntimeError(f"401 for token {secret}")
    except RuntimeError:
        log.exception("driver call failed")
    out = captured.getvalue()
    assert secret not in out and out.count(logs.REDACTED) >= 3
    assert "driver call failed" in out and "RuntimeError" in out  # the record itself is kept


@pytest.mark.parametrize("line", [
    "password=hunter2-correct-horse", "Authorization: Bearer abcdef0123456789abcdef",
    '{"webhook_secret": "whsec_live_1234567890"}', "GET /panel/isos?csrf_token=IjA2ZWM4NzFm.ZzQ&x=1",
    "X-API-Key: 3c5b9f1e2d4a", "BTCPay-Sig: sha256=9c1185a5c5e9fc54612808977ee8f548b2258d31"])
def test_credential_pairs_are_redacted_even_when_not_registered(captured, line):
    log.warning(line)
    msg = _lines(captured)[-1]["message"]
    value = line.split("=", 1)[-1] if "=" in line.split(":")[0] or ":" not in line else line.split(":", 1)[1]
    for word in ("hunter2", "abcdef0123456789", "whsec_live", "IjA2ZWM4NzFm", "3c5b9f1e2d4a", "9c1185a5c5e9"):
        assert word not in msg
    assert logs.REDACTED in msg and value.strip() not in msg


def test_text_format_stays_the_default(app):
    handler = logs.configure(app.config["HOSTBAY_LOG_LEVEL"], app.config.get("HOSTBAY_LOG_FORMAT") or "text")
    assert isinstance(handler.formatter, logs.TextFormatter)
    assert app.config["HOSTBAY_LOG_FORMAT"] == "text"
