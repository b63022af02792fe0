"""The ``ipmi`` power driver against a BMC simulator speaking RMCP+ on loopback UDP (a pyghmi ``Bmc`` subclass in
its own process), through the same ipmitool client code production uses. The simulator records what it received;
the tests check power state and boot device on its side."""

from __future__ import annotations

import os
import shutil
import stat
import threading
import time

import pytest

from hostbay.core.drivers import PowerState
from hostbay.core.errors import FatalDriverError, TransientDriverError
from hostbay.plugins.dedicated_ipmi.ipmitool import IpmiPowerDriver
from hostbay.testing import PowerDriverConformance
from hostbay.testing.bmcsim import BmcSimulator, free_udp_port

pytestmark = pytest.mark.skipif(shutil.which("ipmitool") is None, reason="needs ipmitool (scripts/apt-packages.txt)")

FAST = {"min_interval_ms": 20, "verify_timeout": 5, "backoff_ms": 50, "attempts": 3, "timeout": 10}
POWER = {"on": PowerState.RUNNING, "off": PowerState.STOPPED}


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    s = BmcSimulator(tmp_path_factory.mktemp("bmc")).start()
    yield s
    s.stop()


@pytest.fixture(autouse=True)
def _calm(sim):
    sim.control({})
    yield
    sim.control({})


def _drv(lock_dir, **over):
    return IpmiPowerDriver({**FAST, "lock_dir": str(lock_dir), **over})


class TestIpmiConformance(PowerDriverConformance):
    @pytest.fixture(autouse=True)
    def _bind(self, sim, tmp_path):
        self.sim, self.lock_dir = sim, tmp_path

    def make_driver(self):
        t = self.sim.target
        return _drv(self.lock_dir, check_host=t["bmc_host"], check_port=t["bmc_port"],
                    check_username=t["bmc_username"], check_password=t["bmc_password"])

    def make_unreachable_driver(self):
        return _drv(self.lock_dir, attempts=1, check_host="127.0.0.1", check_port=free_udp_port(),
                    check_username="operator", check_password="x")  # nothing listens on that port

    def make_target(self):
        return self.sim.target

    def observed(self, target):
        st = self.sim.state()
        return {"power": POWER[st["power"]], "boot_device": st["boot_device"], "boot_efi": st["boot_efi"]}


def test_commands_arrive_at_the_bmc_in_order(sim, tmp_path):
    drv = _drv(tmp_path)
    drv.power_off(sim.target)
    start = len(sim.state()["received"])
    drv.power_on(sim.target)
    drv.set_boot_device(sim.target, "pxe", efi=True)
    got = sim.state()["received"][start:]
    # power on is read back before and after; the boot device is set once, in EFI mode
    assert got[:3] == ["power_status", "power_on", "power_status"]
    assert got.count("boot_device:pxe:efi") == 1


def test_password_never_on_the_command_line(sim, tmp_path, monkeypatch):
    import subprocess

    seen = []
    real = subprocess.run

    def spy(argv, **kw):
        f = argv[argv.index("-f") + 1]
        seen.append((list(argv), oct(stat.S_IMODE(os.stat(f).st_mode)), open(f).read(), f))
        return real(argv, **kw)

    monkeypatch.setattr(subprocess, "run", spy)
    _drv(tmp_path).power_state(sim.target)
    argv, mode, content, path = seen[0]
    assert sim.password not in " ".join(argv) and "-P" not in argv and "-f" in argv
    assert mode == "0o600" and content == sim.password
    assert not os.path.exists(path), "the password file is removed after the call"
    assert argv[argv.index("-C") + 1] == "3" and argv[argv.index("-I") + 1] == "lanplus"


def test_wrong_password_is_fatal_with_a_reason(sim, tmp_path):
    target = {**sim.target, "bmc_password": "not-the-password"}
    t0 = time.monotonic()
    with pytest.raises(FatalDriverError) as err:
        _drv(tmp_path).power_on(target)
    assert "wrong user name or password" in str(err.value)
    assert "not-the-password" not in str(err.value)
    assert time.monotonic() - t0 < 5, "a fatal answer is not retried"
    assert sim.state()["power"] in ("on", "off")  # nothing was switched


def test_closed_port_is_transient(tmp_path):
    target = {"bmc_host": "127.0.0.1", "bmc_port": free_udp_port(), "bmc_username": "operator",
              "bmc_password": "x", "bmc_cipher_suite": "3"}
    with pytest.raises(TransientDriverError) as err:
        _drv(tmp_path, attempts=2).power_state(target)
    assert "127.0.0.1" in str(err.value)


def test_busy_answers_are_retried_with_backoff(sim, tmp_path):
    drv = _drv(tmp_path)
    drv.power_off(sim.target)
    sim.control({"busy": 2})
    t0 = time.monotonic()
    drv.power_on(sim.target)
    took = time.monotonic() - t0
    st = sim.state()
    assert st["power"] == "on" and st["busy_answers"] >= 2
    assert took >= 0.05 + 0.1, "back-off doubles: 50 ms then 100 ms"


def test_busy_for_good_is_transient_for_the_job_layer(sim, tmp_path):
    sim.control({"busy": 100})
    with pytest.raises(TransientDriverError) as err:
        _drv(tmp_path, attempts=2).power_on(sim.target)
    assert "busy" in str(err.value).lower()


def test_slow_bmc_within_the_timeout_works(sim, tmp_path):
    drv = _drv(tmp_path)
    drv.power_on(sim.target)
    sim.control({"delay": 0.4})
    t0 = time.monotonic()
    assert drv.power_state(sim.target) == PowerState.RUNNING
    assert time.monotonic() - t0 >= 0.4


def test_slow_bmc_beyond_the_timeout_is_transient(sim, tmp_path):
    sim.control({"delay": 3})
    t0 = time.monotonic()
    with pytest.raises(TransientDriverError) as err:
        _drv(tmp_path, timeout=2, attempts=1).power_state(sim.target)
    assert "did not answer" in str(err.value) and time.monotonic() - t0 < 6
    sim.control({})
    time.sleep(3.5)  # let the simulator drain the retransmissions it queued


def test_a_bmc_that_never_gets_there_is_an_error(sim, tmp_path):
    drv = _drv(tmp_path, verify_timeout=1)
    drv.power_off(sim.target)
    sim.control({"ignore_power": True})
    with pytest.raises(FatalDriverError) as err:
        drv.power_on(sim.target)
    assert "stopped, not running" in str(err.value)
    assert sim.state()["power"] == "off"


def test_one_command_at_a_time_with_a_minimum_interval(sim, tmp_path, monkeypatch):
    """Four threads and two driver instances polling one BMC: the ipmitool runs never overlap and each starts at
    least min_interval_ms after the previous one ended."""
    import subprocess

    stamps, lock = [], threading.Lock()
    real = subprocess.run

    def timed(argv, **kw):
        start = time.monotonic()
        try:
            return real(argv, **kw)
        finally:
            with lock:
                stamps.append((start, time.monotonic()))

    monkeypatch.setattr(subprocess, "run", timed)
    drivers = [_drv(tmp_path, min_interval_ms=300), _drv(tmp_path, min_interval_ms=300)]
    threads = [threading.Thread(target=drivers[i % 2].power_state, args=(sim.target,)) for i in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    stamps.sort()
    assert len(stamps) == 4
    gaps = [s2 - e1 for (_, e1), (s2, _) in zip(stamps, stamps[1:])]
    assert min(gaps) >= 0.29, gaps


def test_bad_target_settings_are_refused_before_any_call(tmp_path):
    from hostbay.core.errors import SettingsError

    with pytest.raises(SettingsError) as err:
        _drv(tmp_path).power_state({"bmc_host": "", "bmc_port": "99999", "bmc_username": "",
                                    "bmc_password": "x" * 21})
    assert set(err.value.errors) == {"bmc_host", "bmc_port", "bmc_username", "bmc_password"}


def test_session_limit_is_retried_then_works(sim, tmp_path):
    """A BMC whose session table is full answers "insufficient resources for session": a transient answer."""
    drv = _drv(tmp_path)
    drv.power_on(sim.target)
    start = len(sim.state()["received"])
    sim.control({"session_limit": 2})
    assert drv.power_state(sim.target) == PowerState.RUNNING
    got = sim.state()["received"][start:]
    assert got.count("session_refused") == 2 and got[-1] == "power_status"


def test_session_limit_for_good_is_transient(sim, tmp_path):
    sim.control({"session_limit": 100})
    with pytest.raises(TransientDriverError) as err:
        _drv(tmp_path, attempts=2).power_state(sim.target)
    assert "insufficient resources for session" in str(err.value)
