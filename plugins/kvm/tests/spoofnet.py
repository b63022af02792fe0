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


def udp4(src_mac: str, src_ip: str, dst_ip: str, marker: str, dst_mac: str = PEER_MAC) -> bytes:
    payload = marker.encode()
    udp = struct.pack("!HHHH", 40000, 9, 8 + len(payload), 0) + payload
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                      socket.inet_aton(src_ip), socket.inet_aton(dst_ip))
    hdr = hdr[:10] + struct.pack("!H", _checksum(hdr)) + hdr[12:]
    return _mac(dst_mac) + _mac(src_mac) + b"\x08\x00" + hdr + udp


def udp6(src_mac: str, src_ip: str, dst_ip: str, marker: str, dst_mac: str = PEER_MAC) -> bytes:
    payload = marker.encode()
    udp = struct.pack("!HHHH", 40000, 9, 8 + len(payload), 0) + payload
    hdr = struct.pack("!IHBB16s16s", 6 << 28, len(udp), 17, 64, ipaddress.IPv6Address(src_ip).packed,
                      ipaddress.IPv6Address(dst_ip).packed)
    return _mac(dst_mac) + _mac(src_mac) + b"\x86\xdd" + hdr + udp


def arp(src_mac: str, sender_mac: str, sender_ip: str, target_ip: str, marker: str) -> bytes:
    """An ARP request; the marker travels in the frame's padding (after the 28 bytes of ARP)."""
    body = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, _mac(sender_mac), socket.inet_aton(sender_ip),
                       b"\0" * 6, socket.inet_aton(target_ip))
    return _mac(BROADCAST) + _mac(src_mac) + b"\x08\x06" + body + marker.encode()


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
    seen.update(m for m in markers if m.encode() in frame)
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

    def delivered(self, frames: dict[str, bytes], seconds: float = 3.0) -> set[str]:
        """Send each frame (keyed by the marker it carries) from the guest; the markers the peer received."""
        recv = subprocess.Popen(["ip", "netns", "exec", self.peer_ns, sys.executable, "-c", _RECEIVER,
                                 json.dumps(sorted(frames)), str(seconds), "eth0"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert recv.stdout.readline().strip() == "ready", recv.stderr.read()
            _sh("ip", "netns", "exec", self.guest_ns, sys.executable, "-c", _SENDER, "eth0",
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
