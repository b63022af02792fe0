"""The seed's network-config through cloud-init's own renderers (cloud-init 22.4 of the Debian test image, run in
a chroot with ``cloud-init devel net-convert``): ifupdown (eni), systemd-networkd, netplan (Ubuntu's, with
networkd behind it) and NetworkManager get the addresses, the IPv4 and IPv6 default gateways and the resolvers.
The boot tests in test_kvm_guests.py prove ifupdown and networkd in running guests; this covers every renderer
in seconds, and keeps the reason for ``gateway4`` checked: a v2 default route still renders as net-tools
``route add`` for ifupdown."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from hostbay.core.drivers import Address, ServerSpec
from hostbay.plugins.kvm import seed as S

pytestmark = [pytest.mark.slow, pytest.mark.guests]
ROOT = Path(__file__).resolve().parents[3]
MAC = "52:54:00:12:34:56"


@pytest.fixture(scope="module")
def chroot(tmp_path_factory):
    if os.geteuid() != 0 or shutil.which("debootstrap") is None:
        pytest.skip("needs root and debootstrap (scripts/build-test-image)")
    res = subprocess.run(["bash", str(ROOT / "scripts" / "build-test-image"), "rootfs"], capture_output=True,
                         text=True, timeout=1800)
    assert res.returncode == 0, res.stderr[-2000:]
    tar = res.stdout.strip().splitlines()[-1]
    root = tmp_path_factory.mktemp("cloudinit-root")
    subprocess.run(["tar", "-C", str(root), "-xf", tar, "./usr", "./etc", "./lib", "./lib64", "./bin", "./sbin"],
                   check=False, capture_output=True)
    (root / "tmp").mkdir(exist_ok=True)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _render(root: Path, network_config: str, kind: str) -> str:
    (root / "tmp" / "nc.json").write_text(network_config)
    out = root / "tmp" / f"out-{kind}"
    shutil.rmtree(out, ignore_errors=True)
    res = subprocess.run(["chroot", str(root), "cloud-init", "devel", "net-convert", "-p", "/tmp/nc.json", "-k",
                          "yaml", "-O", kind, "-d", f"/tmp/out-{kind}", "-D", "debian"], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    return "\n".join(p.read_text() for p in sorted(out.rglob("*")) if p.is_file() and "udev" not in str(p))


def _spec():
    return ServerSpec(uuid="u1", hostname="web1.example.test", vcpus=1, memory_mib=512, disk_gib=4, image={},
                      node={}, addresses=(Address("10.77.0.5", 24, "10.77.0.1"), Address("10.77.0.6", 24),
                                          Address("2001:db8:1::5", 64, "2001:db8:1::1")),
                      nameservers=("10.77.0.53", "2001:db8:1::53"))


EXPECT = {
    "eni": ["address 10.77.0.5/24", "address 10.77.0.6/24", "gateway 10.77.0.1", "address 2001:db8:1::5/64",
            "gateway 2001:db8:1::1", "dns-nameservers 10.77.0.53 2001:db8:1::53"],
    "networkd": ["Address=10.77.0.5/24", "Address=10.77.0.6/24", "Address=2001:db8:1::5/64", "Gateway=10.77.0.1",
                 "Gateway=2001:db8:1::1", "DNS=10.77.0.53 2001:db8:1::53", f"MACAddress={MAC}"],
    "netplan": ["10.77.0.5/24", "10.77.0.6/24", "2001:db8:1::5/64", "gateway4: 10.77.0.1",
                "gateway6: 2001:db8:1::1", "- 10.77.0.53", "accept-ra: false"],
    "network-manager": ["address1=10.77.0.5/24", "address2=10.77.0.6/24", "gateway=10.77.0.1",
                        "address1=2001:db8:1::5/64", "gateway=2001:db8:1::1", "dns=10.77.0.53;",
                        f"mac-address={MAC}"],
}


@pytest.mark.parametrize("kind", sorted(EXPECT))
def test_seed_renders_on_every_renderer(chroot, kind):
    text = _render(chroot, S.network_config(_spec(), MAC), kind)
    for needle in EXPECT[kind]:
        assert needle in text, f"{kind}: {needle!r} missing in\n{text}"
    assert "route add" not in text  # no net-tools command anywhere


def test_a_v2_default_route_still_needs_net_tools_on_ifupdown(chroot):
    """Why the seed says gateway4: cloud-init renders routes: [{to: 0.0.0.0/0}] as a `route` (net-tools) call,
    which a Debian cloud image without net-tools runs and ignores (`|| true`)."""
    doc = json.loads(S.network_config(_spec(), MAC))
    eth = doc["ethernets"]["eth0"]
    eth.pop("gateway4")
    eth["routes"] = [{"to": "0.0.0.0/0", "via": "10.77.0.1"}]
    text = _render(chroot, json.dumps(doc), "eni")
    assert "post-up route add default gw 10.77.0.1 || true" in text
    assert not (chroot / "sbin" / "route").exists() and not (chroot / "usr" / "sbin" / "route").exists()
