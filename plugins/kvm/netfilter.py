"""KvmNetworkFilter: pins a KVM server's traffic to its allocated addresses.

A server on hostbay's nftables port (``nft.py``, the node's ``antispoof``) gets the addresses in its definition's
metadata and, when running, in its port's chains (one ``nft`` run). Otherwise the domain's interface carries
``<filterref>`` naming one of hostbay's host-wide filters (``xml.host_filters``, defined once per host by the
driver) with one ``IP`` parameter per IPv4 address (``IPV6`` per IPv6 address, with the dual-stack filter) and
``CTRL_IP_LEARNING=none``. Applying a new set updates the interface on the running domain and in its definition;
libvirt re-instantiates the nwfilter binding of the port. A server created with libvirt's ``clean-traffic`` moves
to hostbay's filter at its next change.
"""

from __future__ import annotations

from typing import Any

from hostbay.core.drivers import Address, NetworkFilter, VirtDriver
from hostbay.core.errors import FatalDriverError

from . import xml as X
from .connection import libvirt, translated


class KvmNetworkFilter(NetworkFilter):
    name = "kvm"
    label = "KVM anti-spoofing (nftables or libvirt nwfilter)"
    drivers = frozenset({"kvm"})

    def apply(self, virt: VirtDriver, ref: dict[str, Any], addresses: list[Address]) -> None:
        from .driver import KvmDriver

        if not isinstance(virt, KvmDriver):
            raise FatalDriverError(f"the libvirt network filter cannot act on a {virt.name} server")
        lv = libvirt()
        dom = virt._domain(ref)
        with translated("reading the domain"):
            config = X.parse(dom.XMLDesc(lv.VIR_DOMAIN_XML_INACTIVE | lv.VIR_DOMAIN_XML_SECURE))
        if X.nft_port(config):
            return self._apply_nft(virt, dom, addresses)
        virt._ensure_filters()
        wanted = X.filterref(addresses)
        targets = [(0, lv.VIR_DOMAIN_AFFECT_LIVE)] if dom.isActive() else []
        targets.append((lv.VIR_DOMAIN_XML_INACTIVE, lv.VIR_DOMAIN_AFFECT_CONFIG))
        for xml_flags, affect in targets:
            with translated("reading the domain"):
                iface = X.parse(dom.XMLDesc(xml_flags)).find("./devices/interface")
            if iface is None:
                raise FatalDriverError(f"{dom.name()} has no network interface")
            current = iface.find("filterref")
            if current is not None and _same(current, wanted):
                continue
            if current is not None:
                iface.remove(current)
            iface.append(wanted)
            with translated("updating the network filter"):
                dom.updateDeviceFlags(X.ET.tostring(iface, encoding="unicode"), affect)

    @staticmethod
    def _apply_nft(virt, dom, addresses: list[Address]) -> None:
        """The definition first (what each start applies), then the running port's rules; nothing is written when
        the definition already holds these addresses and the port's chain says so too (provisioning applies the
        filter right after the start wrote it)."""
        from .nft import host_lock

        lv = libvirt()
        with host_lock():
            with translated("reading the domain"):
                config = X.parse(dom.XMLDesc(lv.VIR_DOMAIN_XML_INACTIVE | lv.VIR_DOMAIN_XML_SECURE))
            port = X.nft_port(config)
            wanted = {a.address for a in addresses}
            if {(a.address, a.prefix) for a in X.addresses(config)} != {(a.address, a.prefix) for a in addresses}:
                X.set_addresses(config, addresses)
                with translated("updating the domain definition"):
                    virt.conn.defineXML(X.to_string(config))
            elif not dom.isActive() or virt.nft.port_addresses(port) == wanted:
                return
            if dom.isActive():
                virt.nft.apply(port, config.find("./devices/interface/mac").get("address"), addresses)


def _params(ref) -> tuple[str, set[tuple[str, str]]]:
    return ref.get("filter"), {(p.get("name"), p.get("value")) for p in ref.iterfind("parameter")}


def _same(a, b) -> bool:
    return _params(a) == _params(b)


def binding_addresses(conn, port_dev: str) -> set[str] | None:
    """The addresses in the nwfilter binding of ``port_dev`` (None when the port has no binding)."""
    with translated("listing nwfilter bindings"):
        for binding in conn.listAllNWFilterBindings(0):
            if binding.portDev() == port_dev:
                root = X.parse(binding.XMLDesc(0))
                return {p.get("value") for p in root.iterfind("./filterref/parameter")
                        if p.get("name") in ("IP", "IPV6") and p.get("value") != X.NO_IPV4}
    return None
