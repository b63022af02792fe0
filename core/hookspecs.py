"""Hook specifications: the one door between hostbay core and its plugins.

Every hook is prefixed ``hostbay_`` and documented in docs/plugins.md under a heading with its exact signature
(a test checks this). Implement them in a plugin module with ``@hostbay.core.hookspecs.hookimpl``.
"""

from __future__ import annotations

import pluggy

PROJECT = "hostbay"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# ==============================================================================================================
# Contribution hooks: each returns a list; core gathers the lists of every plugin.
# ==============================================================================================================

@hookspec
def hostbay_virt_drivers():
    """Called once when the registry is built. Return a list of ``VirtDriver`` subclasses."""


@hookspec
def hostbay_power_drivers():
    """Called once when the registry is built. Return a list of ``PowerDriver`` subclasses."""


@hookspec
def hostbay_payment_gateways():
    """Called once when the registry is built. Return a list of ``PaymentGateway`` subclasses."""


@hookspec
def hostbay_network_filters():
    """Called once when the registry is built. Return a list of ``NetworkFilter`` subclasses."""


@hookspec
def hostbay_dns_backends():
    """Called once when the registry is built. Return a list of ``DnsBackend`` subclasses."""


@hookspec
def hostbay_blueprints():
    """Called by ``create_app()``. Return a list of Flask blueprints to register (their own templates included)."""


@hookspec
def hostbay_job_handlers():
    """Called once when the registry is built. Return a dict mapping a job kind (``"myplugin.sync"``) to a callable
    ``handler(op, payload)``; enqueue it with ``hostbay.core.jobs.enqueue(kind, ...)``. Mark the callable with
    ``hostbay.core.jobs.handler(kind, queue="money"|"driver"|"notify")`` to choose its queue class (money and
    lifecycle work, driver calls, notifications and probes); an unmarked handler runs on the driver queue."""


@hookspec
def hostbay_scheduled_jobs():
    """Called by the scheduler. Return a list of ``(kind, every_seconds)``; each kind is enqueued at most once
    per period, whatever the number of schedulers running."""


@hookspec
def hostbay_cli_commands():
    """Called when the ``hostbay`` command starts. Return a list of click commands or groups to add."""


@hookspec
def hostbay_checks(app):
    """Called by ``hostbay check`` inside an app context. Return a list of ``(level, text)`` findings ("error" makes
    the command fail, "warning" does not) about the plugin's own configuration: read the app's configuration and the
    database, reach no host."""


@hookspec
def hostbay_admin_menu():
    """Called when an admin page renders. Return a list of ``(label, endpoint)`` entries for the staff menu; an
    entry may carry a third item, the staff permission it needs. Core's own entries come through this hook too."""


@hookspec
def hostbay_demo_data():
    """Called by ``hostbay demo`` after core's demo data is committed. Add the plugin's demo data (idempotently:
    the command runs at every demo start) and return a list of lines to print (possibly empty)."""


@hookspec
def hostbay_dashboard_notices(user):
    """Called when a customer's dashboard renders. Return a list of notices for ``user``, each a dict with
    ``title`` and ``text`` (plain, customer-safe words), optional ``level`` (``"info"``, ``"warning"`` or
    ``"danger"``; default ``"info"``), optional ``url`` (a link for details) and optional ``services`` (public
    UUIDs of the user's services it concerns: their pages show it too). Keep it cheap: it runs on every
    dashboard view."""


# ==============================================================================================================
# Event hooks (past tense): called after the fact, inside the job or request that caused it, after commit.
# Return values are ignored; an exception is logged and does not undo the event.
# ==============================================================================================================

@hookspec
def hostbay_service_provisioned(service):
    """Called after a service's server was created and the service became active."""


@hookspec
def hostbay_service_suspended(service, reason):
    """Called after a service was suspended; ``reason`` is a short code such as ``"unpaid"`` or ``"staff"``."""


@hookspec
def hostbay_service_unsuspended(service):
    """Called after a suspended service became active again."""


@hookspec
def hostbay_service_terminated(service):
    """Called after a service's resources were removed and it became terminated."""


@hookspec
def hostbay_wallet_credited(user, entry):
    """Called after a ledger entry that added funds to ``user``'s wallet (top-up, credit, bonus) was committed,
    never for a credit that rolled back. The listener runs in a fresh session; what it writes or enqueues is
    committed after it returns."""


@hookspec
def hostbay_iso_deleted(iso):
    """Called when a customer deletes an ISO image (``iso``, with its ``uuid`` and local ``path``), inside the
    deleting transaction: enqueue clean-up work with ``hostbay.core.jobs.enqueue`` so it runs only if the deletion
    commits (e.g. removing copies uploaded to a hypervisor's storage)."""


@hookspec
def hostbay_operation_failed(operation):
    """Called when an operation failed for good (fatal error or retries exhausted); staff alerting goes here."""


# ==============================================================================================================
# Decision hooks: the first non-None answer wins.
# ==============================================================================================================

@hookspec(firstresult=True)
def hostbay_dedicated_install_requested(service, server, image, ssh_keys):
    """Called by the provisioning or reinstall job of a dedicated ``service`` whose inventory ``server`` is marked
    for automated installs, before its next boot is set to PXE and it is power-cycled. ``image`` is the chosen
    ``Image`` (or None), ``ssh_keys`` a list of public keys. An installer plugin that takes the install prepares
    what the network boot needs (e.g. an answer file) and returns a dict describing it; return None to decline.
    When no plugin takes it, the install is queued for datacenter handling."""


@hookspec(firstresult=True)
def hostbay_choose_node(service, candidates):
    """Called during placement with the nodes that have room, best first. Return one of them to override the
    default choice, or None to keep it."""


# Event hooks, fired after commit through hostbay.core.jobs.notify_after_commit (each listener isolated in a SAVEPOINT).
EVENT_HOOKS = frozenset({"hostbay_service_provisioned", "hostbay_service_suspended", "hostbay_service_unsuspended",
                         "hostbay_service_terminated", "hostbay_wallet_credited", "hostbay_operation_failed"})
