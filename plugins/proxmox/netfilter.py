"""ProxmoxNetworkFilter: pins a Proxmox guest's traffic to its allocated addresses with the PVE firewall.

The guest's ipset ``ipfilter-net0`` holds exactly the allocated addresses, the VM firewall options are
``enable=1, ipfilter=1`` and ``net0`` carries ``firewall=1`` (set when the guest is configured, kept here). With
``ipfilter`` on, Proxmox drops traffic from net0 whose source is not in ``ipfilter-net0`` (plus the interface's
link-local IPv6 address). Re-applying compares first and changes only what differs.
"""

from __future__ import annotations

from typing import Any

from hostbay.core.drivers import Address, NetworkFilter, VirtDriver
from hostbay.core.errors import FatalDriverError


class ProxmoxNetworkFilter(NetworkFilter):
    name = "proxmox"
    label = "Proxmox VE firewall ipfilter (anti-spoofing)"
    drivers = frozenset({"proxmox"})

    def apply(self, virt: VirtDriver, ref: dict[str, Any], addresses: list[Address]) -> None:
        from .driver import ProxmoxDriver, _mac_of, apply_filter

        if not isinstance(virt, ProxmoxDriver):
            raise FatalDriverError(f"the Proxmox firewall filter cannot act on a {virt.name} server")
        cfg = virt._exists(ref)
        net0 = cfg.get("net0") or ""
        if "firewall=1" not in net0.split(","):
            virt.pve.put(f"{virt._vm_path(ref)}/config",
                         net0=",".join(p for p in net0.split(",") if not p.startswith("firewall=")) + ",firewall=1"
                         if _mac_of(net0) else virt._net0(None, None))
        apply_filter(virt, ref, list(addresses))
