"""Core as a plugin: core's job handlers, schedules, staff menu entries and event listeners, contributed through
the same hooks as any third-party plugin (registered first by :func:`hostbay.core.plugins.build_registry`, like
Datasette's ``DEFAULT_PLUGINS``). Nothing here is filled as an import side effect: the hooks read the handlers
marked with :func:`hostbay.core.jobs.handler` in :data:`CORE_MODULES` when the registry asks.

A new core module with job handlers adds its dotted name to :data:`CORE_MODULES`; a new core staff page adds its
entry to :data:`STAFF_MENU`.
"""

from __future__ import annotations

import importlib
from types import FunctionType, ModuleType

from .hookspecs import hookimpl

CORE_MODULES: tuple[str, ...] = (
    "hostbay.core.jobs",
    "hostbay.core.lifecycle",
    "hostbay.core.renewals",
    "hostbay.core.force",
    "hostbay.core.move",
    "hostbay.core.iso",
    "hostbay.core.console",
    "hostbay.core.network",
    "hostbay.core.rdns",
    "hostbay.core.payments",
    "hostbay.core.idempotency",
    "hostbay.core.webhooks",
)

# (label, endpoint, permission) of core's staff pages, in menu order.
STAFF_MENU: tuple[tuple[str, str, str | None], ...] = (
    ("Billing", "staff_billing.home", "money.view"),
    ("Refund requests", "staff_billing.refunds", "money.view"),
    ("Tickets", "staff_tickets.queue", "tickets.view"),
    ("ISO approvals", "staff_iso.queue", "approvals.iso"),
    ("Network", "staff_network.pools", "network.view"),
    ("Reverse DNS queue", "staff_network.rdns_queue", "approvals.rdns"),
    ("Payments", "payments.staff_list", "money.view"),
    ("Payment gateways", "payments.staff_gateways", "plugins.gateways"),
    ("Services", "staff_services.index", "services.view"),
    ("Nodes", "staff_nodes.index", "plugins.nodes"),
    ("Images", "staff_images.index", "plugins.images"),
    ("Inventory", "staff_inventory.index", "services.inventory"),
    ("Datacenter tasks", "staff_inventory.tasks", "services.datacenter"),
    ("Customers", "staff_admin.customers", "customers.view"),
    ("Failed work", "staff_admin.operations", "services.operations"),
    ("Packages", "staff_admin.packages", "catalogue.packages"),
    ("OS images", "staff_admin.images", "catalogue.images"),
    ("Audit trail", "staff_admin.audit", "audit.view"),
    ("Staff accounts", "staff_admin.team", "staff.accounts"),
    ("Plugins and settings", "staff_admin.plugins", "plugins.view"),
    ("Branding", "staff_brand.branding_page", "plugins.branding"),
    ("Help pages", "staff_brand.help_list", "plugins.branding"),
)


def _modules() -> list[ModuleType]:
    return [importlib.import_module(name) for name in CORE_MODULES]


def _marked() -> list:
    out = []
    for mod in _modules():
        for value in list(vars(mod).values()):
            if isinstance(value, FunctionType) and getattr(value, "hostbay_job_kind", None) \
                    and value.__module__ == mod.__name__:
                out.append(value)
    return out


@hookimpl
def hostbay_job_handlers():
    return {fn.hostbay_job_kind: fn for fn in _marked()}


@hookimpl
def hostbay_scheduled_jobs():
    return sorted({(fn.hostbay_job_kind, fn.hostbay_every) for fn in _marked() if fn.hostbay_every})


@hookimpl
def hostbay_admin_menu():
    return list(STAFF_MENU)


@hookimpl
def hostbay_wallet_credited(user, entry):
    """After a committed credit: queue the renewal of the customer's services suspended for non-payment."""
    from .renewals import queue_retry_renewals

    queue_retry_renewals(user, entry)
