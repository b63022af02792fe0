"""Runs ``hostbay.core.console_proxy.serve`` (what ``hostbay console-proxy`` runs) for the proxy tests, with a
virtualization driver whose console is a raw VNC port on loopback, as the KVM driver's is.

Usage: python proxy_main.py PORT   (configuration from HOSTBAY_* variables; HOSTBAY_TEST_NOW freezes the clock
at the test's time so tokens issued by the test are judged by the same clock)."""

from __future__ import annotations

import os
import sys
from datetime import datetime

from hostbay.core.clock import FrozenClock
from hostbay.core.drivers import ConsoleTarget, PowerState, VirtDriver
from hostbay.core.hookspecs import hookimpl


class LoopVncDriver(VirtDriver):
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


def main() -> None:
    from hostbay.core.console_proxy import serve
    from hostbay.web import create_app

    port = int(sys.argv[1])
    now = os.environ.get("HOSTBAY_TEST_NOW")
    clock = FrozenClock(datetime.fromisoformat(now)) if now else None
    app = create_app({"TESTING": True}, extra_plugins=[LoopVncPlugin()], clock=clock)
    serve(app, "127.0.0.1", port)


if __name__ == "__main__":
    main()
