"""Domain, volume, interface and nwfilter XML for the KVM driver (pure functions over ElementTree)."""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from hostbay.core.drivers import Address

NS = "https://hostbay.org/xmlns/kvm/1"
ISO_TARGET = "hdd"       # the customer's ISO drive (boot order 1, empty by default)
SEED_TARGET = "hdc"      # the cloud-init seed (never booted)
DISK_TARGET = "vda"
V4_FILTER = "hostbay-clean-traffic"            # host-wide anti-spoofing filters (host_filters), only parameters
DUALSTACK_FILTER = "hostbay-clean-traffic-dualstack"  # per domain; the second one adds IPv6
NO_IPV4 = "0.0.0.0"      # placeholder IP parameter for IPv6-only guests (allows nothing but unconfigured probes)


def mac_for(uuid: str) -> str:
    """A stable locally administered MAC in QEMU's 52:54:00 range, derived from the service UUID."""
    digest = hashlib.sha256(uuid.encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])


def kib_per_s(mbit: int) -> int:
    """Port speed in Mbit/s to libvirt's bandwidth unit (KiB/s)."""
    return max(1, mbit * 1_000_000 // 8 // 1024)


@dataclass(frozen=True)
class Network:
    mode: str = "ethernet"   # ethernet, bridge, network
    source: str | None = None  # bridge or libvirt network name


def filter_name(addresses: list[Address] | tuple[Address, ...]) -> str:
    return DUALSTACK_FILTER if any(a.version == 6 for a in addresses) else V4_FILTER


def filterref(addresses) -> ET.Element:
    ref = ET.Element("filterref", filter=filter_name(addresses))
    v4 = [a.address for a in addresses if a.version == 4]
    v6 = [a.address for a in addresses if a.version == 6]
    for ip in v4 or [NO_IPV4]:
        ET.SubElement(ref, "parameter", name="IP", value=ip)
    for ip in v6:
        ET.SubElement(ref, "parameter", name="IPV6", value=ip)
    ET.SubElement(ref, "parameter", name="CTRL_IP_LEARNING", value="none")
    return ref


def bandwidth(port_speed_mbit: int) -> ET.Element:
    bw = ET.Element("bandwidth")
    rate = str(kib_per_s(port_speed_mbit))
    ET.SubElement(bw, "inbound", average=rate)
    ET.SubElement(bw, "outbound", average=rate)
    return bw


def set_bandwidth(root: ET.Element, port_speed_mbit: int | None) -> None:
    """Replace the first interface's <bandwidth> (none when ``port_speed_mbit`` is None or 0)."""
    iface = root.find("./devices/interface")
    if iface is None:
        return
    for old in iface.findall("bandwidth"):
        iface.remove(old)
    if port_speed_mbit:
        iface.insert(2, bandwidth(port_speed_mbit))


def interface(mac: str, net: Network, addresses, port_speed_mbit: int | None, shaping: bool = True,
              port: str | None = None) -> ET.Element:
    """The NIC. With ``port`` (hostbay's nftables filter, nft.py) the tap gets that name and no ``<filterref>``;
    without it libvirt names the tap and binds hostbay's nwfilter with the addresses as parameters."""
    iface = ET.Element("interface", type=net.mode)
    ET.SubElement(iface, "mac", address=mac)
    if net.mode == "bridge":
        ET.SubElement(iface, "source", bridge=net.source or "")
    elif net.mode == "network":
        ET.SubElement(iface, "source", network=net.source or "")
    if port:
        ET.SubElement(iface, "target", dev=port)
    ET.SubElement(iface, "model", type="virtio")
    if port_speed_mbit and shaping:
        iface.append(bandwidth(port_speed_mbit))
    if not port:
        iface.append(filterref(addresses))
    return iface


def set_antispoof(iface: ET.Element, addresses, port: str | None) -> None:
    """Point an existing interface at one filter: hostbay's nftables port ``port``, or (None) the nwfilter with
    ``addresses``; a libvirt-chosen tap name is dropped (the host picks a new one)."""
    for tag in ("target", "filterref"):
        for old in iface.findall(tag):
            iface.remove(old)
    if port:
        ET.SubElement(iface, "target", dev=port)
    else:
        iface.append(filterref(addresses))


def nft_port(root: ET.Element) -> str | None:
    """The tap name of a domain whose port is filtered by hostbay's nftables rules (None for an nwfilter one)."""
    iface = root.find("./devices/interface")
    if iface is None or iface.find("filterref") is not None:
        return None
    target = iface.find("target")
    dev = target.get("dev") if target is not None else None
    from .nft import is_port

    return dev if is_port(dev) else None


def set_addresses(root: ET.Element, addresses) -> None:
    """The server's addresses in hostbay's metadata (what the nftables port is filtered to at each start)."""
    server = root.find(f"./metadata/{{{NS}}}server")
    if server is None:
        meta = root.find("metadata")
        if meta is None:
            meta = ET.SubElement(root, "metadata")
        server = ET.SubElement(meta, f"{{{NS}}}server")
    for old in server.findall(f"{{{NS}}}address"):
        server.remove(old)
    for a in addresses:
        ET.SubElement(server, f"{{{NS}}}address", value=a.address, prefix=str(a.prefix))


def addresses(root: ET.Element) -> list[Address]:
    server = root.find(f"./metadata/{{{NS}}}server")
    if server is None:
        return []
    return [Address(el.get("value"), int(el.get("prefix", "0"))) for el in server.findall(f"{{{NS}}}address")]


def cdrom(target: str, path: str | None, boot_order: int | None = None) -> ET.Element:
    disk = ET.Element("disk", type="file", device="cdrom")
    ET.SubElement(disk, "driver", name="qemu", type="raw")
    if path:
        ET.SubElement(disk, "source", file=path)
    ET.SubElement(disk, "target", dev=target, bus="ide")
    ET.SubElement(disk, "readonly")
    if boot_order:
        ET.SubElement(disk, "boot", order=str(boot_order))
    return disk


def domain(*, name: str, service_uuid: str, virt_type: str, vcpus: int, memory_mib: int, disk_path: str,
           seed_path: str | None, mac: str, net: Network, addresses, port_speed_mbit: int | None,
           shaping: bool = True, cpu_mode: str = "default", port: str | None = None) -> str:
    dom = ET.Element("domain", type=virt_type)
    ET.SubElement(dom, "name").text = name
    meta = ET.SubElement(dom, "metadata")
    server = ET.SubElement(meta, f"{{{NS}}}server", service=service_uuid)
    if port_speed_mbit:
        server.set("port-speed-mbit", str(port_speed_mbit))
    set_addresses(dom, addresses)
    ET.SubElement(dom, "memory", unit="MiB").text = str(memory_mib)
    ET.SubElement(dom, "currentMemory", unit="MiB").text = str(memory_mib)
    ET.SubElement(dom, "vcpu", placement="static").text = str(vcpus)
    os_ = ET.SubElement(dom, "os")
    ET.SubElement(os_, "type", arch="x86_64", machine="pc").text = "hvm"
    feats = ET.SubElement(dom, "features")
    ET.SubElement(feats, "acpi")
    ET.SubElement(feats, "apic")
    if virt_type == "kvm" and cpu_mode in ("host-model", "host-passthrough"):
        ET.SubElement(dom, "cpu", mode=cpu_mode, check="none")
    ET.SubElement(dom, "clock", offset="utc")
    ET.SubElement(dom, "on_poweroff").text = "destroy"
    ET.SubElement(dom, "on_reboot").text = "restart"
    ET.SubElement(dom, "on_crash").text = "restart"
    devs = ET.SubElement(dom, "devices")
    disk = ET.SubElement(devs, "disk", type="file", device="disk")
    ET.SubElement(disk, "driver", name="qemu", type="qcow2", discard="unmap")
    ET.SubElement(disk, "source", file=disk_path)
    ET.SubElement(disk, "target", dev=DISK_TARGET, bus="virtio")
    ET.SubElement(disk, "boot", order="2")
    devs.append(cdrom(ISO_TARGET, None, boot_order=1))
    devs.append(cdrom(SEED_TARGET, seed_path))
    devs.append(interface(mac, net, addresses, port_speed_mbit, shaping, port))
    gfx = ET.SubElement(devs, "graphics", type="vnc", autoport="yes", listen="127.0.0.1", websocket="-1")
    ET.SubElement(gfx, "listen", type="address", address="127.0.0.1")
    video = ET.SubElement(devs, "video")
    ET.SubElement(video, "model", type="vga")
    ET.SubElement(devs, "serial", type="pty")
    ET.SubElement(devs, "memballoon", model="virtio")
    ET.register_namespace("hostbay", NS)
    return ET.tostring(dom, encoding="unicode")


def volume(name: str, capacity_bytes: int, fmt: str, backing: tuple[str, str] | None = None) -> str:
    vol = ET.Element("volume")
    ET.SubElement(vol, "name").text = name
    ET.SubElement(vol, "capacity", unit="bytes").text = str(capacity_bytes)
    target = ET.SubElement(vol, "target")
    ET.SubElement(target, "format", type=fmt)
    ET.SubElement(target, "permissions").append(_text("mode", "0600"))
    if backing:
        bs = ET.SubElement(vol, "backingStore")
        ET.SubElement(bs, "path").text = backing[0]
        ET.SubElement(bs, "format", type=backing[1])
    return ET.tostring(vol, encoding="unicode")


def _text(tag: str, text: str) -> ET.Element:
    el = ET.Element(tag)
    el.text = text
    return el


def dir_pool(name: str, path: str) -> str:
    pool = ET.Element("pool", type="dir")
    ET.SubElement(pool, "name").text = name
    ET.SubElement(ET.SubElement(pool, "target"), "path").text = path
    return ET.tostring(pool, encoding="unicode")


def host_filters() -> list[str]:
    """hostbay's anti-spoofing filters, defined once per host (in this order: the dual-stack one includes the
    IPv4 one). They give the guarantees of libvirt's ``clean-traffic`` (frames only from the NIC's MAC, IPv4 only
    from the ``IP`` parameters or 0.0.0.0 for DHCP, ARP only with that MAC and those addresses, QEMU's RARP
    announcement after a migration, IPv4/ARP in, every other frame dropped both ways) with every rule in the
    interface's root chain. ``clean-traffic`` puts its rules into six sub-chains, and libvirt creates, fills,
    renames and removes each with one ebtables process per step: 100 ebtables runs to start a server against 33
    here (docs/benchmarks.md).

    The dual-stack filter adds IPv6 from the ``IPV6`` parameters, link-local addresses and duplicate address
    detection (ICMPv6 from ::), and IPv6 in."""
    # one iterator for the MAC and another for the address lists, so a rule is written once per address (with
    # one shared iterator libvirt would refuse lists of different lengths: one MAC, two addresses)
    mac_only = "srcmacaddr='$MAC[@1]'"
    rarp = ("dstmacaddr='ff:ff:ff:ff:ff:ff' opcode='Request_Reverse' arpsrcmacaddr='$MAC[@1]' arpdstmacaddr='$MAC[@1]' "
            "arpsrcipaddr='0.0.0.0' arpdstipaddr='0.0.0.0'")
    v4 = f"""<filter name='{V4_FILTER}' chain='root'>
  <rule action='accept' direction='out' priority='-700'><ip {mac_only} srcipaddr='$IP[@2]'/></rule>
  <rule action='accept' direction='out' priority='-690'><ip {mac_only} srcipaddr='0.0.0.0' protocol='udp'/></rule>
  <rule action='accept' direction='out' priority='-500'><arp {mac_only} arpsrcmacaddr='$MAC[@1]' arpsrcipaddr='$IP[@2]'/></rule>
  <rule action='accept' direction='out' priority='-400'><rarp {mac_only} {rarp}/></rule>
  <rule action='accept' direction='in' priority='-700'><mac protocolid='ipv4'/></rule>
  <rule action='accept' direction='in' priority='-500'><mac protocolid='arp'/></rule>
  <rule action='accept' direction='in' priority='-400'><rarp {rarp}/></rule>
  <rule action='drop' direction='inout' priority='1000'><mac/></rule>
</filter>"""
    dual = f"""<filter name='{DUALSTACK_FILTER}' chain='root'>
  <filterref filter='{V4_FILTER}'/>
  <rule action='accept' direction='out' priority='-600'><ipv6 {mac_only} srcipaddr='fe80::' srcipmask='10'/></rule>
  <rule action='accept' direction='out' priority='-600'><ipv6 {mac_only} srcipaddr='::' srcipmask='128' protocol='icmpv6'/></rule>
  <rule action='accept' direction='out' priority='-600'><ipv6 {mac_only} srcipaddr='$IPV6[@2]'/></rule>
  <rule action='accept' direction='in' priority='-600'><mac protocolid='ipv6'/></rule>
</filter>"""
    return [v4, dual]


HOST_FILTERS_DIGEST = hashlib.sha256("".join(host_filters()).encode()).hexdigest()[:16]


# reading back ---------------------------------------------------------------------------------------------------

def parse(xml: str) -> ET.Element:
    return ET.fromstring(xml)


def find_disk(root: ET.Element, target: str) -> ET.Element | None:
    for disk in root.iterfind("./devices/disk"):
        t = disk.find("target")
        if t is not None and t.get("dev") == target:
            return disk
    return None


def disk_source(root: ET.Element, target: str) -> str | None:
    disk = find_disk(root, target)
    src = disk.find("source") if disk is not None else None
    return src.get("file") if src is not None else None


def service_uuid(root: ET.Element) -> str | None:
    el = root.find(f"./metadata/{{{NS}}}server")
    return el.get("service") if el is not None else None


def vnc_ports(root: ET.Element) -> tuple[int, int | None]:
    gfx = root.find("./devices/graphics[@type='vnc']")
    if gfx is None:
        return -1, None
    ws = gfx.get("websocket")
    return int(gfx.get("port", "-1")), (int(ws) if ws and int(ws) > 0 else None)


def set_shape(root: ET.Element, vcpus: int, memory_mib: int) -> None:
    for tag in ("memory", "currentMemory"):
        el = root.find(tag)
        if el is None:
            el = ET.SubElement(root, tag)
        el.set("unit", "MiB")
        el.text = str(memory_mib)
    # a maximum memory (hotplug) element would conflict with a larger memory; this driver never sets one
    vcpu = root.find("vcpu")
    vcpu.text = str(vcpus)
    vcpu.attrib.pop("current", None)


def to_string(root: ET.Element) -> str:
    ET.register_namespace("hostbay", NS)
    return ET.tostring(root, encoding="unicode")
