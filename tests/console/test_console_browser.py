"""The noVNC page in headless Chromium: the customer opens the console, the page's WebSocket goes through the real
console proxy with a fresh token, and noVNC completes the RFB handshake with a VNC server on loopback."""

from __future__ import annotations

import os
import shutil
import socket
import struct
import threading
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from hostbay.core.db import db

from test_console_proxy import running_proxy  # noqa: E402 - same folder

playwright = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
VENDOR = Path(__file__).resolve().parents[2] / "web" / "static" / "vendor" / "novnc" / "core" / "rfb.js"

pytestmark = [pytest.mark.skipif(not CHROMIUM, reason="needs Debian's chromium"),
              pytest.mark.skipif(not VENDOR.exists(), reason="noVNC not installed: run scripts/assets")]

W, H = 64, 48


class MiniRfbServer:
    """Enough of RFB 3.8 for a viewer to connect: security type None, ServerInit, one raw frame."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.handshakes = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._client, args=(conn,), daemon=True).start()

    @staticmethod
    def _read(conn, n):
        buf = b""
        while len(buf) < n:
            chunk = conn.recv(n - len(buf))
            if not chunk:
                raise ConnectionError
            buf += chunk
        return buf

    def _client(self, conn):
        try:
            with conn:
                conn.sendall(b"RFB 003.008\n")
                assert self._read(conn, 12).startswith(b"RFB 003.")
                conn.sendall(b"\x01\x01")                       # one security type: None
                assert self._read(conn, 1) == b"\x01"
                conn.sendall(struct.pack(">I", 0))              # SecurityResult OK
                self._read(conn, 1)                             # ClientInit
                pixfmt = struct.pack(">BBBBHHHBBB3x", 32, 24, 0, 1, 255, 255, 255, 16, 8, 0)
                name = b"hostbay test"
                conn.sendall(struct.pack(">HH", W, H) + pixfmt + struct.pack(">I", len(name)) + name)
                self.handshakes += 1
                frame = struct.pack(">BxH", 0, 1) + struct.pack(">HHHHi", 0, 0, W, H, 0) + b"\x00\x80\xff\x00" * W * H
                conn.sendall(frame)
                while conn.recv(65536):
                    pass
        except (ConnectionError, OSError, AssertionError):
            pass

    def close(self):
        self.sock.close()


@pytest.fixture
def panel(app):
    port = _free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{port}"
    server.shutdown()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_novnc_page_connects_through_the_proxy(app, panel, database_url, clock, tmp_path, make_user,
                                               make_package, make_node, browser):
    from hostbay.core.catalog import add_cycle
    from hostbay.core.services import Service

    rfb = MiniRfbServer()
    user = make_user(password="correct horse battery")
    pkg, node = make_package(driver="loopvnc"), make_node(driver="loopvnc")
    now = clock.now()
    svc = Service(user_id=user.id, package_id=pkg.id, kind="vps", state="active", cycle="monthly",
                  hostname="browser.example.test", period_start=now, renews_at=add_cycle(now, "monthly"),
                  price_cents=1000, node_id=node.id, infra_ref={"vnc_port": rfb.port})
    db.session.add(svc)
    db.session.commit()
    email, svc_uuid = user.email, svc.uuid
    db.session.remove()
    artifacts = Path(os.environ.get("HOSTBAY_TEST_ARTIFACTS") or tmp_path)
    artifacts.mkdir(parents=True, exist_ok=True)

    try:
        with running_proxy(database_url, clock.now(), tmp_path, base_url=panel) as proxy:
            app.config["HOSTBAY_CONSOLE_URL"] = proxy["url"]
            if True:
                context = browser.new_context()
                page = context.new_page()
                errors = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                page.goto(f"{panel}/login")
                page.fill("input[name=email]", email)
                page.fill("input[name=password]", "correct horse battery")
                page.click("button[type=submit]")
                page.goto(f"{panel}/panel/services/{svc_uuid}/console")
                page.click("main button[type=submit]")
                page.wait_for_selector("#console-screen[data-state=connected]", timeout=15000)
                assert page.inner_text("#console-status") == "Connected"
                assert page.locator("#console-screen canvas").count() == 1
                page.screenshot(path=str(artifacts / "console-connected.png"))
                context.close()
            assert rfb.handshakes == 1
            assert not [e for e in errors if "Content Security Policy" in e or "SyntaxError" in e], errors
    finally:
        rfb.close()
