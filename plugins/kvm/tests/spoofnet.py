"""A two-namespace wire for anti-spoofing tests: a "guest" namespace and a "peer" namespace, each joined by a veth
pair to a bridge in the host namespace that has no address and no other port. libvirt's nwfilter is bound to the
guest's host-side veth (``nwfilterBindingCreateXML``, the same binding libvirt makes for a domain's tap), the guest
side writes hand-made Ethernet frames (AF_PACKET) and the peer side records which of them arrive. Nothing leaves
the namespaces and the bridge this creates."""

from __future__ import annotations

import ipaddress
import json
import socket
import struct
import subprocess
import sys
import time
import uuid as uuidlib
from dataclasses import dataclass

GUEST_MAC = "52:54:00:5f:00:0a"
PEER_MAC = "52:54:00:5f:00:0b"
OTHER_MAC = "52:54:00:5f:00:66"
BROADCAST = "ff:ff:ff:ff:ff:ff"


def _sh(*cmd, check=True):
    return subprocess.run(list(cmd), check=check, capture_output=True, text=True)


def _mac(text: str) -> bytes:
    return bytes(int(b, 16) for b in text.split(":"))


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _tag(marker: str) -> bytes:
    """A marker as frames carry it: bracketed, so that "ipv4" is not found inside "ipv4-second"."""
    return f"[{marker}]".encode()


def udp4(src_mac: str, src_ip: str, dst_ip: str, marker: str, dst_mac: str = PEER_MAC) -> bytes:
    payload = _tag(marker)
    udp = struct.pack("!HHHH", 40000, 9, 8 + len(payload), 0) + payload
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                      socket.inet_aton(src_ip), socket.inet_aton(dst_ip))
    hdr = hdr[:10] + struct.pack("!H", _checksum(hdr)) + hdr[12:]
    return _mac(dst_mac) + _mac(src_mac) + b"\x08\x00" + hdr + udp


def udp6(src_mac: str, src_ip: str, dst_ip: str, marker: str, dst_mac: str = PEER_MAC) -> bytes:
    payload = _tag(marker)
    udp = struct.pack("!HHHH", 40000, 9, 8 + len(payload), 0) + payload
    hdr = struct.pack("!IHBB16s16s", 6 << 28, len(udp), 17, 64, ipaddress.IPv6Address(src_ip).packed,
                      ipaddress.IPv6Address(dst_ip).packed)
    return _mac(dst_mac) + _mac(src_mac) + b"\x86\xdd" + hdr + udp


def arp(src_mac: str, sender_mac: str, sender_ip: str, target_ip: str, marker: str) -> bytes:
    """An ARP request; the marker travels in the frame's padding (after the 28 bytes of ARP)."""
    body = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, _mac(sender_mac), socket.inet_aton(sender_ip),
                       b"\0" * 6, socket.inet_aton(target_ip))
    return _mac(BROADCAST) + _mac(src_mac) + b"\x08\x06" + body + _tag(marker)


_RECEIVER = r"""
import json, socket, sys, time
markers = json.loads(sys.argv[1]); seconds = float(sys.argv[2])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind((sys.argv[3], 0)); s.settimeout(0.1)
print("ready", flush=True)
seen, end = set(), time.monotonic() + seconds
while time.monotonic() < end and len(seen) < len(markers):
    try:
        frame = s.recv(65535)
    except socket.timeout:
        continue
    seen.update(m for m in markers if f"[{m}]".encode() in frame)
print(json.dumps(sorted(seen)), flush=True)
"""

_SENDER = r"""
import socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[1], 0))
frames = [bytes.fromhex(h) for h in sys.argv[2:]]
for _ in range(3):
    for f in frames:
        s.send(f)
    time.sleep(0.05)
"""


@dataclass
class Wire:
    """Names of what a ``Wire`` created; every name starts with ``prefix``."""

    prefix: str

    @property
    def guest_ns(self) -> str:
        return f"{self.prefix}g"

    @property
    def peer_ns(self) -> str:
        return f"{self.prefix}p"

    @property
    def port(self) -> str:  # the guest's host-side veth: the port the filter binds to
        return f"{self.prefix}gh"

    @property
    def peer_port(self) -> str:
        return f"{self.prefix}ph"

    @property
    def bridge(self) -> str:
        return f"{self.prefix}br"

    def up(self) -> Wire:
        self.down()
        _sh("ip", "netns", "add", self.guest_ns)
        _sh("ip", "netns", "add", self.peer_ns)
        _sh("ip", "link", "add", self.bridge, "type", "bridge")
        for host_dev, ns, mac in ((self.port, self.guest_ns, GUEST_MAC), (self.peer_port, self.peer_ns, PEER_MAC)):
            _sh("ip", "link", "add", host_dev, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _sh("ip", "-n", ns, "link", "set", "eth0", "address", mac)
            _sh("ip", "-n", ns, "link", "set", "eth0", "up")
            _sh("ip", "link", "set", host_dev, "master", self.bridge)
            _sh("ip", "link", "set", host_dev, "up")
        # nothing of the host answers on the bridge: no address, no IPv6 autoconfiguration
        for dev in (self.bridge, self.port, self.peer_port):
            _sh("sysctl", "-q", "-w", f"net.ipv6.conf.{dev}.disable_ipv6=1", check=False)
        _sh("ip", "link", "set", self.bridge, "up")
        return self

    def down(self) -> None:
        for dev in (self.port, self.peer_port, self.bridge):
            _sh("ip", "link", "del", dev, check=False)
        for ns in (self.guest_ns, self.peer_ns):
            _sh("ip", "netns", "del", ns, check=False)

    def delivered(self, frames: dict[str, bytes], seconds: float = 3.0, to_guest: bool = False) -> set[str]:
        """Send each frame (keyed by the marker it carries) from the guest; the markers the peer received (with
        ``to_guest``, from the peer to the guest)."""
        sender, receiver = (self.peer_ns, self.guest_ns) if to_guest else (self.guest_ns, self.peer_ns)
        recv = subprocess.Popen(["ip", "netns", "exec", receiver, sys.executable, "-c", _RECEIVER,
                                 json.dumps(sorted(frames)), str(seconds), "eth0"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert recv.stdout.readline().strip() == "ready", recv.stderr.read()
            _sh("ip", "netns", "exec", sender, sys.executable, "-c", _SENDER, "eth0",
                *(f.hex() for f in frames.values()))
            out, err = recv.communicate(timeout=seconds + 30)
        finally:
            if recv.poll() is None:
                recv.kill()
                recv.wait()
        assert recv.returncode == 0, err
        return set(json.loads(out.strip().splitlines()[-1]))


def bind(conn, port: str, mac: str, filterref_xml: str):
    """An nwfilter binding of ``filterref_xml`` (a ``<filterref>`` as the driver writes it) on ``port``."""
    xml = (f"<filterbinding><owner><name>{port}</name><uuid>{uuidlib.uuid4()}</uuid></owner>"
           f"<portdev name='{port}'/><mac address='{mac}'/>{filterref_xml}</filterbinding>")
    t0 = time.perf_counter()
    binding = conn.nwfilterBindingCreateXML(xml, 0)
    return binding, time.perf_counter() - t0


ROUTER_MAC = "52:54:00:5f:00:01"   # the host side of the guest's routed port
ROUTED_PEER_IP, ROUTED_PEER_IP6 = "198.51.100.20", "2001:db8:77::20"


@dataclass
class HostWire(Wire):
    """A wire whose "host" is a network namespace of its own (``prefix`` + ``h``), for hostbay's nftables filter:
    the rules go into that namespace (``nft`` runs there), never into the machine's own ruleset. The guest's
    host-side port is named like a port hostbay starts (``port_name``). ``routed`` joins guest and peer through
    the host's IP forwarding instead of a bridge (the KVM driver's ``network: ethernet``): the host namespace
    has 192.0.2.1/24 and 2001:db8:5f::1/64 on the guest's port and forwards to the peer's 198.51.100.0/24 and
    2001:db8:77::/64, with reverse-path filtering off so that only the filter stops a foreign source."""

    port_name: str = "hbp-00000000000"
    routed: bool = False

    @property
    def host_ns(self) -> str:
        return f"{self.prefix}h"

    @property
    def port(self) -> str:
        return self.port_name

    @property
    def nft(self) -> list[str]:
        return ["ip", "netns", "exec", self.host_ns, "nft"]

    def _h(self, *cmd, check=True):
        return _sh("ip", "netns", "exec", self.host_ns, *cmd, check=check)

    def up(self) -> HostWire:
        self.down()
        for ns in (self.host_ns, self.guest_ns, self.peer_ns):
            _sh("ip", "netns", "add", ns)
        if not self.routed:
            self._h("ip", "link", "add", self.bridge, "type", "bridge")
        for host_dev, ns, mac in ((self.port, self.guest_ns, GUEST_MAC), (self.peer_port, self.peer_ns, PEER_MAC)):
            self._h("ip", "link", "add", host_dev, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _sh("ip", "-n", ns, "link", "set", "eth0", "address", mac)
            _sh("ip", "-n", ns, "link", "set", "eth0", "up")
            if not self.routed:
                self._h("ip", "link", "set", host_dev, "master", self.bridge)
        for dev in ([self.bridge] if not self.routed else []) + [self.port, self.peer_port]:
            self._h("sysctl", "-q", "-w", f"net.ipv6.conf.{dev}.disable_ipv6={0 if self.routed else 1}")
            self._h("ip", "link", "set", dev, "up")
        if self.routed:
            self._h("ip", "link", "set", self.port, "address", ROUTER_MAC)
            for key in ("net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1", "net.ipv4.conf.all.rp_filter=0",
                        f"net.ipv4.conf.{self.port}.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"):
                self._h("sysctl", "-q", "-w", key)
            self._h("ip", "addr", "add", "192.0.2.1/24", "dev", self.port)
            self._h("ip", "addr", "add", "2001:db8:5f::1/64", "dev", self.port, "nodad")
            self._h("ip", "addr", "add", "198.51.100.1/24", "dev", self.peer_port)
            self._h("ip", "addr", "add", "2001:db8:77::1/64", "dev", self.peer_port, "nodad")
            self._h("ip", "neigh", "replace", ROUTED_PEER_IP, "lladdr", PEER_MAC, "dev", self.peer_port,
                    "nud", "permanent")
            self._h("ip", "-6", "neigh", "replace", ROUTED_PEER_IP6, "lladdr", PEER_MAC, "dev", self.peer_port,
                    "nud", "permanent")
        return self

    def down(self) -> None:
        for ns in (self.host_ns, self.guest_ns, self.peer_ns):
            _sh("ip", "netns", "del", ns, check=False)

    def neighbours(self) -> dict[str, str]:
        """The host's IPv4 neighbour entries on the guest's port (address -> MAC): what ARP taught it."""
        out = self._h("ip", "-4", "-j", "neigh", "show", "dev", self.port).stdout
        return {n["dst"]: n.get("lladdr", "") for n in json.loads(out or "[]") if n.get("lladdr")}
