"""Network filters: keep a server's traffic to its allocated addresses (the FAQ's anti-spoofing promise).

``apply_network_filter(service)`` is called after provisioning and whenever the service's addresses change; it
finds the ``NetworkFilter`` drivers that serve the service's virtualization driver and applies the current set.
"""

from __future__ import annotations

from flask import current_app

from . import ipam


def apply_network_filter(service, virt_driver=None) -> int:
    """Apply the service's addresses through every matching filter; returns how many filters ran."""
    if not service.node or not service.infra_ref:
        return 0
    registry = current_app.extensions["hostbay"]
    if virt_driver is None:
        virt_driver = registry.driver("virt", service.node.driver, service.node.settings)
    addresses = ipam.addresses_for(service)
    ran = 0
    for cls in registry.drivers.get("network_filter", {}).values():
        if service.node.driver in cls.drivers:
            cls(service.node.settings).apply(virt_driver, service.infra_ref, addresses)
            ran += 1
    return ran
