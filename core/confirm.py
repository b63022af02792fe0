"""Explicit confirmation of destructive service actions.

Reinstalling (the disk is erased), cancelling now (the server and its data are removed) and a staff termination
need the service's hostname typed in, as the smaller-disk package change does. The panel, the staff pages and
the API all check it here before they call :func:`hostbay.core.actions.request_action`.
"""

from __future__ import annotations

from .errors import UserError

WHAT = {"reinstall": "Reinstalling erases all data on the disk",
        "cancel_now": "Cancelling now removes the server and all its data",
        "terminate": "Terminating removes the server and all its data",
        "force_stop": "Forcing the power off cuts it without a clean shutdown",
        "force_restart": "Forcing a restart cuts the power without a clean shutdown",
        "force_suspend": "Forcing a suspension gives up the service's unfinished work and powers it off",
        "force_unsuspend": "Forcing the suspension off makes the service active at once",
        "force_terminate": "Force terminating removes the server and all its data now",
        "mark_failed": "Marking the operation failed stops it from running on",
        "move": "Moving the server takes it off its node for a few minutes"}


def destructive(action: str, params: dict | None = None) -> str | None:
    """The key of WHAT that ``action`` (with its parameters) falls under, or None when it destroys nothing."""
    if action == "cancel":
        return "cancel_now" if (params or {}).get("when") == "now" else None
    return action if action in WHAT else None


def require_confirmation(service, action: str, typed: str | None, params: dict | None = None) -> None:
    """Raise UserError unless ``typed`` is the service's hostname (for a destructive ``action``)."""
    what = destructive(action, params)
    if what is None:
        return
    if (typed or "").strip().lower().rstrip(".") != service.hostname.lower():
        raise UserError(f"{WHAT[what]}. Type the hostname {service.hostname} to confirm.")
