"""No secret in any log line, at DEBUG, for every logger: the payment flow (a top-up through the BTCPay stand-in, a
signed webhook delivery and a rejected one), the gateway staff flow (configure + Test connection), the node flow
(a Proxmox node with its API token through the staff page + Test connection against the stand-in cluster), the
console flow (a token issued through the panel, redeemed through the console proxy, a subprocess logging at DEBUG)
and login with password + TOTP; an API call with a bearer token too. Then every captured line is scanned for every
secret the test used.

Two captures in the test process: the records as they reach the root logger, before any redaction (a handler put
first on the root logger: so no secret is sent to a logger at all, whatever the handler), and the lines hostbay's
own handler writes (JSON, what an operator's log pipeline stores). The proxy subprocess's output is read from its
log file; anything written straight to the test's stdout/stderr is read with capfd."""

from __future__ import annotations

import hashlib
import hmac
import importlib.util
import io
import logging
import re
import traceback
from pathlib import Path

import pytest
from websockets.sync.client import connect

from hostbay.core import credentials, logs
from hostbay.core.catalog import add_cycle
from hostbay.core.db import db as database
from hostbay.core.services import Service

from .secret_flows import PW, SecretWorld


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


CONSOLE_TESTS = Path(__file__).parents[1] / "console"
_proxy_tests = _load("console_proxy_tests_for_scan", CONSOLE_TESTS / "test_console_proxy.py")
GREETING, ORIGIN, FakeVncServer, running_proxy = (_proxy_tests.GREETING, _proxy_tests.ORIGIN,
                                                  _proxy_tests.FakeVncServer, _proxy_tests.running_proxy)

pytestmark = pytest.mark.slow


class RawCapture(logging.Handler):
    """Every record, formatted in full (message, arguments, exception and stack), before any filter changes it."""

    def __init__(self):
        super().__init__(logging.NOTSET)
        self.lines: list[str] = []

    def emit(self, record):
        try:
            msg = record.getMessage()
        except Exception:  # noqa: BLE001
            msg = f"{record.msg!r} % {record.args!r}"
        parts = [f"{record.name} {record.levelname} {msg}", repr(record.args)]
        if record.exc_info:
            parts.append("".join(traceback.format_exception(*record.exc_info)))
        if record.exc_text:
            parts.append(record.exc_text)
        if record.stack_info:
            parts.append(record.stack_info)
        self.lines.append("\n".join(parts))


@pytest.fixture
def everything_logged():
    """Root at DEBUG, every existing logger at NOTSET (inherits DEBUG), enabled and propagating; the raw capture
    first among the root's handlers; hostbay's handler writing JSON lines to a buffer."""
    root = logging.getLogger()
    raw = RawCapture()
    saved = {}
    for name, lg in list(logging.root.manager.loggerDict.items()):
        if isinstance(lg, logging.Logger):
            saved[name] = (lg.level, lg.disabled, lg.propagate)
            lg.setLevel(logging.NOTSET)
            lg.disabled = False
            lg.propagate = True
    buf = io.StringIO()
    handler = logs.configure("DEBUG", "json")
    old_fmt = handler.formatter
    handler.setStream(buf)
    root.handlers.insert(0, raw)
    root.setLevel(logging.DEBUG)
    try:
        yield raw, buf
    finally:
        root.removeHandler(raw)
        handler.setStream(None)
        handler.setFormatter(old_fmt)
        root.setLevel(logging.WARNING)
        for name, (level, disabled, propagate) in saved.items():
            lg = logging.getLogger(name)
            lg.setLevel(level)
            lg.disabled, lg.propagate = disabled, propagate


@pytest.fixture
def loopvnc(app, register_plugin):
    """The loopback-VNC driver the console proxy of the tests serves (hostbay.testing.console)."""
    from hostbay.testing.console import LoopVncPlugin

    with register_plugin(LoopVncPlugin(), name="loopvnc-scan"):
        yield


@pytest.fixture
def world(app, tmp_path, monkeypatch):
    w = SecretWorld(tmp_path, monkeypatch)
    yield w
    w.close()


def _console_service(user, clock, vnc_port, make_package, make_node) -> Service:
    pkg, node = make_package(driver="loopvnc"), make_node(driver="loopvnc")
    now = clock.now()
    svc = Service(user_id=user.id, package_id=pkg.id, kind="vps", state="active", cycle="monthly",
                  hostname="console.example.test", period_start=now, renews_at=add_cycle(now, "monthly"),
                  price_cents=1000, node_id=node.id, infra_ref={"vnc_port": vnc_port, "protocol": "vnc"})
    database.session.add(svc)
    database.session.commit()
    return svc


def _recv(ws, n):
    buf = b""
    while len(buf) < n:
        buf += ws.recv(timeout=10)
    return buf


def test_no_secret_reaches_any_log_line_at_debug(app, db, client, make_user, make_package, make_node, clock,
                                                database_url, tmp_path, monkeypatch, capfd, loopvnc, world,
                                                everything_logged):
    raw, hostbay_lines = everything_logged
    used: dict[str, str] = {}

    # login with password + TOTP, the staff flows: gateway (configure + Test connection), node (Proxmox token +
    # Test connection), DNS backend key, BMC password
    world.build_all(app, client, make_user)
    world.staff_login(client)
    assert "The connection test passed." in world.test_node(client)
    assert "The connection test passed." in world.test_gateway(client)
    used["session cookie (staff)"] = client.get_cookie("session").value
    client.post("/logout")

    # the payment flow: a top-up, a signed webhook delivery (credited) and a wrongly signed one (rejected)
    payment = world.topup(client)
    used["session cookie (customer)"] = client.get_cookie("session").value
    ok, bad, body, bad_body = world.settle(client, payment)
    assert ok.get_json()["outcome"] == "processed" and bad.status_code in (400, 401, 403)
    used["webhook body"] = body.decode()
    used["rejected webhook body"] = bad_body.decode()
    used["webhook signature"] = hmac.new(world.btcpay.webhook_secret.encode(), body, hashlib.sha256).hexdigest()

    # an API call with a bearer token
    _row, bearer = credentials.create_api_token(world.customer, "scan")
    db.session.commit()
    used["API bearer token"] = bearer
    assert client.get("/api/v1/services", headers={"Authorization": f"Bearer {bearer}"}).status_code == 200

    # the console flow: the token issued by the panel, redeemed once through the proxy (a subprocess at DEBUG)
    vnc = FakeVncServer()
    try:
        svc = _console_service(world.customer, clock, vnc.port, make_package, make_node)
        page = client.post(f"/panel/services/{svc.uuid}/console").get_data(as_text=True)
        token = re.search(r"token=([A-Za-z0-9_.\-]+)", page).group(1)
        used["console token"] = token
        db.session.remove()  # the proxy writes (SQLite: no transaction held here)
        monkeypatch.setenv("HOSTBAY_LOG_LEVEL", "DEBUG")
        with running_proxy(database_url, clock.now(), tmp_path) as proxy:
            with connect(f"{proxy['url']}?token={token}", origin=ORIGIN, open_timeout=10) as ws:
                assert _recv(ws, len(GREETING)) == GREETING
                ws.send(GREETING)
                assert _recv(ws, 5 + len(GREETING)) == b"echo:" + GREETING
            proxy_log = Path(proxy["log"]).read_text(errors="replace")
    finally:
        vnc.close()
    assert vnc.connections == 1

    secrets = {**world.secrets, "customer password": PW, **used}
    out, err = capfd.readouterr()
    sources = {"records at the root logger": "\n".join(raw.lines), "hostbay's log handler": hostbay_lines.getvalue(),
               "the console proxy's output": proxy_log, "the test's stdout/stderr": out + err}
    # the scan saw the flows: records of the web requests, the drivers' HTTP calls and the proxy
    assert len(raw.lines) > 50 and "urllib3" in sources["records at the root logger"]
    assert "DEBUG" in proxy_log or '"level": "DEBUG"' in proxy_log

    leaks = []
    for where, text in sources.items():
        lines = text.splitlines()
        for name, value in secrets.items():
            if value and value in text:
                line = next((ln for ln in lines if value in ln), text[:200])
                leaks.append(f"{name} in {where}: {line[:300]}")
    assert not leaks, "\n".join(leaks)
