"""A BMC simulator speaking IPMI v2.0 RMCP+ (lanplus) on a loopback UDP port, for tests and the demo.

It is a :class:`pyghmi.ipmi.bmc.Bmc` subclass run in its own process (``Bmc.listen()`` never returns)::

    python -m hostbay.testing.bmcsim --port 6230 --user operator --password-file pw --state state.json

The simulated machine's power state, its next boot device (with the EFI flag) and every request it received are
written to the JSON ``--state`` file after each request, so a test checks what the BMC saw. Behaviour is read
from the optional ``--control`` JSON file before each request, so a test can change it while the BMC runs:

- ``{"delay": 2.5}``: answer every request that late (a slow BMC);
- ``{"busy": 3}``: answer the next three commands with completion code 0xC0 "node busy";
- ``{"session_limit": 2}``: refuse the next two RMCP+ sessions ("insufficient resources to create a session");
- ``{"ignore_power": true}``: acknowledge power commands without changing the state (a BMC that never gets there).

:class:`BmcSimulator` starts and stops such a process from Python.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

BOOT_NAMES = {"network": "pxe", "hd": "disk", "optical": "cdrom", "default": "default", "setup": "setup",
              "floppy": "floppy", "usb": "usb"}


def _make_bmc_class():
    import pyghmi.ipmi.bmc as bmc

    class SimulatedBmc(bmc.Bmc):
        current = None

        def __init__(self, authdata, port, state_path: str, control_path: str | None):
            super().__init__(authdata, port=port, address="127.0.0.1")
            SimulatedBmc.current = self
            self.state_path = Path(state_path)
            self.control_path = Path(control_path) if control_path else None
            self.state = {"power": "off", "boot_device": "default", "boot_efi": False, "received": [],
                          "busy_answers": 0}
            if self.state_path.exists():
                try:
                    self.state.update(json.loads(self.state_path.read_text()))
                except ValueError:
                    pass
            self._save()

        # -- bookkeeping ---------------------------------------------------------------------------------------
        def _control(self) -> dict:
            if self.control_path and self.control_path.exists():
                try:
                    return json.loads(self.control_path.read_text() or "{}")
                except ValueError:
                    return {}
            return {}

        def _save(self) -> None:
            tmp = self.state_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.state))
            os.replace(tmp, self.state_path)

        def _record(self, what: str) -> None:
            self.state["received"].append(what)
            self._save()

        # -- the request loop ----------------------------------------------------------------------------------
        def handle_raw_request(self, request, session):
            ctl = self._control()
            if ctl.get("delay"):
                time.sleep(float(ctl["delay"]))
            if ctl.get("busy") and request["netfn"] == 0 and request["command"] in (1, 2, 8):
                left = int(ctl["busy"])
                if self.control_path:
                    ctl["busy"] = left - 1
                    self.control_path.write_text(json.dumps(ctl))
                self.state["busy_answers"] += 1
                self._record(f"busy:{request['netfn']}:{request['command']}")
                return session.send_ipmi_response(code=0xC0)
            self._ignore = bool(ctl.get("ignore_power"))
            return super().handle_raw_request(request, session)

        def get_power_state(self):
            self._record("power_status")
            return self.state["power"]

        def _set_power(self, what: str, to: str | None):
            self._record(what)
            if to is not None and not getattr(self, "_ignore", False):
                self.state["power"] = to
                self._save()
            return 0

        def power_on(self):
            return self._set_power("power_on", "on")

        def power_off(self):
            return self._set_power("power_off", "off")

        def power_shutdown(self):
            return self._set_power("power_soft", "off")

        def power_cycle(self):
            # a cycle of a machine that is off turns it on, as real BMCs document it
            return self._set_power("power_cycle", "on")

        def power_reset(self):
            return self._set_power("power_reset", "on")

        def get_boot_device(self):
            return {"pxe": "network", "disk": "hd", "cdrom": "optical"}.get(self.state["boot_device"], "default")

        def get_system_boot_options(self, request, session):
            # pyghmi's Bmc always answers "legacy"; report the EFI flag that was set, as a real BMC does
            if request["data"][0] == 5:
                dev = {"network": 4, "hd": 8, "optical": 0x14}.get(self.get_boot_device(), 0)
                flags = 0x80 | (0x20 if self.state.get("boot_efi") else 0)
                return session.send_ipmi_response(data=[1, 5, flags, dev, 0, 0, 0])
            return super().get_system_boot_options(request, session)

        def set_system_boot_options(self, request, session):
            data = request["data"]
            if data and data[0] == 5 and len(data) >= 3:
                self.state["boot_efi"] = bool(data[1] & 0x20)
                self.state["boot_persistent"] = bool(data[1] & 0x40)
            return super().set_system_boot_options(request, session)

        def set_boot_device(self, bootdevice):
            name = BOOT_NAMES.get(bootdevice, str(bootdevice))
            self.state["boot_device"] = name
            self._record(f"boot_device:{name}{':efi' if self.state.get('boot_efi') else ''}")

    import pyghmi.ipmi.private.serversession as serversession

    original_open = serversession.ServerSession.create_open_session_response

    def open_response(session, request):
        # {"session_limit": n}: refuse the next n RMCP+ sessions with status 0x01, "insufficient resources to
        # create a session", as a BMC whose session table is full does
        sim = SimulatedBmc.current
        ctl = sim._control() if sim is not None else {}
        if ctl.get("session_limit"):
            ctl["session_limit"] = int(ctl["session_limit"]) - 1
            sim.control_path.write_text(json.dumps(ctl))
            sim._record("session_refused")
            session.clientsessionid = request[4:8]
            return bytearray([request[0], 0x01, 0, 0]) + bytearray(request[4:8])
        return original_open(session, request)

    serversession.ServerSession.create_open_session_response = open_response
    return SimulatedBmc


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--user", default="operator")
    ap.add_argument("--password-file", required=True)
    ap.add_argument("--state", required=True)
    ap.add_argument("--control")
    args = ap.parse_args(argv)
    password = Path(args.password_file).read_text().strip()
    cls = _make_bmc_class()
    sim = cls({args.user: password}, args.port, args.state, args.control)
    print("listening", flush=True)
    sim.listen()


def free_udp_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class BmcSimulator:
    """Start a simulated BMC in a subprocess on 127.0.0.1; read what it saw with :meth:`state`."""

    def __init__(self, workdir, user: str = "operator", password: str = "sim-password", port: int | None = None):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.user, self.password = user, password
        self.port = port or free_udp_port()
        self.state_path = self.dir / f"bmc-{self.port}.json"
        self.control_path = self.dir / f"bmc-{self.port}-control.json"
        self.proc: subprocess.Popen | None = None

    @property
    def target(self) -> dict:
        return {"bmc_host": "127.0.0.1", "bmc_port": self.port, "bmc_username": self.user,
                "bmc_password": self.password, "bmc_cipher_suite": "3"}

    def start(self) -> "BmcSimulator":
        pw = self.dir / f"bmc-{self.port}.pw"
        pw.write_text(self.password)
        os.chmod(pw, 0o600)
        self.control({})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hostbay.testing.bmcsim", "--port", str(self.port), "--user", self.user,
             "--password-file", str(pw), "--state", str(self.state_path), "--control", str(self.control_path)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        if "listening" not in line:
            raise RuntimeError("the BMC simulator did not start")
        return self

    def control(self, values: dict) -> None:
        self.control_path.write_text(json.dumps(values))

    def state(self) -> dict:
        for _ in range(50):
            try:
                return json.loads(self.state_path.read_text())
            except (OSError, ValueError):
                time.sleep(0.02)
        raise RuntimeError("no simulator state")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


if __name__ == "__main__":
    main()
