"""Test connection boots a probe guest (plugins/kvm/probe.py) on the real libvirtd: ``auto`` picks KVM only when
the probe runs under KVM, and says which type it chose and why."""

from __future__ import annotations

from pathlib import Path

import pytest

from hostbay.core.errors import FatalDriverError
from hostbay.plugins.kvm import driver as drivermod
from hostbay.plugins.kvm import probe as P

pytestmark = [pytest.mark.libvirt, pytest.mark.slow]

# A boot sector that halts at once and writes nothing: what a host that cannot run guests shows.
DEAD_SECTOR = b"\xfa\xf4\xeb\xfd".ljust(510, b"\0") + b"\x55\xaa"


class _FailsUnderKvm(drivermod.KvmDriver):
    def probe_image(self, virt_type):
        return DEAD_SECTOR if virt_type == "kvm" else super().probe_image(virt_type)


@pytest.fixture(autouse=True)
def _fresh_choices(monkeypatch):
    monkeypatch.setattr(drivermod, "_AUTO_CHOICES", {})


def _host_offers_kvm(drv) -> bool:
    from hostbay.plugins.kvm import xml as X

    caps = X.parse(drv.conn.getCapabilities())
    return any(d.get("type") == "kvm" for d in caps.iterfind("./guest/arch[@name='x86_64']/domain"))


def _leftovers(drv) -> list[str]:
    names = [d.name() for d in drv.conn.listAllDomains(0) if "probe-" in d.name()]
    vols = [v.name() for v in drv.owned_volumes(drv.config["name_prefix"] + "probe")]
    return [n for n in names + vols if n.startswith(drv.config["name_prefix"])]


def test_probe_passes_every_stage_under_qemu(kvm_host):
    drv = drivermod.KvmDriver(kvm_host.settings())
    result = drv.probe("qemu")
    assert result.ok, result.output
    lines = [line.strip() for line in result.output.splitlines() if line.strip()]
    assert lines == [f"hostbay-probe: {s}" for s in P.STAGES] + [P.OK_LINE]
    assert _leftovers(drv) == []  # domain and disk removed


def test_auto_picks_qemu_when_the_kvm_probe_fails(kvm_host):
    drv = _FailsUnderKvm(kvm_host.settings(probe_timeout=5))
    if not _host_offers_kvm(drv):
        pytest.skip("this host does not offer KVM at all (auto is QEMU without a probe)")
    message = drv.validate()
    assert message.startswith("auto chose QEMU emulation (TCG): the host offers KVM, but a probe guest under kvm")
    assert "wrote nothing on its serial console" in message
    assert drv.virt_type() == "qemu"  # and the servers it creates run under emulation
    assert _leftovers(drv) == []


def test_explicit_kvm_that_cannot_run_guests_fails_test_connection(kvm_host):
    drv = _FailsUnderKvm(kvm_host.settings(virt_type="kvm", probe_timeout=5))
    if not _host_offers_kvm(drv):
        pytest.skip("this host does not offer KVM")
    with pytest.raises(FatalDriverError, match="this node cannot run guests: virt_type is set to kvm"):
        drv.validate()


def test_test_connection_says_what_auto_chose_on_this_host(kvm_host):
    drv = drivermod.KvmDriver(kvm_host.settings())
    message = drv.validate()
    assert message.startswith("auto chose ")
    chosen = drv.virt_type()
    assert ("auto chose KVM" in message) == (chosen == "kvm")
    if Path("/sys/module/kvm_pvm").exists():
        # a PVM host: /dev/kvm is there, a stock guest dies at once; the probe stops where a kernel would
        assert chosen == "qemu"
        assert "reached firmware, 64-bit but not exception" in message


def test_auto_result_is_cached_per_host(kvm_host, monkeypatch):
    drv = _FailsUnderKvm(kvm_host.settings(probe_timeout=3))
    if not _host_offers_kvm(drv):
        pytest.skip("this host does not offer KVM")
    calls = []
    real = drv.probe
    monkeypatch.setattr(drv, "probe", lambda vt: calls.append(vt) or real(vt))
    assert drv.virt_type() == "qemu" and drv.virt_type() == "qemu"
    assert calls == ["kvm"]  # one probe, then the remembered answer
