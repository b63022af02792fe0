"""The conformance suites can fail: a driver that advertises every capability but does nothing fails each case
that checks a capability's effect or an error type (the fake drivers, the KVM driver and the example plugin pass
them)."""

import pytest

from hostbay.core.drivers import PowerDriver, PowerState, VirtDriver
from hostbay.core.errors import FatalDriverError, TransientDriverError
from hostbay.testing import PowerDriverConformance, VirtDriverConformance


class NoOpVirt(VirtDriver):
    name, label = "noop", "No-op"
    capabilities = frozenset({"resize", "rebuild", "iso", "console", "suspend", "move"})
    servers: dict = {}

    def create(self, spec, progress):
        progress(50, "pretending")
        self.servers[spec.uuid] = {"spec": spec, "state": PowerState.RUNNING}
        return {"id": spec.uuid}

    def status(self, ref):
        s = self.servers.get(ref["id"])
        return PowerState.MISSING if s is None else s["state"]

    def start(self, ref):
        if ref["id"] in self.servers:
            self.servers[ref["id"]]["state"] = PowerState.RUNNING

    def stop(self, ref, timeout=60):
        if ref["id"] in self.servers:
            self.servers[ref["id"]]["state"] = PowerState.STOPPED

    def restart(self, ref):
        self.start(ref)

    def reinstall(self, ref, spec, progress):
        return ref  # does nothing

    def delete(self, ref):
        self.servers.pop(ref["id"], None)

    def resize(self, ref, spec, progress):
        return ref  # does nothing

    def rebuild(self, ref, spec, progress):
        return ref  # does nothing

    def suspend(self, ref):
        self.stop(ref)

    def mount_iso(self, ref, iso_path):
        pass  # does nothing

    def move(self, ref, spec, target, progress):
        return ref  # does nothing

    def eject_iso(self, ref):
        pass

    def console_target(self, ref):
        from hostbay.core.drivers import ConsoleTarget

        return ConsoleTarget("127.0.0.1", 5900)


class NoOpSuite(VirtDriverConformance):
    def make_driver(self):
        return NoOpVirt({})

    def observed(self, drv, ref):  # reads the truth: the no-op driver never changed it
        spec = NoOpVirt.servers[ref["id"]]["spec"]
        return {"vcpus": spec.vcpus, "memory_mib": spec.memory_mib, "disk_gib": spec.disk_gib,
                "system_disk": spec.uuid, "iso": None, "node": "noop-1"}

    def make_move_target(self):
        return {}


def _server(suite):
    drv, spec = suite.make_driver(), suite.make_spec()
    return drv, spec, drv.create(spec, lambda *_: None), []


@pytest.mark.parametrize("case", ["test_resize_grows", "test_reinstall_replaces_the_system_disk",
                                  "test_rebuild_recreates_the_server", "test_iso_mount_and_eject",
                                  "test_a_missing_server_is_a_fatal_error", "test_move_to_another_node"])
def test_a_no_op_virt_driver_fails(case, tmp_path):
    suite = NoOpSuite()
    method = getattr(suite, case)
    with pytest.raises((AssertionError, pytest.fail.Exception)):
        if case == "test_a_missing_server_is_a_fatal_error":
            method()
        elif case == "test_iso_mount_and_eject":
            method(_server(suite), tmp_path)
        else:
            method(_server(suite))


def test_a_suite_without_observe_fails_the_capability_cases():
    class Lazy(VirtDriverConformance):
        def make_driver(self):
            return NoOpVirt({})

    suite = Lazy()
    with pytest.raises(NotImplementedError):
        suite.test_resize_grows(_server(suite))


class NoBootPower(PowerDriver):
    name, label = "noboot", "No boot"
    capabilities = frozenset({"boot_device"})
    state = PowerState.STOPPED

    def power_state(self, target):
        return self.state

    def power_on(self, target):
        type(self).state = PowerState.RUNNING

    def power_off(self, target, soft=False):
        type(self).state = PowerState.STOPPED

    def power_cycle(self, target):
        type(self).state = PowerState.RUNNING

    def set_boot_device(self, target, device):
        pass  # does nothing


def test_a_power_driver_that_ignores_the_boot_device_fails():
    class Suite(PowerDriverConformance):
        def make_driver(self):
            return NoBootPower({})

        def observed(self, target):
            return {"power": NoBootPower.state, "boot_device": "disk"}  # the hardware never changed

    with pytest.raises(AssertionError):
        Suite().test_boot_device()


def test_validate_must_refuse_an_unreachable_host():
    class Suite(VirtDriverConformance):
        def make_driver(self):
            return NoOpVirt({})

        def make_unreachable_driver(self):
            return NoOpVirt({})  # its validate() accepts anything

    with pytest.raises(pytest.fail.Exception):
        Suite().test_validate_refuses_unreachable_infrastructure()


def _raising(error):
    """A NoOpVirt whose every operation raises ``error`` (what its mapping makes of a refused connection)."""
    class Down(NoOpVirt):
        def _down(self, *a, **k):
            raise error

        create = status = start = stop = restart = reinstall = delete = _down

    return Down({})


@pytest.mark.parametrize("unreachable", [
    pytest.param(lambda: NoOpVirt({}), id="answers-as-if-the-host-were-up"),
    pytest.param(lambda: _raising(FatalDriverError("connection refused")), id="maps-it-to-fatal"),
    pytest.param(lambda: _raising(ConnectionRefusedError(111, "Connection refused")), id="bare-exception"),
])
def test_an_unreachable_host_must_be_a_transient_error(unreachable):
    class Suite(NoOpSuite):
        def make_unreachable_driver(self):
            return unreachable()

    suite = Suite()
    with pytest.raises(pytest.fail.Exception) as failed:
        suite.test_an_unreachable_host_is_a_transient_error(_server(suite))
    assert "against an unreachable host" in str(failed.value)


def test_a_driver_that_reports_an_outage_as_transient_passes_that_case():
    class Suite(NoOpSuite):
        def make_unreachable_driver(self):
            return _raising(TransientDriverError("connection refused"))

    suite = Suite()
    suite.test_an_unreachable_host_is_a_transient_error(_server(suite))
