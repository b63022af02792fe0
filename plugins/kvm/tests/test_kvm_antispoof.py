"""Anti-spoofing on the wire: the filter the KVM driver writes into a domain's ``<filterref>`` is bound by libvirt
to a bridged veth port whose other end is a "guest" network namespace; hand-made frames from the guest either
reach a peer namespace on the same bridge or not (spoofnet.py). Also: hostbay's host-wide filters drop what
libvirt's clean-traffic drops, and they are defined once and upgraded in place."""

from __future__ import annotations

import os
import shutil

import pytest

from hostbay.core.drivers import Address

import spoofnet as S
from kvm_testhost import PREFIX

pytestmark = [pytest.mark.libvirt, pytest.mark.slow]

IP, IP_B, OTHER_IP, PEER_IP = "192.0.2.10", "192.0.2.11", "192.0.2.66", "192.0.2.20"
IP6, OTHER_IP6, PEER_IP6 = "2001:db8:5f::10", "2001:db8:5f::66", "2001:db8:5f::20"

FRAMES = {
    "ipv4": S.udp4(S.GUEST_MAC, IP, PEER_IP, "ipv4"),
    "ipv4-second": S.udp4(S.GUEST_MAC, IP_B, PEER_IP, "ipv4-second"),
    "ipv4-dhcp-discover": S.udp4(S.GUEST_MAC, "0.0.0.0", "255.255.255.255", "ipv4-dhcp-discover"),
    "ipv4-other-source": S.udp4(S.GUEST_MAC, OTHER_IP, PEER_IP, "ipv4-other-source"),
    "ipv4-other-mac": S.udp4(S.OTHER_MAC, IP, PEER_IP, "ipv4-other-mac"),
    "arp": S.arp(S.GUEST_MAC, S.GUEST_MAC, IP, PEER_IP, "arp"),
    "arp-second": S.arp(S.GUEST_MAC, S.GUEST_MAC, IP_B, PEER_IP, "arp-second"),
    "arp-other-ip": S.arp(S.GUEST_MAC, S.GUEST_MAC, OTHER_IP, PEER_IP, "arp-other-ip"),
    "arp-other-mac": S.arp(S.GUEST_MAC, S.OTHER_MAC, IP, PEER_IP, "arp-other-mac"),
    "arp-from-other-mac": S.arp(S.OTHER_MAC, S.OTHER_MAC, IP, PEER_IP, "arp-from-other-mac"),
    "ipv6": S.udp6(S.GUEST_MAC, IP6, PEER_IP6, "ipv6"),
    "ipv6-link-local": S.udp6(S.GUEST_MAC, "fe80::5054:ff:fe5f:a", "fe80::1", "ipv6-link-local"),
    "ipv6-other-source": S.udp6(S.GUEST_MAC, OTHER_IP6, PEER_IP6, "ipv6-other-source"),
    "ipv6-other-mac": S.udp6(S.OTHER_MAC, IP6, PEER_IP6, "ipv6-other-mac"),
}
V4_ALLOWED = {"ipv4", "ipv4-second", "ipv4-dhcp-discover", "arp", "arp-second"}
V4 = [Address(IP, 24), Address(IP_B, 24)]  # two addresses: one MAC and a list of two in the same rules


@pytest.fixture
def wire(kvm_host):
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("network namespaces and veth pairs need root and iproute2")
    w = S.Wire(PREFIX[:9]).up()
    yield w
    w.down()


@pytest.fixture
def filters(kvm_host):
    """A driver whose host-wide filters are defined on the test libvirtd."""
    from hostbay.plugins.kvm import KvmDriver

    drv = KvmDriver(kvm_host.settings())
    drv._ensure_filters(fresh=True)
    return drv


def _ref(addresses, filter_name: str | None = None) -> str:
    from hostbay.plugins.kvm import xml as X

    ref = X.filterref(addresses)  # what the driver writes into the domain's interface
    if filter_name:
        ref.set("filter", filter_name)
    return X.ET.tostring(ref, encoding="unicode")


def _delivered_with(conn, wire, ref_xml: str) -> set[str]:
    binding, _seconds = S.bind(conn, wire.port, S.GUEST_MAC, ref_xml)
    try:
        assert any(b.portDev() == wire.port for b in conn.listAllNWFilterBindings(0))
        return wire.delivered(FRAMES)
    finally:
        binding.delete()


def test_the_wire_delivers_everything_without_a_filter(wire):
    assert wire.delivered(FRAMES) == set(FRAMES)  # so a frame missing below was dropped by the filter


def test_ipv4_server_can_only_send_from_its_address_and_mac(filters, wire):
    assert _delivered_with(filters.conn, wire, _ref(V4)) == V4_ALLOWED


def test_dualstack_server_can_only_send_from_its_addresses_and_mac(filters, wire):
    got = _delivered_with(filters.conn, wire, _ref([*V4, Address(IP6, 64), Address("2001:db8:5f::11", 64)]))
    assert got == V4_ALLOWED | {"ipv6", "ipv6-link-local"}


def test_hostbay_filter_drops_what_clean_traffic_drops(filters, wire):
    """The same frames through libvirt's clean-traffic (what servers had before) and through hostbay's filter."""
    addresses = V4
    assert _delivered_with(filters.conn, wire, _ref(addresses, "clean-traffic")) == \
        _delivered_with(filters.conn, wire, _ref(addresses))


def test_filters_are_defined_once_per_process_and_upgraded_in_place(filters, monkeypatch):
    import libvirt

    from hostbay.plugins.kvm import xml as X

    conn = filters.conn
    uuids = {name: conn.nwfilterLookupByName(name).UUIDString() for name in (X.V4_FILTER, X.DUALSTACK_FILTER)}
    calls = []
    monkeypatch.setattr(type(filters), "_define_filter", lambda self, xml, retry: calls.append(xml))
    filters._ensure_filters()
    assert calls == []  # already defined by this process: no call to libvirt at all
    filters._ensure_filters(fresh=True)
    assert [X.parse(x).get("name") for x in calls] == [X.V4_FILTER, X.DUALSTACK_FILTER]
    monkeypatch.undo()

    # redefining keeps the filter's UUID and replaces its rules (a filter of this test's own, since the host-wide
    # ones serve every running server on this libvirtd)
    name = f"{PREFIX}upgrade"
    old = f"<filter name='{name}' chain='root'><rule action='drop' direction='out' priority='100'><mac/></rule></filter>"
    new = old.replace("action='drop'", "action='accept'")
    try:
        filters._define_filter(old, retry=True)
        first = conn.nwfilterLookupByName(name).UUIDString()
        filters._define_filter(new, retry=True)
        flt = conn.nwfilterLookupByName(name)
        assert flt.UUIDString() == first
        assert X.parse(flt.XMLDesc(0)).find("rule").get("action") == "accept"
    finally:
        try:
            conn.nwfilterLookupByName(name).undefine()
        except libvirt.libvirtError:
            pass
    for name, uuid in uuids.items():
        assert conn.nwfilterLookupByName(name).UUIDString() == uuid


def test_a_filter_removed_from_the_host_is_defined_again_at_start(kvm_host, monkeypatch):
    """The filters are defined once per worker; one removed from the host later is defined again when a start
    needs it (filters of this test's own names: the host-wide ones serve every server on this libvirtd)."""
    import libvirt

    from hostbay.plugins.kvm import KvmDriver
    from hostbay.plugins.kvm import xml as X
    from test_kvm_libvirt import _noop, _spec

    monkeypatch.setattr(X, "V4_FILTER", f"{PREFIX}flt4")
    monkeypatch.setattr(X, "DUALSTACK_FILTER", f"{PREFIX}flt46")
    monkeypatch.setattr(X, "HOST_FILTERS_DIGEST", f"{PREFIX}test")
    drv = KvmDriver(kvm_host.settings(antispoof="nwfilter"))
    spec = _spec(addresses=(Address("192.0.2.70", 24, "192.0.2.1"),))
    try:
        drv._ensure_filters(fresh=True)
        for name in (X.DUALSTACK_FILTER, X.V4_FILTER):
            drv.conn.nwfilterLookupByName(name).undefine()
        ref = drv.create(spec, _noop)
        dom = drv.conn.lookupByName(ref["domain"])
        assert dom.isActive()
        port = X.parse(dom.XMLDesc(0)).find("./devices/interface/target").get("dev")
        binding = next(b for b in drv.conn.listAllNWFilterBindings(0) if b.portDev() == port)
        assert binding.filterName() == X.V4_FILTER
    finally:
        drv.delete({"domain": drv.domain_name(spec.uuid)})
        for name in (X.DUALSTACK_FILTER, X.V4_FILTER):
            try:
                drv.conn.nwfilterLookupByName(name).undefine()
            except libvirt.libvirtError:
                pass
