"""The real websockify proxy relays bytes between a WebSocket client and a loopback TCP port that stands in for a
VNC server, for a valid token only."""

from __future__ import annotations

import socket
import threading

import pytest
from click.testing import CliRunner
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from hostbay.core import console
from hostbay.core.activity import ActivityEntry
from hostbay.core.catalog import add_cycle
from hostbay.core.db import db
from hostbay.core.services import Service
from hostbay.testing.console import ORIGIN, running_proxy  # noqa: F401 - test_console_browser imports it from here

GREETING = b"RFB 003.008\n"


class FakeVncServer:
    """Speaks the first RFB greeting, then answers every chunk with ``echo:`` + the chunk."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.received = b""
        self._stop = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._client, args=(conn,), daemon=True).start()

    def _client(self, conn):
        with conn:
            conn.sendall(GREETING)
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                self.received += data
                conn.sendall(b"echo:" + data)

    def close(self):
        self._stop = True
        self.sock.close()


@pytest.fixture
def vnc():
    server = FakeVncServer()
    yield server
    server.close()


@pytest.fixture
def proxy(app, database_url, clock, tmp_path):
    with running_proxy(database_url, clock.now(), tmp_path) as p:
        yield p


@pytest.fixture
def vnc_service(app, make_user, make_package, make_node, clock):
    def _make(vnc_port, user=None, state="active", protocol="vnc"):
        user = user or make_user()
        pkg = make_package(driver="loopvnc")
        node = make_node(driver="loopvnc")
        now = clock.now()
        svc = Service(user_id=user.id, package_id=pkg.id, kind="vps", state=state, cycle="monthly",
                      hostname="vnc.example.test", period_start=now, renews_at=add_cycle(now, "monthly"),
                      price_cents=1000, node_id=node.id, infra_ref={"vnc_port": vnc_port, "protocol": protocol})
        db.session.add(svc)
        db.session.commit()
        return user, svc
    return _make


def _token(user, service) -> str:
    token = console.issue(user, service)
    db.session.commit()
    db.session.remove()  # hold no transaction while the proxy writes (SQLite)
    return token


def _recv_exactly(ws, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        msg = ws.recv(timeout=10)
        assert isinstance(msg, bytes)
        buf += msg
    return buf


def _refused(url: str, **kw) -> int:
    with pytest.raises(InvalidStatus) as info:
        with connect(url, open_timeout=10, **kw):
            pass
    return info.value.response.status_code


def test_proxy_relays_bytes_for_a_valid_token_once(proxy, vnc, vnc_service):
    user, service = vnc_service(vnc.port)
    service_id = service.id
    token = _token(user, service)
    url = f"{proxy['url']}?token={token}"
    with connect(url, origin=ORIGIN, open_timeout=10) as ws:
        assert _recv_exactly(ws, len(GREETING)) == GREETING
        ws.send(GREETING)  # the client's version answer
        assert _recv_exactly(ws, 5 + len(GREETING)) == b"echo:" + GREETING
        payload = bytes(range(256)) * 64
        ws.send(payload)
        assert _recv_exactly(ws, 5 + len(payload)).endswith(payload[-100:])
    assert vnc.received.startswith(GREETING) and vnc.connections == 1
    # Single use: the same token is refused now.
    assert _refused(url, origin=ORIGIN) == 403
    assert vnc.connections == 1
    assert token not in proxy["log"].read_text()
    # the activity entry records the outcome: one opened console, written by the proxy once it connected
    db.session.expire_all()
    assert db.session.scalars(db.select(ActivityEntry.message).filter_by(service_id=service_id)).all() == [
        "Web console opened."]


def test_proxy_refuses_bad_tokens(proxy, vnc, vnc_service, make_user, clock):
    user, service = vnc_service(vnc.port)
    base = proxy["url"]
    assert _refused(f"{base}?token=forged-token-value") == 403
    assert _refused(base) == 403
    # Wrong browser origin (another site trying to use a leaked token).
    good = _token(user, service)
    assert _refused(f"{base}?token={good}", origin="https://evil.example") == 403
    # A token whose service was suspended after issue.
    user2, service2 = vnc_service(vnc.port)
    token2 = console.issue(user2, service2)
    db.session.commit()
    service2.state = "suspended"
    db.session.commit()
    db.session.remove()
    assert _refused(f"{base}?token={token2}") == 403
    assert vnc.connections == 0
    assert "forged-token-value" not in proxy["log"].read_text() and token2 not in proxy["log"].read_text()
    db.session.expire_all()
    assert db.session.scalar(db.select(ActivityEntry).filter_by(event="console")) is None  # nothing was opened


def test_proxy_refuses_expired_token(app, database_url, clock, tmp_path, vnc, vnc_service):
    user, service = vnc_service(vnc.port)
    token = _token(user, service)
    clock.advance(seconds=61)  # the proxy below starts with the clock past the token's lifetime
    with running_proxy(database_url, clock.now(), tmp_path) as p:
        assert _refused(f"{p['url']}?token={token}") == 403
    assert vnc.connections == 0


def test_proxy_refuses_targets_it_cannot_relay(proxy, vnc, vnc_service):
    user, service = vnc_service(vnc.port, protocol="vnc-websocket")
    assert _refused(f"{proxy['url']}?token={_token(user, service)}") == 403
    assert vnc.connections == 0


def test_cli_command_is_registered():
    from hostbay.web.cli import main

    result = CliRunner().invoke(main, ["console-proxy", "--help"])
    assert result.exit_code == 0 and "--port" in result.output
