"""The one "driver for this service" lookup, and the capabilities a service's driver advertises.

A VPS runs on its node's virtualization driver (before placement: its package's); a dedicated server is driven by
a power driver. Every caller (job handlers, ISO, console, network filters, the capability checks of the
``ACTIONS`` table) goes through :func:`driver_class_for` / :func:`driver_for`.
"""

from __future__ import annotations

from flask import current_app, has_app_context

from .errors import FatalDriverError

# The driver interface each kind of service runs on.
DRIVER_KIND = {"vps": "virt", "dedicated": "power"}


def _driver_name(service) -> str:
    node = service.node
    return node.driver if node is not None else service.package.driver


def driver_class_for(service):
    """The driver class of ``service`` (None when its driver is not loaded)."""
    if not has_app_context():
        return None
    kind = DRIVER_KIND.get(service.kind)
    if kind is None:
        return None
    return current_app.extensions["hostbay"].drivers.get(kind, {}).get(_driver_name(service))


def capabilities_of(service) -> frozenset[str]:
    """What the service's driver advertises (empty when the driver is not loaded: no optional action is offered)."""
    cls = driver_class_for(service)
    return frozenset(getattr(cls, "capabilities", ()) or ())


def driver_for(service, *, need_server: bool = False):
    """The service's driver instance, configured with its node's settings. ``need_server``: refuse (customer-safe)
    when the server does not exist yet."""
    kind = DRIVER_KIND.get(service.kind)
    if kind != "virt":
        raise FatalDriverError(f"service {service.uuid} is a {service.kind} service; it has no virtualization driver")
    if need_server and (service.node is None or not service.infra_ref):
        raise FatalDriverError(f"service {service.uuid} has no server yet",
                               customer_message="This server is not set up yet.")
    node = service.node
    return current_app.extensions["hostbay"].driver(kind, _driver_name(service),
                                                    node.settings if node is not None else {})
