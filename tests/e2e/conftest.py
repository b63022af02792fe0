"""Fixtures for the end-to-end customer journey: the real panel on loopback, a `hostbay worker` on Redis, the real
`hostbay console-proxy`, libvirtd with QEMU, and the BTCPay stand-in provider.

Screenshots go to ``$HOSTBAY_TEST_ARTIFACTS/e2e`` (default ``artifacts/e2e``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from hostbay.core.clock import SystemClock


class WallClock(SystemClock):
    """The real time (the worker and the console proxy run on it too), which a test can hold still for a moment."""

    def __init__(self):
        self._held: datetime | None = None

    def now(self) -> datetime:
        return self._held or super().now()

    @contextlib.contextmanager
    def held(self, ahead: timedelta = timedelta(0)):
        """Stand still at now + ``ahead`` until the block ends."""
        self._held = super().now() + ahead
        try:
            yield self._held
        finally:
            self._held = None


@pytest.fixture
def clock():
    return WallClock()


@pytest.fixture
def app_config():
    return {"HOSTBAY_JOBS": "thread", "WTF_CSRF_ENABLED": True}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def live_server(app):
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}"
    app.config["HOSTBAY_BASE_URL"] = url
    yield url
    server.shutdown()
    thread.join(timeout=10)


E2E_PREFIX = os.environ.get("HOSTBAY_TEST_E2E_PREFIX", "hbe2e-")
E2E_BASE = Path(os.environ.get("HOSTBAY_TEST_E2E_KVM_DIR", "/var/lib/hostbay-test/e2e"))


def _remove_e2e_leftovers(uri: str, pools: bool) -> None:
    """This suite's domains, volumes and pools only (prefix E2E_PREFIX, under E2E_BASE), so the KVM plugin's own
    tests running on the same libvirtd are left alone."""
    from hostbay.plugins.kvm.tests.kvm_testhost import remove_leftovers

    remove_leftovers(uri, E2E_BASE, pools, prefix=E2E_PREFIX)


@pytest.fixture(scope="session")
def kvm_host():
    """libvirtd + QEMU (the KVM plugin's test host helpers) with a blank qcow2 template; skips when libvirtd is
    missing. Domains are named ``hbe2e-<service uuid>`` and disks live under E2E_BASE."""
    from hostbay.plugins.kvm.tests.kvm_testhost import (TEMPLATE, TEMPLATE_SIZE, URI, KvmHost, kernel_can_shape,
                                                        libvirt_unavailable_reason)

    reason = libvirt_unavailable_reason()
    if reason:
        pytest.skip(reason)
    _remove_e2e_leftovers(URI, pools=False)
    templates, disks, isos = E2E_BASE / "templates", E2E_BASE / "disks", E2E_BASE / "isos"
    try:
        for d in (E2E_BASE.parent, E2E_BASE, templates, isos):
            d.mkdir(exist_ok=True)
            d.chmod(0o755)  # QEMU runs as its own user and must reach the template
    except PermissionError as exc:
        pytest.skip(f"cannot prepare {E2E_BASE} ({exc}): run as root or set HOSTBAY_TEST_E2E_KVM_DIR")
    template = templates / TEMPLATE
    if not template.exists():
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(template), str(TEMPLATE_SIZE)], check=True)
    host = KvmHost(URI, templates, disks, isos, kernel_can_shape())
    yield host
    _remove_e2e_leftovers(URI, pools=True)
    shutil.rmtree(E2E_BASE, ignore_errors=True)
    with contextlib.suppress(OSError):
        E2E_BASE.parent.rmdir()  # only when empty


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


@pytest.fixture
def worker(app, database_url, tmp_path):
    """A real ``hostbay worker`` on Redis (HOSTBAY_TEST_REDIS_URL) on a queue of its own; the panel enqueues there.
    Without HOSTBAY_TEST_REDIS_URL the panel runs the jobs itself (its ``thread`` mode) and this yields None."""
    redis_url = os.environ.get("HOSTBAY_TEST_REDIS_URL")
    if not redis_url:
        app.config["HOSTBAY_JOBS"] = "thread"
        yield None
        return
    queue = f"hostbay-e2e-{uuid.uuid4().hex[:8]}"
    app.config.update(HOSTBAY_JOBS="rq", HOSTBAY_REDIS_URL=redis_url, HOSTBAY_QUEUE=queue,
                      HOSTBAY_EMBEDDED=database_url.startswith("sqlite"))
    env = dict(os.environ, HOSTBAY_DATABASE_URL=database_url, HOSTBAY_REDIS_URL=redis_url, HOSTBAY_QUEUE=queue,
               HOSTBAY_INSTANCE_PATH=str(tmp_path / "worker"))
    log = tmp_path / "worker.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "hostbay.web.cli", "worker", "--without-scheduler"],
                                env=env, stdout=fh, stderr=subprocess.STDOUT)
    yield {"proc": proc, "log": log}
    _stop(proc)


@pytest.fixture
def console_proxy(app, live_server, database_url, tmp_path):
    """The real ``hostbay console-proxy`` on a free loopback port; the panel hands browsers its WebSocket URL."""
    port = _free_port()
    log = tmp_path / "console-proxy.log"
    env = dict(os.environ, HOSTBAY_DATABASE_URL=database_url, HOSTBAY_BASE_URL=live_server,
               HOSTBAY_INSTANCE_PATH=str(tmp_path / "console-proxy"), HOSTBAY_SECRET_KEY="e2e-console-proxy")
    env.pop("HOSTBAY_REDIS_URL", None)
    # the proxy resolves the console through the service's driver: it loads the plugins the panel under test
    # loaded (the panel of a test also loads the opt-in simulated drivers, a production process only when named)
    env["HOSTBAY_PLUGINS"] = ",".join(p.name for p in app.extensions["hostbay"].plugins
                                      if p.state == "loaded" and not p.builtin)
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "hostbay.web.cli", "console-proxy", "--port", str(port)],
                                env=env, stdout=fh, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            pytest.fail(f"console proxy exited: {log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail("console proxy did not start")
            time.sleep(0.1)
    app.config["HOSTBAY_CONSOLE_URL"] = f"ws://127.0.0.1:{port}/"
    yield {"url": app.config["HOSTBAY_CONSOLE_URL"], "log": log}
    _stop(proc)


@pytest.fixture(scope="session")
def btcpay_api():
    from hostbay.plugins.crypto_payments.tests.crypto_standins import BTCPayStandIn

    srv = BTCPayStandIn()
    yield srv
    srv.close()


@pytest.fixture
def shots():
    """``shots(page, name)`` saves a numbered full-page screenshot: 01-name.png, 02-name.png, ..."""
    folder = Path(os.environ.get("HOSTBAY_TEST_ARTIFACTS", "artifacts")) / "e2e"
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("[0-9][0-9]-*.png"):
        old.unlink()
    taken: list[Path] = []

    def _shot(page, name: str) -> Path:
        path = folder / f"{len(taken) + 1:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        taken.append(path)
        return path

    _shot.taken = taken
    return _shot
