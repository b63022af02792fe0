"""hostbay's nftables anti-spoofing filter on the wire (``plugins/kvm/nft.py``): hand-made frames from a "guest"
namespace reach a "peer" namespace, or not, through a bridged port and through a routed one (``network:
ethernet``, which libvirt's nwfilter leaves unfiltered). The rules live in a "host" namespace of the test's own
(spoofnet.HostWire), so the machine's own ruleset is never touched. The bridged expectations are the constants
the nwfilter tests hold hostbay's libvirt filter and libvirt's clean-traffic to (test_kvm_antispoof.py)."""

from __future__ import annotations

import os
import shutil

import pytest

from hostbay.core.drivers import Address
from hostbay.plugins.kvm import nft as N

import spoofnet as S
from kvm_testhost import PREFIX
from test_kvm_antispoof import FRAMES, IP, IP6, IP_B, OTHER_IP, OTHER_IP6, V4, V4_ALLOWED

pytestmark = [pytest.mark.slow]

DUAL = [*V4, Address(IP6, 64), Address("2001:db8:5f::11", 64)]
DUAL_ALLOWED = V4_ALLOWED | {"ipv6", "ipv6-link-local"}

# routed: the guest sends to its router's MAC, towards the peer's network behind it
ROUTED = {
    "ipv4": S.udp4(S.GUEST_MAC, IP, S.ROUTED_PEER_IP, "ipv4", S.ROUTER_MAC),
    "ipv4-second": S.udp4(S.GUEST_MAC, IP_B, S.ROUTED_PEER_IP, "ipv4-second", S.ROUTER_MAC),
    "ipv4-other-source": S.udp4(S.GUEST_MAC, OTHER_IP, S.ROUTED_PEER_IP, "ipv4-other-source", S.ROUTER_MAC),
    "ipv4-other-mac": S.udp4(S.OTHER_MAC, IP, S.ROUTED_PEER_IP, "ipv4-other-mac", S.ROUTER_MAC),
    "ipv6": S.udp6(S.GUEST_MAC, IP6, S.ROUTED_PEER_IP6, "ipv6", S.ROUTER_MAC),
    "ipv6-other-source": S.udp6(S.GUEST_MAC, OTHER_IP6, S.ROUTED_PEER_IP6, "ipv6-other-source", S.ROUTER_MAC),
    "ipv6-other-mac": S.udp6(S.OTHER_MAC, IP6, S.ROUTED_PEER_IP6, "ipv6-other-mac", S.ROUTER_MAC),
}


def _need_root():
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("network namespaces and veth pairs need root and iproute2")
    if not shutil.which("nft"):
        pytest.skip("nft is not installed (Debian package nftables)")


@pytest.fixture
def bridged():
    _need_root()
    w = S.HostWire(PREFIX[:8] + "n", port_name=N.port_name(f"{PREFIX}nft-bridged")).up()
    yield w
    w.down()


@pytest.fixture
def routed():
    _need_root()
    w = S.HostWire(PREFIX[:8] + "r", port_name=N.port_name(f"{PREFIX}nft-routed"), routed=True).up()
    yield w
    w.down()


def test_bridged_port_sends_only_from_its_mac_and_addresses(bridged):
    assert bridged.delivered(FRAMES) == set(FRAMES)  # no table yet: the wire carries everything
    nft = N.Nft(bridged.nft)
    nft.apply(bridged.port, S.GUEST_MAC, V4)
    assert bridged.delivered(FRAMES) == V4_ALLOWED
    assert nft.port_addresses(bridged.port) == {IP, IP_B}
    nft.apply(bridged.port, S.GUEST_MAC, DUAL)
    assert bridged.delivered(FRAMES) == DUAL_ALLOWED
    assert nft.port_addresses(bridged.port) == {a.address for a in DUAL}


def test_a_port_without_its_chain_carries_nothing_and_applying_again_changes_only_the_addresses(bridged):
    nft = N.Nft(bridged.nft)
    nft.ensure()  # the table exists, the port has no entry: fail closed
    assert bridged.delivered(FRAMES) == set()
    nft.apply(bridged.port, S.GUEST_MAC, [Address(IP_B, 24)])
    nft.ensure()  # run again by another worker: the port keeps its entry, no rule is doubled
    assert bridged.delivered(FRAMES) == {"ipv4-second", "ipv4-dhcp-discover", "arp-second"}
    nft.remove(bridged.port)
    assert nft.port_addresses(bridged.port) is None
    assert bridged.delivered(FRAMES) == set()
    nft.remove(bridged.port)  # removing what is gone is not an error


def test_towards_the_guest_only_ip_arp_and_ipv6_of_a_dual_stack_port(bridged):
    frames = {
        "to-ipv4": S.udp4(S.PEER_MAC, "192.0.2.20", IP, "to-ipv4", S.GUEST_MAC),
        "to-ipv6": S.udp6(S.PEER_MAC, "2001:db8:5f::20", IP6, "to-ipv6", S.GUEST_MAC),
        "to-arp": S.arp(S.PEER_MAC, S.PEER_MAC, "192.0.2.20", IP, "to-arp"),
        "to-other-type": S.udp4(S.PEER_MAC, "192.0.2.20", IP, "to-other-type", S.GUEST_MAC)[:12] + b"\x88\xb5"
        + S.udp4(S.PEER_MAC, "192.0.2.20", IP, "to-other-type", S.GUEST_MAC)[14:],
    }
    nft = N.Nft(bridged.nft)
    nft.apply(bridged.port, S.GUEST_MAC, V4)
    assert bridged.delivered(frames, to_guest=True) == {"to-ipv4", "to-arp"}
    nft.apply(bridged.port, S.GUEST_MAC, DUAL)
    assert bridged.delivered(frames, to_guest=True) == {"to-ipv4", "to-arp", "to-ipv6"}


def test_routed_port_is_filtered_too(routed):
    assert routed.delivered(ROUTED) == set(ROUTED)  # no table yet: the host forwards every source
    nft = N.Nft(routed.nft)
    nft.apply(routed.port, S.GUEST_MAC, DUAL)
    assert routed.delivered(ROUTED) == {"ipv4", "ipv4-second", "ipv6"}
    nft.apply(routed.port, S.GUEST_MAC, V4)
    assert routed.delivered(ROUTED) == {"ipv4", "ipv4-second"}


def test_routed_port_teaches_the_host_only_its_own_addresses_by_arp(routed):
    frames = {name: S.arp(src, sender, ip, "192.0.2.1", name) for name, src, sender, ip in (
        ("arp", S.GUEST_MAC, S.GUEST_MAC, IP), ("arp-second", S.GUEST_MAC, S.GUEST_MAC, IP_B),
        ("arp-other-ip", S.GUEST_MAC, S.GUEST_MAC, OTHER_IP), ("arp-other-mac", S.GUEST_MAC, S.OTHER_MAC, IP_B),
        ("arp-from-other-mac", S.OTHER_MAC, S.OTHER_MAC, "192.0.2.12"))}
    N.Nft(routed.nft).apply(routed.port, S.GUEST_MAC, V4)
    routed.delivered(frames, seconds=0.5)  # sent; what the host learnt is in its neighbour table
    assert routed.neighbours() == {IP: S.GUEST_MAC, IP_B: S.GUEST_MAC}


def test_the_script_names_only_hostbay_ports():
    with pytest.raises(ValueError):
        N.apply_script("eth0", S.GUEST_MAC, V4)
    with pytest.raises(ValueError):
        N.apply_script(N.port_name("x"), "52:54:00:5f:00:0a; flush ruleset", V4)
    assert N.is_port(N.port_name("hostbay-abc")) and len(N.port_name("hostbay-abc")) == 15
    assert N.port_name("hostbay-a") != N.port_name("other-a")
