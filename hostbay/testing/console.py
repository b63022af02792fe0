"""The console proxy for tests: a loopback-VNC driver and the real proxy (``hostbay.core.console_proxy.serve``, what
``hostbay console-proxy`` runs) in its own process, for core's console tests and for any driver whose console
goes through the proxy.

``running_proxy(database_url, now, tmp_path, plugins="proxmox,fake")`` starts it on a free loopback port and yields
``{"url": "ws://127.0.0.1:PORT/", "log": Path}``; the proxy process loads :class:`LoopVncPlugin` besides the
plugins named. ``python -m hostbay.testing.console PORT`` is that process (configuration from ``HOSTBAY_*``
variables; ``HOSTBAY_TEST_NOW`` freezes its clock at the test's time, so tokens the test issued are judged by the
same clock).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from hostbay.core.drivers import ConsoleTarget, PowerState, VirtDriver
from hostbay.core.hookspecs import hookimpl

ORIGIN = "http://127.0.0.1:5000"


class LoopVncDriver(VirtDriver):
    """A driver whose console is a raw VNC port on loopback (``infra_ref["vnc_port"]``), as the KVM driver's is."""

    name = "loopvnc"
    label = "Loopback VNC (tests)"
    capabilities = frozenset({"console"})

    def create(self, spec, progress):  # pragma: no cover - not used by the proxy
        return {"vnc_port": 0}

    def status(self, ref):
        return PowerState.RUNNING

    def start(self, ref):
        pass

    def stop(self, ref, timeout=60):
        pass

    def restart(self, ref):
        pass

    def reinstall(self, ref, spec, progress):
        return ref

    def delete(self, ref):
        pass

    def console_target(self, ref):
        return ConsoleTarget("127.0.0.1", int(ref["vnc_port"]), protocol=ref.get("protocol", "vnc"))


class LoopVncPlugin:
    @hookimpl
    def hostbay_virt_drivers(self):
        return [LoopVncDriver]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_proxy(database_url: str, now: datetime | None, tmp_path: Path, *, base_url: str = ORIGIN,
                  plugins: str = "fake", start_timeout: float = 60):
    """Start the console proxy on a free loopback port; stop it afterwards."""
    port = _free_port()
    log = Path(tmp_path) / "proxy.log"
    env = dict(os.environ, HOSTBAY_DATABASE_URL=database_url, HOSTBAY_INSTANCE_PATH=str(Path(tmp_path) / "proxy"),
               HOSTBAY_SECRET_KEY="proxy-test", HOSTBAY_BASE_URL=base_url, HOSTBAY_JOBS="sync",
               HOSTBAY_PLUGINS=plugins)
    if now is not None:
        env["HOSTBAY_TEST_NOW"] = now.isoformat()
    env.pop("HOSTBAY_REDIS_URL", None)
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "hostbay.testing.console", str(port)], env=env, stdout=fh,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"the console proxy exited:\n{log.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"the console proxy did not start:\n{log.read_text()}") from None
                time.sleep(0.1)
        yield {"url": f"ws://127.0.0.1:{port}/", "log": log, "port": port}
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def main() -> None:
    from hostbay.core.clock import FrozenClock
    from hostbay.core.console_proxy import serve
    from hostbay.web import create_app

    port = int(sys.argv[1])
    now = os.environ.get("HOSTBAY_TEST_NOW")
    clock = FrozenClock(datetime.fromisoformat(now)) if now else None
    app = create_app({"TESTING": True}, extra_plugins=[LoopVncPlugin()], clock=clock)
    serve(app, "127.0.0.1", port)


if __name__ == "__main__":
    main()
