"""The ``ipmi`` power driver: IPMI v2.0 RMCP+ (``ipmitool -I lanplus``).

Failure handling follows what MAAS's and Ironic's IPMI drivers learnt in the field:

- **One command at a time per BMC**, with a minimum interval between commands (``min_interval_ms``): many BMCs
  crash or wedge when polled too fast. A lock file per BMC (``fcntl.flock``) serialises commands across the
  threads and worker processes of one machine and keeps the time of the last command.
- **The password never reaches a command line**: it is written to a 0600 temporary file passed with ``-f`` and
  removed afterwards (ipmitool blanks ``-P`` in its own argv too late: any process could read it first).
- **The cipher suite is explicit** (``-C``): without it ipmitool's discovery can wait ~10 s against some BMCs.
- **Transient vs fatal**: unreachable, timeout, "node busy", "insufficient resources for session" (session
  limit), "BMC initialization in progress" are retried here with back-off and then raised as
  :class:`TransientDriverError` (the job layer retries later); a wrong user name or password ("RAKP 2 HMAC is
  invalid", "unauthorized name") or a missing privilege is :class:`FatalDriverError` with the reason for staff.
- **Every action is verified by reading the state back** (power state, boot parameter 5); a BMC that acknowledges
  a command but never gets there within ``verify_timeout`` is an error, not a success.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import subprocess
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hostbay.core.drivers import PowerDriver, PowerState, Setting
from hostbay.core.errors import FatalDriverError, SettingsError, TransientDriverError

log = logging.getLogger(__name__)

TARGET_KEYS = ("bmc_host", "bmc_port", "bmc_username", "bmc_password", "bmc_cipher_suite")
BOOT_DEVICES = {"pxe": "pxe", "disk": "disk", "cdrom": "cdrom"}
_SELECTOR = {"pxe": "Force PXE", "disk": "Force Boot from default Hard-Drive", "cdrom": "Force Boot from CD/DVD"}

# ipmitool's words for conditions a later attempt may cure (Ironic's IPMITOOL_RETRYABLE_FAILURES and MAAS's list)
TRANSIENT = ("node busy", "insufficient resources for session", "out of space", "timeout",
             "bmc initialization in progress", "unable to establish", "no response", "get auth capabilities error",
             "error issuing get channel authentication", "no valid response", "connection refused",
             "unable to get chassis power status", "device not available", "temporarily")
# ... and for ones it will not
AUTH = ("rakp 2 hmac is invalid", "unauthorized name", "password invalid", "invalid user name",
        "rakp 2 message indicates an error", "invalid session id", "authentication type")
PRIVILEGE = ("insufficient privilege", "requested privilege level", "privilege level")

_local = threading.Lock()
_thread_locks: dict[str, threading.Lock] = {}


def clean_target(target: dict[str, Any]) -> dict[str, Any]:
    """Validate a server's BMC settings; SettingsError lists every bad field."""
    errors, out = {}, {}
    host = str(target.get("bmc_host") or "").strip()
    if not host:
        errors["bmc_host"] = "BMC address is required"
    out["bmc_host"] = host
    try:
        port = int(target.get("bmc_port") or 623)
        if not 0 < port < 65536:
            raise ValueError
        out["bmc_port"] = port
    except (TypeError, ValueError):
        errors["bmc_port"] = "BMC port must be a number from 1 to 65535"
    user = str(target.get("bmc_username") or "").strip()
    if not user:
        errors["bmc_username"] = "BMC user name is required"
    out["bmc_username"] = user
    out["bmc_password"] = str(target.get("bmc_password") or "")
    if len(out["bmc_password"].encode()) > 20:
        errors["bmc_password"] = "BMC password has more than 20 bytes (the IPMI v2 limit)"
    suite = str(target.get("bmc_cipher_suite") or "").strip()
    if suite and not suite.isdigit():
        errors["bmc_cipher_suite"] = "cipher suite must be a number (17 where supported, 3 otherwise)"
    out["bmc_cipher_suite"] = suite or None
    if errors:
        raise SettingsError(errors)
    return out


class IpmiPowerDriver(PowerDriver):
    name = "ipmi"
    label = "IPMI (RMCP+ lanplus)"
    capabilities = frozenset({"boot_device"})
    settings = [
        Setting("ipmitool", "ipmitool program", required=False, default="ipmitool"),
        Setting("cipher_suite", "Default cipher suite", required=False, default="3",
                help="RMCP+ cipher suite when a server sets none: 17 where the BMCs support it, 3 otherwise."),
        Setting("privilege", "Privilege level", type="choice", required=False, default="OPERATOR",
                choices=("OPERATOR", "ADMINISTRATOR"),
                help="OPERATOR is enough for power and boot device: create the BMC user with it."),
        Setting("min_interval_ms", "Minimum milliseconds between commands to one BMC", type="int",
                required=False, default=1000),
        Setting("timeout", "Seconds one ipmitool call may take", type="int", required=False, default=30),
        Setting("attempts", "Attempts for busy or unreachable BMCs", type="int", required=False, default=3),
        Setting("backoff_ms", "First back-off in milliseconds (doubles per attempt)", type="int", required=False,
                default=2000),
        Setting("verify_timeout", "Seconds to wait for a power state to be reached", type="int", required=False,
                default=60),
        Setting("soft_timeout", "Seconds a soft power-off may take before power is cut", type="int",
                required=False, default=120),
        Setting("lock_dir", "Folder for per-BMC lock files", required=False, default=""),
        Setting("check_host", "BMC for the connection test", required=False, default="",
                help="Address of one BMC whose power state 'Test connection' reads (empty: only ipmitool is "
                     "checked; each server's own BMC is in its hardware settings)."),
        Setting("check_port", "Its UDP port", type="int", required=False, default=623),
        Setting("check_username", "Its user name", required=False, default=""),
        Setting("check_password", "Its password", type="secret", required=False, default=""),
    ]

    # -- plumbing ------------------------------------------------------------------------------------------
    def _lock_dir(self) -> Path:
        d = Path(self.config["lock_dir"] or os.path.join(tempfile.gettempdir(), "hostbay-ipmi-locks"))
        d.mkdir(parents=True, exist_ok=True)
        return d

    @contextmanager
    def _bmc_slot(self, t: dict):
        """Hold the BMC for one command and keep the minimum interval since its previous command."""
        ident = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{t['bmc_host']}_{t['bmc_port']}")
        with _local:
            tl = _thread_locks.setdefault(ident, threading.Lock())
        with tl, open(self._lock_dir() / f"{ident}.lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                fh.seek(0)
                try:
                    last = float(json.loads(fh.read() or "{}").get("last", 0))
                except ValueError:
                    last = 0.0
                wait = self.config["min_interval_ms"] / 1000 - (time.time() - last)
                if wait > 0:
                    time.sleep(wait)
                try:
                    yield
                finally:
                    fh.seek(0)
                    fh.truncate()
                    fh.write(json.dumps({"last": time.time()}))
                    fh.flush()
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _argv(self, t: dict, pwfile: str, command: list[str]) -> list[str]:
        return [self.config["ipmitool"], "-v", "-I", "lanplus", "-H", t["bmc_host"], "-p", str(t["bmc_port"]),
                "-U", t["bmc_username"], "-f", pwfile, "-L", self.config["privilege"],
                "-C", str(t["bmc_cipher_suite"] or self.config["cipher_suite"]), "-N", "2", "-R", "2", *command]

    def _once(self, t: dict, command: list[str]) -> str:
        fd, pwfile = tempfile.mkstemp(prefix="hostbay-ipmi-")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(t["bmc_password"] or "\0")
            with self._bmc_slot(t):
                try:
                    res = subprocess.run(self._argv(t, pwfile, command), capture_output=True, text=True,
                                         timeout=self.config["timeout"], stdin=subprocess.DEVNULL)
                except subprocess.TimeoutExpired:
                    raise TransientDriverError(f"BMC {t['bmc_host']}:{t['bmc_port']} did not answer "
                                               f"'{' '.join(command)}' within {self.config['timeout']} s") from None
                except FileNotFoundError:
                    raise FatalDriverError(f"{self.config['ipmitool']} is not installed") from None
        finally:
            try:
                os.unlink(pwfile)
            except FileNotFoundError:
                pass
        if res.returncode == 0:
            return res.stdout
        text = " ".join((res.stderr + " " + res.stdout).split())
        low = text.lower()
        where = f"BMC {t['bmc_host']}:{t['bmc_port']}"
        if any(w in low for w in AUTH):
            raise FatalDriverError(f"{where} refused the credentials of user {t['bmc_username']!r} "
                                   f"(wrong user name or password): {text[-300:]}")
        if any(w in low for w in PRIVILEGE) and "unable to establish" not in low:
            raise FatalDriverError(f"{where}: user {t['bmc_username']!r} lacks the privilege for "
                                   f"'{' '.join(command)}' (it needs {self.config['privilege']}): {text[-300:]}")
        if any(w in low for w in TRANSIENT):
            raise TransientDriverError(f"{where} did not complete '{' '.join(command)}': {text[-300:]}")
        raise FatalDriverError(f"{where} refused '{' '.join(command)}': {text[-300:]}")

    def _run(self, target: dict, command: list[str]) -> str:
        """One ipmitool command with retries and exponential back-off for transient answers."""
        t = clean_target(target)
        delay = self.config["backoff_ms"] / 1000
        for attempt in range(1, max(1, self.config["attempts"]) + 1):
            try:
                return self._once(t, command)
            except TransientDriverError as exc:
                if attempt >= self.config["attempts"]:
                    raise
                log.warning("IPMI %s:%s attempt %s of '%s' failed, retrying in %.1f s: %s", t["bmc_host"],
                            t["bmc_port"], attempt, " ".join(command), delay, exc)
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def _wait_for(self, target: dict, want: PowerState, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (self.config["verify_timeout"] if timeout is None else timeout)
        while True:
            state = self.power_state(target)
            if state == want:
                return
            if time.monotonic() >= deadline:
                raise FatalDriverError(f"BMC {target.get('bmc_host')}:{target.get('bmc_port')} acknowledged the "
                                       f"command but the server is {state.value}, not {want.value}, after "
                                       f"{self.config['verify_timeout']} s")
            time.sleep(max(0.2, self.config["min_interval_ms"] / 1000))

    # -- primitives ----------------------------------------------------------------------------------------
    def validate(self) -> None:
        """ipmitool runs and, when ``check_host`` names a BMC, that BMC answers a power status query."""
        try:
            subprocess.run([self.config["ipmitool"], "-V"], capture_output=True, timeout=10,
                           stdin=subprocess.DEVNULL, check=False)
        except (FileNotFoundError, PermissionError):
            raise FatalDriverError(f"{self.config['ipmitool']} is not installed") from None
        except subprocess.TimeoutExpired:
            raise FatalDriverError(f"{self.config['ipmitool']} -V did not finish within 10 s") from None
        if self.config["check_host"]:
            self.power_state({"bmc_host": self.config["check_host"], "bmc_port": self.config["check_port"],
                              "bmc_username": self.config["check_username"],
                              "bmc_password": self.config["check_password"]})

    def validate_target(self, target: dict) -> dict:
        return clean_target(target)

    def power_state(self, target):
        out = self._run(target, ["power", "status"]).lower()
        if "is on" in out:
            return PowerState.RUNNING
        if "is off" in out:
            return PowerState.STOPPED
        return PowerState.UNKNOWN

    def power_on(self, target):
        if self.power_state(target) == PowerState.RUNNING:
            return
        self._run(target, ["power", "on"])
        self._wait_for(target, PowerState.RUNNING)

    def power_off(self, target, soft=False):
        if self.power_state(target) == PowerState.STOPPED:
            return
        if soft:
            self._run(target, ["power", "soft"])
            try:
                self._wait_for(target, PowerState.STOPPED, timeout=self.config["soft_timeout"])
                return
            except FatalDriverError:
                log.warning("IPMI %s: soft power-off not done after %s s, cutting power", target.get("bmc_host"),
                            self.config["soft_timeout"])
        self._run(target, ["power", "off"])
        self._wait_for(target, PowerState.STOPPED)

    def power_cycle(self, target):
        # 'power cycle' of a machine that is off fails on many BMCs: turn it on instead
        if self.power_state(target) == PowerState.STOPPED:
            self._run(target, ["power", "on"])
        else:
            self._run(target, ["power", "cycle"])
        self._wait_for(target, PowerState.RUNNING)

    def set_boot_device(self, target, device, efi: bool = False):
        if device not in BOOT_DEVICES:
            raise FatalDriverError(f"unknown boot device {device!r} (pxe, disk or cdrom)")
        cmd = ["chassis", "bootdev", BOOT_DEVICES[device]]
        if efi:
            cmd.append("options=efiboot")
        self._run(target, cmd)
        got = self._run(target, ["chassis", "bootparam", "get", "5"])
        if _SELECTOR[device] not in got or (efi and "BIOS EFI boot" not in got):
            raise FatalDriverError(f"BMC {target.get('bmc_host')}:{target.get('bmc_port')} acknowledged boot "
                                   f"device {device}{' (EFI)' if efi else ''} but reports: "
                                   f"{' '.join(got.split())[-300:]}")
