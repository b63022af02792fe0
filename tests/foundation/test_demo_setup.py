"""The demo finishes every flow: the test gateway's hosted pay page settles a top-up through the real webhook
endpoint; the simulated driver serves a console screen over RFB; scripts/demo makes PORT and HOSTBAY_BASE_URL
agree, reports a port in use before it prints a URL, runs the console proxy; the README names it all."""

from __future__ import annotations

import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from hostbay.core import ledger, payments
from hostbay.core.catalog import Node
from hostbay.core.db import db
from hostbay.core.demo import DEMO_CUSTOMER, load_demo
from hostbay.core.payments import Payment
from hostbay.web import demo_env

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def app_config():
    return {"HOSTBAY_JOBS": "sync"}


@pytest.fixture
def served(app):
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}"
    app.config["HOSTBAY_BASE_URL"] = url
    yield url
    server.shutdown()
    thread.join(timeout=10)


def test_the_demo_top_up_settles_through_the_test_gateways_pay_page(app, served):
    import requests

    load_demo()
    assert [name for name, _ in payments.enabled_gateways()] == ["fake"]
    db.session.commit()  # hold no transaction (SQLite: the write lock) while the served panel works
    s = requests.Session()
    assert s.post(f"{served}/login", data={"email": DEMO_CUSTOMER[0], "password": DEMO_CUSTOMER[1]},
                  allow_redirects=False).status_code == 302
    resp = s.post(f"{served}/panel/topup", data={"amount": "25", "gateway": "fake"}, allow_redirects=False)
    assert resp.status_code == 303
    pay_url = resp.headers["Location"]
    assert re.fullmatch(rf"{served}/test-gateway/pay/fk_[0-9a-f]{{16}}", pay_url)
    page = s.get(pay_url)
    assert page.status_code == 200 and "$25.00" in page.text and "no money moves" in page.text
    back = s.post(pay_url, data={"outcome": "settled"}, allow_redirects=False)
    assert back.status_code == 303 and "/panel/topup/" in back.headers["Location"]
    db.session.expire_all()
    pay = db.session.scalar(db.select(Payment))
    assert pay.status == "credited", pay.status  # the signed webhook reached the endpoint and the re-fetch agreed
    assert ledger.balance_cents(pay.user_id) == 10000 + 2500
    db.session.commit()
    # a second visit pays nothing twice
    again = s.post(pay_url, data={"outcome": "settled"}, allow_redirects=False)
    assert again.status_code == 200 and "settled" in again.text
    db.session.expire_all()
    assert ledger.balance_cents(pay.user_id) == 12500


def test_pay_page_exists_only_while_the_test_gateway_is_enabled(app, client, make_user):
    from hostbay.testing.pytest_plugin import login

    login(client, make_user())
    assert client.get("/test-gateway/pay/fk_0000000000000000").status_code == 404


def _rfb_frame(port: int) -> tuple[int, int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        def read(n):
            buf = b""
            while len(buf) < n:
                chunk = s.recv(n - len(buf))
                assert chunk, "server closed"
                buf += chunk
            return buf

        assert read(12) == b"RFB 003.008\n"
        s.sendall(b"RFB 003.008\n")
        assert read(2) == b"\x01\x01"
        s.sendall(b"\x01")
        assert read(4) == b"\0\0\0\0"
        s.sendall(b"\x01")
        width, height = struct.unpack(">HH", read(4))
        read(16)
        (name_len,) = struct.unpack(">I", read(4))
        read(name_len)
        s.sendall(struct.pack(">BxHHHHH", 3, 0, 0, 0, width, height))  # full update request
        assert read(4)[0] == 0
        x, y, w, h, enc = struct.unpack(">HHHHi", read(12))
        assert (w, h, enc) == (width, height, 0)
        return width, height, read(w * h * 4)


def test_the_demo_console_shows_a_text_screen(app):
    load_demo()
    node = db.session.scalar(db.select(Node).filter_by(name="demo-node-1"))
    assert node.settings.get("console_screen") is True
    driver = app.extensions["hostbay"].driver("virt", node.driver, node.settings)
    target = driver.console_target({"id": "not-in-this-process"})  # the proxy runs in another process
    assert (target.host, target.protocol) == ("127.0.0.1", "vnc")
    width, height, pixels = _rfb_frame(target.port)
    assert width >= 640
    light = sum(1 for i in range(0, len(pixels), 4) if pixels[i] > 200)
    assert 1000 < light < width * height // 2  # text on a dark screen


def test_port_and_base_url_agree():
    assert demo_env.resolve({})["HOSTBAY_BASE_URL"] == "http://127.0.0.1:5000"
    assert demo_env.resolve({"PORT": "5077"})["HOSTBAY_BASE_URL"] == "http://127.0.0.1:5077"
    assert demo_env.resolve({"HOSTBAY_BASE_URL": "http://127.0.0.1:5078/"})["PORT"] == "5078"
    assert demo_env.resolve({"PORT": "5079", "HOSTBAY_BASE_URL": "http://127.0.0.1:5079"})["PORT"] == "5079"
    with pytest.raises(demo_env.DemoAddressError, match="different ports"):
        demo_env.resolve({"PORT": "5077", "HOSTBAY_BASE_URL": "http://127.0.0.1:5000"})


def test_a_port_in_use_is_reported_before_any_url():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "hostbay.web.demo_env"], capture_output=True, text=True,
                              env={"PORT": str(port), "HOSTBAY_CONSOLE_PROXY_PORT": "0", "PATH": "/usr/bin:/bin"},
                              timeout=60)
    assert proc.returncode == 1 and proc.stdout == ""
    assert f"Port {port} on 127.0.0.1 is in use" in proc.stderr
    script = (ROOT / "scripts" / "demo").read_text()
    assert script.index("hostbay.web.demo_env") < script.index("hostbay panel:")  # checked before the URL


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_scripts_demo_starts_the_panel_and_the_console_proxy(tmp_path):
    """scripts/demo itself, run with this virtual environment (pip made a no-op), a fresh instance and free ports:
    the panel answers on PORT and hostbay's console proxy on HOSTBAY_CONSOLE_PROXY_PORT; stopping the script stops
    them."""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    venv = Path(sys.executable).parent
    shims = tmp_path / "venv" / "bin"
    shims.mkdir(parents=True)
    (shims / "pip").write_text("#!/bin/sh\nexit 0\n")
    for name in ("python", "hostbay"):
        (shims / name).write_text(f'#!/bin/sh\nexec "{venv / name}" "$@"\n')
    for shim in shims.iterdir():
        shim.chmod(0o755)
    port, console_port = _free_port(), _free_port()
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path), "HOSTBAY_VENV": str(tmp_path / "venv"),
           "PORT": str(port), "HOSTBAY_CONSOLE_PROXY_PORT": str(console_port),
           "HOSTBAY_INSTANCE_PATH": str(tmp_path / "instance")}
    err = (tmp_path / "demo.err").open("w+")
    proc = subprocess.Popen(["bash", str(ROOT / "scripts" / "demo")], env=env, stdout=subprocess.DEVNULL,
                            stderr=err, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (tmp_path / "demo.err").read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=2) as resp:
                    assert resp.status == 200
                with socket.create_connection(("127.0.0.1", console_port), timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, (tmp_path / "demo.err").read_text()
                time.sleep(0.3)
        with pytest.raises(InvalidStatus) as refused:
            with connect(f"ws://127.0.0.1:{console_port}/", open_timeout=10):
                pass
        assert refused.value.response.status_code == 403  # hostbay's proxy: a console needs a token
        assert refused.value.response.body == b"Console refused: no token"
        assert f"hostbay panel: http://127.0.0.1:{port}/" in (tmp_path / "demo.err").read_text()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        err.close()
    time.sleep(0.5)
    for p in (port, console_port):
        assert demo_env.port_free(p), f"port {p} still in use after the demo stopped"


def test_readme_names_port_base_url_and_the_staff_home():
    readme = (ROOT / "README.md").read_text()
    for needle in ("PORT=", "HOSTBAY_BASE_URL", "/staff/", "console", "test payment gateway", "two-factor"):
        assert needle in readme, needle
