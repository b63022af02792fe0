"""hostbay's own anti-spoofing filter for KVM ports, in nftables (the node setting ``antispoof``: ``nftables``).

One host-wide table ``hostbay_antispoof`` in each of three families, defined once and upgraded in place:

- ``bridge``: frames a bridged port sends (hook prerouting) and receives (hook postrouting);
- ``inet``: packets a routed tap (``network: ethernet``) sends into the host's IP stack (hook prerouting, before
  connection tracking), which libvirt's nwfilter never sees;
- ``arp``: ARP a routed tap sends to the host (hook input).

Every port hostbay starts is named ``hbp-`` + 11 hex digits (``port_name``, written into the domain's
``<interface><target dev>``), so its chains can exist before the tap does. A base chain sends each ``hbp-*`` port
through the verdict map ``ports`` to that port's own chain, which holds its MAC and addresses as literals; a
``hbp-*`` port that is not in the map has all its traffic dropped (fail closed: a port whose chain is missing
carries nothing, never everything). Applying a port's addresses is one ``nft -f`` transaction (flush and refill
its chains, add its map entry): no process per rule, as libvirt's nwfilter needs (docs/benchmarks.md).

The guarantees are those of ``xml.host_filters`` (libvirt's clean-traffic): frames only from the NIC's MAC; IPv4
only from the port's addresses, or from 0.0.0.0 over UDP for DHCP; ARP only with that MAC and those addresses;
QEMU's RARP announcement after a migration; IPv6 (dual-stack ports only) from the port's addresses, link-local
addresses and ICMPv6 from :: (duplicate address detection); towards the guest only IPv4, ARP, RARP and (dual-stack)
IPv6; every other frame dropped.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence

from hostbay.core.drivers import Address
from hostbay.core.errors import FatalDriverError, TransientDriverError

TABLE = "hostbay_antispoof"
PORT_PREFIX = "hbp-"
_PORT_RE = re.compile(r"^hbp-[0-9a-f]{11}$")
_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
BASE_VERSION = "1"  # in the tables' comment, for staff reading the ruleset


def port_name(domain_name: str) -> str:
    """The tap name of a domain's port (15 characters, the kernel's limit): stable for a domain name, different for
    two domains of one service on one host (a move between two nodes of the same libvirtd)."""
    return PORT_PREFIX + hashlib.sha256(domain_name.encode()).hexdigest()[:11]


def is_port(name: str | None) -> bool:
    return bool(name and _PORT_RE.match(name))


def _check_port(port: str) -> str:
    if not is_port(port):
        raise ValueError(f"not a hostbay port name: {port!r}")
    return port


def _set(values: Sequence[str]) -> str:
    return "{ " + ", ".join(values) + " }"


def base_script() -> str:
    """The tables, maps and base chains; idempotent (``add`` of what exists is a no-op), and the base chains are
    flushed and refilled in the same transaction, so running it again never duplicates a rule and never drops a
    port's entry."""
    lines = []
    hooks = {"bridge": [("from_guest", "prerouting", "iifname"), ("to_guest", "postrouting", "oifname")],
             "inet": [("from_guest", "prerouting", "iifname")],
             "arp": [("from_guest", "input", "iifname")]}
    for family, chains in hooks.items():
        lines.append(f"add table {family} {TABLE} {{ comment \"hostbay anti-spoofing v{BASE_VERSION}\" ; }}")
        for chain, hook, ifmatch in chains:
            lines.append(f"add map {family} {TABLE} {chain}_ports {{ type ifname : verdict ; }}")
            lines.append(f"add chain {family} {TABLE} {chain} "
                         f"{{ type filter hook {hook} priority -300 ; policy accept ; }}")
            lines.append(f"flush chain {family} {TABLE} {chain}")
            lines.append(f"add rule {family} {TABLE} {chain} {ifmatch} \"{PORT_PREFIX}*\" {ifmatch} vmap @{chain}_ports")
            lines.append(f"add rule {family} {TABLE} {chain} {ifmatch} \"{PORT_PREFIX}*\" drop")
    return "\n".join(lines) + "\n"


def _port_rules(port: str, mac: str, addresses: Sequence[Address]) -> dict[tuple[str, str], list[str]]:
    """The rules of each of a port's chains, keyed by (family, base chain)."""
    mac = mac.lower()
    if not _MAC_RE.match(mac):
        raise ValueError(f"not a MAC address: {mac!r}")
    v4 = [str(ipaddress.IPv4Address(a.address)) for a in addresses if a.version == 4]
    v6 = [str(ipaddress.IPv6Address(a.address)) for a in addresses if a.version == 6]
    mac_int = "0x" + mac.replace(":", "")
    rarp = f"ether type 0x8035 @nh,48,16 3 @nh,64,48 {mac_int} @nh,144,48 {mac_int} accept"
    dhcp = "ip saddr 0.0.0.0 meta l4proto udp accept"
    from_bridge = [f"ether saddr != {mac} drop"]
    from_routed = [f"ether saddr != {mac} drop"]
    arp_routed = []
    if v4:
        from_bridge.append(f"ether type ip ip saddr {_set(v4)} accept")
        from_bridge.append(f"ether type arp arp htype 1 arp ptype ip arp saddr ether {mac} "
                           f"arp saddr ip {_set(v4)} accept")
        from_routed.append(f"meta nfproto ipv4 ip saddr {_set(v4)} accept")
        arp_routed.append(f"arp htype 1 arp ptype ip arp saddr ether {mac} arp saddr ip {_set(v4)} accept")
    from_bridge.append(f"ether type ip {dhcp}")
    from_routed.append(f"meta nfproto ipv4 {dhcp}")
    from_bridge.append(rarp)
    to_types = ["ip", "arp", "0x8035"]
    if v6:
        six = _set(["fe80::/10", *v6])
        from_bridge.append(f"ether type ip6 ip6 saddr {six} accept")
        from_bridge.append("ether type ip6 ip6 saddr :: meta l4proto icmpv6 accept")
        from_routed.append(f"meta nfproto ipv6 ip6 saddr {six} accept")
        from_routed.append("meta nfproto ipv6 ip6 saddr :: meta l4proto icmpv6 accept")
        to_types.append("ip6")
    for rules in (from_bridge, from_routed, arp_routed):
        rules.append("drop")
    return {("bridge", "from_guest"): from_bridge,
            ("bridge", "to_guest"): [f"ether type {_set(to_types)} accept", "drop"],
            ("inet", "from_guest"): from_routed,
            ("arp", "from_guest"): arp_routed}


def _chain(base: str, port: str) -> str:
    return f"{base}_{port.replace('-', '_')}"


def apply_script(port: str, mac: str, addresses: Sequence[Address]) -> str:
    """One transaction: the base (idempotent), then each of the port's chains flushed and refilled and its map
    entry added. A packet sees either the old rules or the new ones, never none."""
    _check_port(port)
    lines = [base_script()]
    for (family, base), rules in _port_rules(port, mac, addresses).items():
        chain = _chain(base, port)
        lines.append(f"add chain {family} {TABLE} {chain}")
        lines.append(f"flush chain {family} {TABLE} {chain}")
        lines.extend(f"add rule {family} {TABLE} {chain} {rule}" for rule in rules)
        lines.append(f"add element {family} {TABLE} {base}_ports {{ \"{port}\" : jump {chain} }}")
    return "\n".join(lines) + "\n"


def apply_many_script(ports: Sequence[tuple[str, str, Sequence[Address]]]) -> str:
    """One transaction writing the chains of every ``(port, mac, addresses)``: the base once, then each port."""
    base = base_script()
    return base + "".join(apply_script(*p)[len(base):] for p in ports)


def remove_script(port: str) -> str:
    """One transaction that removes a port's chains and map entries whether or not they exist (each is added
    first, which is a no-op when it is there, then deleted): the port is left dropping everything, as a port
    with no chain does, until it is gone."""
    _check_port(port)
    lines = [base_script()]
    for family, base in (("bridge", "from_guest"), ("bridge", "to_guest"), ("inet", "from_guest"),
                         ("arp", "from_guest")):
        chain = _chain(base, port)
        lines.append(f"add chain {family} {TABLE} {chain}")
        lines.append(f"add element {family} {TABLE} {base}_ports {{ \"{port}\" : jump {chain} }}")
        lines.append(f"delete element {family} {TABLE} {base}_ports {{ \"{port}\" }}")
        lines.append(f"flush chain {family} {TABLE} {chain}")
        lines.append(f"delete chain {family} {TABLE} {chain}")
    return "\n".join(lines) + "\n"


LOCK_PATH = "/run/lock/hostbay-antispoof.lock"


@contextlib.contextmanager
def host_lock() -> Iterator[None]:
    """One writer of the ports' rules at a time on this host (the worker processes of every node on it): reading a
    server's addresses and writing its chains happen under it, so a periodic re-apply never writes back addresses
    that an address change replaced in between."""
    path = LOCK_PATH if os.path.isdir(os.path.dirname(LOCK_PATH)) else os.path.join(tempfile.gettempdir(),
                                                                                     "hostbay-antispoof.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


class Nft:
    """Runs ``nft`` (``command`` is the argv prefix: tests run it inside a network namespace they made)."""

    def __init__(self, command: Sequence[str] = ("nft",)):
        self.command = list(command)

    def available_reason(self) -> str | None:
        if shutil.which(self.command[0]) is None:
            return f"{self.command[0]} is not installed on this host (Debian package nftables)"
        return None

    def run(self, script: str, what: str) -> None:
        reason = self.available_reason()
        if reason:
            raise FatalDriverError(f"cannot {what}: {reason}")
        try:
            proc = subprocess.run([*self.command, "-f", "-"], input=script, capture_output=True, text=True,
                                  timeout=30)
        except subprocess.TimeoutExpired as exc:
            raise TransientDriverError(f"nft did not finish {what} within 30 s") from exc
        if proc.returncode:
            message = (proc.stderr or proc.stdout).strip().splitlines()
            detail = message[0] if message else f"exit status {proc.returncode}"
            if "Operation not permitted" in proc.stderr:
                raise FatalDriverError(f"cannot {what}: nft needs root (CAP_NET_ADMIN) on this host: {detail}")
            raise FatalDriverError(f"cannot {what}: nft refused the rules: {detail}")

    def ensure(self) -> None:
        self.run(base_script(), "set up hostbay's anti-spoofing table")

    def apply(self, port: str, mac: str, addresses: Sequence[Address]) -> None:
        self.run(apply_script(port, mac, addresses), f"apply anti-spoofing to port {port}")

    def apply_many(self, ports: Sequence[tuple[str, str, Sequence[Address]]]) -> None:
        self.run(apply_many_script(ports), f"re-apply anti-spoofing to {len(ports)} ports")

    def remove(self, port: str) -> None:
        self.run(remove_script(port), f"remove the anti-spoofing of port {port}")

    def port_addresses(self, port: str) -> set[str] | None:
        """The addresses the bridged chain of ``port`` lets the port send from (None when the port has no chain):
        read back from the kernel, not from what hostbay meant to write."""
        _check_port(port)
        proc = subprocess.run([*self.command, "-j", "list", "chain", "bridge", TABLE, _chain("from_guest", port)],
                              capture_output=True, text=True, timeout=30)
        if proc.returncode:
            return None
        found: set[str] = set()

        def walk(node):
            if isinstance(node, dict):
                if "match" in node:
                    left = node["match"].get("left", {})
                    field = left.get("payload", {}).get("field") if isinstance(left, dict) else None
                    if field in ("saddr", "saddr ip") and left["payload"].get("protocol") in ("ip", "ip6", "arp"):
                        right = node["match"]["right"]
                        values = right.get("set", [right]) if isinstance(right, dict) else [right]
                        for v in values:
                            found.update(_expand(v))
                for v in node.values():
                    walk(v)
            elif isinstance(node, list):
                for v in node:
                    walk(v)

        walk(json.loads(proc.stdout))
        return {a for a in found if a not in ("0.0.0.0", "::", "fe80::/10")}


def _expand(value) -> set[str]:
    """The addresses of one element of a rule's set as ``nft -j`` prints it: nft merges neighbouring addresses of
    an interval set into a range."""
    if isinstance(value, str):
        return {value}
    if isinstance(value, dict) and "range" in value:
        first, last = (ipaddress.ip_address(v) for v in value["range"])
        if int(last) - int(first) > 4096:
            return {f"{first}-{last}"}
        return {str(ipaddress.ip_address(n)) for n in range(int(first), int(last) + 1)}
    if isinstance(value, dict) and "prefix" in value:
        net = ipaddress.ip_network(f"{value['prefix']['addr']}/{value['prefix']['len']}")
        if net.num_addresses > 4096 or net.is_link_local:
            return {str(net)}
        return {str(a) for a in (net if net.num_addresses == 1 else [net.network_address, *net.hosts(),
                                                                      net.broadcast_address])}
    return set()
