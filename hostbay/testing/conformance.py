"""Conformance suites: one base test class per driver interface. A driver's test module subclasses the suite and
overrides the factory methods; every bundled and third-party driver runs the same contract tests.

    class TestMyDriver(VirtDriverConformance):
        def make_driver(self): return MyDriver({...})
        def make_spec(self, **kw): return super().make_spec(image={"name": "t", "source": "..."}, **kw)
        def observed(self, drv, ref): return {...}          # what the infrastructure says (see observed)
        def make_unreachable_driver(self): return MyDriver({"uri": "...:1"})   # or None: nothing to reach

The cases check effects, not return values: each capability's case reads the infrastructure back through
``observed``, so a driver whose resize, reinstall, rebuild or ISO methods do
nothing fails them, and ``validate()`` must refuse a driver that cannot reach its infrastructure. The error types
have cases too: a missing server is a ``FatalDriverError`` (no retry), an unreachable host a
``TransientDriverError`` (the job layer retries it later), never a bare exception, a fatal error or a result.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from hostbay.core.drivers import (Address, ConsoleTarget, DnsBackend, NetworkFilter, PaymentGateway, PowerDriver,
                                  PowerState, ServerSpec, SignatureError, VirtDriver)
from hostbay.core.drivers import CAPABILITY_METHODS
from hostbay.core.errors import DriverError, FatalDriverError, SettingsError, TransientDriverError

TEST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEfZQmrHVr2i6OmnFzRzRu8LrbSZrvVdaROzW0DkmHh0 conformance"


def _noop(_pct, _text):
    pass


class _DriverBasics:
    interface: type

    def make_driver(self):  # pragma: no cover - overridden
        raise NotImplementedError

    def test_declares_name_label_settings(self):
        drv = self.make_driver()
        assert isinstance(drv, self.interface)
        assert drv.name and isinstance(drv.name, str) and drv.name == drv.name.strip()
        assert drv.label and len(drv.label) <= 60
        keys = [s.key for s in drv.settings]
        assert len(keys) == len(set(keys)), "setting keys must be unique"
        assert set(drv.capabilities) <= set(self.interface.OPTIONAL), "unknown capability advertised"

    def test_advertised_capabilities_are_implemented(self):
        cls = type(self.make_driver())
        for cap in cls.capabilities:
            for method in CAPABILITY_METHODS.get(self.interface, {}).get(cap, ()):
                assert getattr(cls, method) is not getattr(self.interface, method), \
                    f"{cls.__name__} advertises {cap!r} but does not implement {method}()"

    def make_unreachable_driver(self):
        """A driver configured for infrastructure that does not answer (a closed loopback port), or None when the
        driver reaches nothing (in-memory, local files). Override it."""
        raise NotImplementedError("override make_unreachable_driver() (return None if there is nothing to reach)")

    def test_validate_accepts_the_working_configuration(self):
        self.make_driver().validate()

    def test_validate_refuses_unreachable_infrastructure(self):
        drv = self.make_unreachable_driver()
        if drv is None:
            pytest.skip("the driver reaches no infrastructure")
        with pytest.raises(DriverError) as err:
            drv.validate()
        assert str(err.value), "validate() must say what is wrong"

    def test_required_settings_are_enforced(self):
        cls = type(self.make_driver())
        required = [s for s in cls.settings if s.required and s.default is None]
        if not required:
            pytest.skip("no required settings")
        with pytest.raises(SettingsError) as err:
            cls({})
        assert set(err.value.errors) == {s.key for s in required}


class VirtDriverConformance(_DriverBasics):
    interface = VirtDriver
    boot_timeout = 60.0

    def make_spec(self, **overrides) -> ServerSpec:
        values = dict(uuid=str(uuid.uuid4()), hostname="conformance.example.test", vcpus=1, memory_mib=128,
                      disk_gib=1, image={"name": "test", "source": "test"}, node={}, ssh_keys=(TEST_KEY,),
                      addresses=(Address("192.0.2.10", 24, "192.0.2.1"),), nameservers=("192.0.2.53",),
                      port_speed_mbit=100)
        values.update(overrides)
        return ServerSpec(**values)

    def observed(self, drv, ref) -> dict:
        """What the infrastructure says about the server, read back independently of the call under test:
        ``vcpus``, ``memory_mib``, ``disk_gib``, ``system_disk`` (an identity that changes whenever the system disk
        is replaced) and ``iso`` (the mounted image's path, or None). Override it."""
        raise NotImplementedError("override observed(drv, ref) so the capability cases can check their effect")

    def iso_path(self, tmp_path) -> str:
        """An ISO image the driver's host can read (default: a small file in the test's temporary folder)."""
        path = tmp_path / "conformance.iso"
        path.write_bytes(b"\0" * 32768)
        return str(path)

    @pytest.fixture
    def server(self):
        drv = self.make_driver()
        spec = self.make_spec()
        steps = []
        ref = drv.create(spec, lambda pct, text: steps.append((pct, text)))
        yield drv, spec, ref, steps
        drv.delete(ref)

    def test_create_runs_and_reports_progress(self, server):
        drv, _spec, ref, steps = server
        assert isinstance(ref, dict) and ref
        assert drv.status(ref) == PowerState.RUNNING
        assert steps, "create must report progress"
        assert all(0 <= p <= 100 for p, _ in steps)

    def test_create_is_idempotent(self, server):
        drv, spec, ref, _ = server
        assert drv.create(spec, _noop) == ref
        assert drv.status(ref) == PowerState.RUNNING

    def test_stop_start_restart(self, server):
        drv, _spec, ref, _ = server
        drv.stop(ref, timeout=5)
        assert drv.status(ref) == PowerState.STOPPED
        drv.stop(ref, timeout=5)  # stopping a stopped server is fine
        drv.start(ref)
        assert drv.status(ref) == PowerState.RUNNING
        drv.restart(ref)
        assert drv.status(ref) == PowerState.RUNNING

    def test_reinstall_keeps_it_running(self, server):
        drv, spec, ref, _ = server
        new_ref = drv.reinstall(ref, spec, _noop)
        assert drv.status(new_ref) == PowerState.RUNNING

    def test_reinstall_replaces_the_system_disk(self, server):
        drv, spec, ref, _ = server
        before = self.observed(drv, ref)["system_disk"]
        new_ref = drv.reinstall(ref, spec, _noop) or ref
        assert self.observed(drv, new_ref)["system_disk"] != before, "reinstall left the old system disk"
        assert drv.status(new_ref) == PowerState.RUNNING

    def test_a_missing_server_is_a_fatal_error(self):
        drv = self.make_driver()
        ref = drv.create(self.make_spec(), _noop)
        drv.delete(ref)
        assert drv.status(ref) == PowerState.MISSING
        for call in (lambda: drv.start(ref), lambda: drv.reinstall(ref, self.make_spec(), _noop)):
            with pytest.raises(FatalDriverError):  # not a raw exception, and not worth retrying
                call()

    def test_an_unreachable_host_is_a_transient_error(self, server):
        """With its host not answering (``make_unreachable_driver``), the driver's operations raise
        TransientDriverError: the job is retried once the host is back. A fatal error would fail the customer's
        order for a passing outage; a result (``MISSING``, a silent delete) would have core release the addresses
        of a server that still runs."""
        drv = self.make_unreachable_driver()
        if drv is None:
            pytest.skip("the driver reaches no infrastructure")
        _drv, _spec, ref, _ = server  # a real server's reference, asked of a driver that cannot reach its host
        calls = {"status": lambda: drv.status(ref), "start": lambda: drv.start(ref),
                 "delete": lambda: drv.delete(ref), "create": lambda: drv.create(self.make_spec(), _noop)}
        for name, call in calls.items():
            try:
                got = call()
            except TransientDriverError as exc:
                assert str(exc), f"{name}(): the transient error must say what failed"
                continue
            except Exception as exc:  # noqa: BLE001 - the case reports which type came instead
                pytest.fail(f"{name}() against an unreachable host raised {type(exc).__name__} ({exc}), "
                            "not TransientDriverError")
            pytest.fail(f"{name}() against an unreachable host returned {got!r} instead of raising "
                        "TransientDriverError")

    def test_delete_removes_and_is_idempotent(self):
        drv = self.make_driver()
        ref = drv.create(self.make_spec(), _noop)
        drv.delete(ref)
        assert drv.status(ref) == PowerState.MISSING
        drv.delete(ref)

    def test_suspend_and_unsuspend(self, server):
        drv, _spec, ref, _ = server
        drv.suspend(ref)
        assert drv.status(ref) in (PowerState.STOPPED, PowerState.PAUSED)
        drv.unsuspend(ref)
        assert drv.status(ref) == PowerState.RUNNING

    def test_resize_grows(self, server):
        drv, spec, ref, _ = server
        if not drv.supports("resize"):
            pytest.skip("no resize capability")
        from dataclasses import replace

        bigger = replace(spec, vcpus=spec.vcpus + 1, memory_mib=spec.memory_mib * 2, disk_gib=spec.disk_gib + 1)
        new_ref = drv.resize(ref, bigger, _noop) or ref
        assert drv.status(new_ref) in (PowerState.RUNNING, PowerState.STOPPED)
        seen = self.observed(drv, new_ref)
        assert (seen["vcpus"], seen["memory_mib"], seen["disk_gib"]) == (bigger.vcpus, bigger.memory_mib,
                                                                           bigger.disk_gib)

    def test_rebuild_recreates_the_server(self, server):
        drv, spec, ref, _ = server
        if not drv.supports("rebuild"):
            pytest.skip("no rebuild capability")
        from dataclasses import replace

        before = self.observed(drv, ref)["system_disk"]
        other = replace(spec, vcpus=spec.vcpus + 1)
        new_ref = drv.rebuild(ref, other, _noop) or ref
        seen = self.observed(drv, new_ref)
        assert seen["system_disk"] != before, "rebuild left the old system disk"
        assert (seen["vcpus"], seen["disk_gib"]) == (other.vcpus, other.disk_gib)
        assert drv.status(new_ref) == PowerState.RUNNING

    def test_iso_mount_and_eject(self, server, tmp_path):
        drv, _spec, ref, _ = server
        if not drv.supports("iso"):
            pytest.skip("no iso capability")
        path = self.iso_path(tmp_path)
        assert self.observed(drv, ref)["iso"] is None
        drv.mount_iso(ref, path)
        assert self.observed(drv, ref)["iso"] == path
        drv.mount_iso(ref, path)  # inserting the same image again is harmless
        drv.eject_iso(ref)
        assert self.observed(drv, ref)["iso"] is None
        drv.eject_iso(ref)  # ejecting an empty drive is harmless

    def make_move_target(self) -> dict | None:
        """The settings of a second node of the same driver to move a server to (capability ``move``), or None
        when there is none here. ``observed`` must then also return ``node``: where the infrastructure says the
        server lives (a host, a storage directory, a node name)."""
        return None

    def test_move_to_another_node(self, server):
        drv, spec, ref, _ = server
        if not drv.supports("move"):
            pytest.skip("no move capability")
        target = self.make_move_target()
        if target is None:
            pytest.skip("no second node to move to")
        other = type(drv)(target)
        before = self.observed(drv, ref)
        new_ref = None
        try:
            new_ref = drv.move(ref, spec, other.config, _noop) or ref
            seen = self.observed(other, new_ref)
            assert seen["node"] != before["node"], "move left the server where it was"
            assert other.status(new_ref) == PowerState.RUNNING
            assert (seen["vcpus"], seen["memory_mib"], seen["disk_gib"]) == (before["vcpus"], before["memory_mib"],
                                                                               before["disk_gib"])
            again = drv.move(ref, spec, other.config, _noop) or ref  # a retry after the move finishes it, once
            assert again == new_ref and self.observed(other, again)["node"] == seen["node"]
            assert other.status(again) == PowerState.RUNNING
        finally:
            if new_ref is not None:
                other.delete(new_ref)

    def test_console_target(self, server):
        drv, _spec, ref, _ = server
        if not drv.supports("console"):
            pytest.skip("no console capability")
        target = drv.console_target(ref)
        assert isinstance(target, ConsoleTarget) and target.port > 0 and target.host


class PowerDriverConformance(_DriverBasics):
    interface = PowerDriver

    def make_target(self) -> dict:
        return {}

    def test_power_cycle(self):
        drv, target = self.make_driver(), self.make_target()
        drv.power_on(target)
        assert drv.power_state(target) == PowerState.RUNNING
        drv.power_off(target)
        assert drv.power_state(target) == PowerState.STOPPED
        drv.power_cycle(target)
        assert drv.power_state(target) == PowerState.RUNNING


    def test_boot_device(self):
        drv = self.make_driver()
        if not drv.supports("boot_device"):
            pytest.skip("no boot_device capability")
        target = self.make_target()
        for device in ("pxe", "disk", "cdrom", "disk"):
            drv.set_boot_device(target, device)
            assert self.observed(target)["boot_device"] == device


    # -- read-back checks: what the machine itself reports, not what the driver believes ---------------------
    def observed(self, target) -> dict:
        """Override: the machine's own view, ``{"power": PowerState, "boot_device": "pxe"|"disk"|"cdrom"|…,
        "boot_efi": bool}`` (for a BMC simulator: what it recorded)."""
        raise NotImplementedError("a PowerDriver conformance test must say what the machine reports")

    def test_power_actions_reach_the_machine(self):
        drv, target = self.make_driver(), self.make_target()
        drv.power_on(target)
        assert self.observed(target)["power"] == PowerState.RUNNING
        drv.power_on(target)  # already on: not an error
        assert drv.power_state(target) == PowerState.RUNNING
        drv.power_off(target, soft=True)
        assert self.observed(target)["power"] == PowerState.STOPPED
        assert drv.power_state(target) == PowerState.STOPPED
        drv.power_off(target)  # already off: not an error
        drv.power_cycle(target)  # a cycle of a machine that is off leaves it on
        assert self.observed(target)["power"] == PowerState.RUNNING
        drv.power_cycle(target)
        assert self.observed(target)["power"] == PowerState.RUNNING
        drv.power_off(target)
        assert self.observed(target)["power"] == PowerState.STOPPED

    def test_boot_device_reaches_the_machine(self):
        drv, target = self.make_driver(), self.make_target()
        if not drv.supports("boot_device"):
            pytest.skip("no boot_device capability")
        for device in ("pxe", "cdrom", "disk", "pxe"):
            drv.set_boot_device(target, device)
            seen = self.observed(target)
            assert seen["boot_device"] == device and not seen.get("boot_efi")
        drv.set_boot_device(target, "pxe", efi=True)
        seen = self.observed(target)
        assert seen["boot_device"] == "pxe" and seen["boot_efi"] is True

    def test_unknown_boot_device_is_refused(self):
        from hostbay.core.errors import DriverError

        drv, target = self.make_driver(), self.make_target()
        if not drv.supports("boot_device"):
            pytest.skip("no boot_device capability")
        before = self.observed(target)["boot_device"]
        with pytest.raises(DriverError):
            drv.set_boot_device(target, "floppy")
        assert self.observed(target)["boot_device"] == before


class PaymentGatewayConformance(_DriverBasics):
    interface = PaymentGateway

    def signed_delivery(self, drv, provider_ref: str, settled: bool) -> tuple[dict, bytes]:
        """Return (headers, raw body) of a correctly signed webhook for ``provider_ref``."""
        raise NotImplementedError

    def test_checkout_and_webhook_roundtrip(self):
        drv = self.make_driver()
        co = drv.create_checkout(Decimal("25.00"), "conformance-1", "http://127.0.0.1/return",
                                 "http://127.0.0.1/notify")
        assert co.provider_ref and co.checkout_url
        headers, body = self.signed_delivery(drv, co.provider_ref, settled=True)
        ev = drv.parse_webhook(headers, body)
        assert ev.provider_ref == co.provider_ref and ev.event_id

    def test_tampered_webhook_is_rejected(self):
        drv = self.make_driver()
        co = drv.create_checkout(Decimal("25.00"), "conformance-2", "http://127.0.0.1/r", "http://127.0.0.1/n")
        headers, body = self.signed_delivery(drv, co.provider_ref, settled=True)
        with pytest.raises(SignatureError):
            drv.parse_webhook(headers, body.replace(b"25", b"99") + b" ")


class NetworkFilterConformance(_DriverBasics):
    interface = NetworkFilter

    def make_server(self):
        """Return (virt driver, ref) of a running server the filter can act on."""
        raise NotImplementedError

    def applied_addresses(self, virt, ref) -> set[str]:
        raise NotImplementedError

    def test_apply_replaces_the_set(self):
        flt = self.make_driver()
        virt, ref = self.make_server()
        flt.apply(virt, ref, [Address("192.0.2.20", 24)])
        assert self.applied_addresses(virt, ref) == {"192.0.2.20"}
        flt.apply(virt, ref, [Address("192.0.2.21", 24), Address("192.0.2.22", 24)])
        assert self.applied_addresses(virt, ref) == {"192.0.2.21", "192.0.2.22"}
        flt.apply(virt, ref, [Address("192.0.2.21", 24), Address("192.0.2.22", 24)])  # idempotent
        assert self.applied_addresses(virt, ref) == {"192.0.2.21", "192.0.2.22"}


class DnsBackendConformance(_DriverBasics):
    interface = DnsBackend

    def lookup_ptr(self, drv, address: str) -> str | None:
        raise NotImplementedError

    def test_set_and_remove_ptr(self):
        drv = self.make_driver()
        drv.set_ptr("192.0.2.33", "host.example.test")
        assert self.lookup_ptr(drv, "192.0.2.33") == "host.example.test"
        drv.set_ptr("192.0.2.33", "other.example.test")
        assert self.lookup_ptr(drv, "192.0.2.33") == "other.example.test"
        drv.set_ptr("192.0.2.33", None)
        assert self.lookup_ptr(drv, "192.0.2.33") is None
