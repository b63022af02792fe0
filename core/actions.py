"""The one entry point for service actions, shared by the panel, the API and staff pages.

``request_action(service, action, actor, **params)`` checks the action against ``services.ACTIONS`` (through
``require_action``: a busy or suspended service refuses with a clear message), moves the service to its busy
state where the action has one (a conditional UPDATE, so a double click cannot start two reinstalls), enqueues the
job with an idempotency key, and writes the customer activity log and the staff audit trail. The caller commits.

It returns the enqueued ``Operation``, or ``None`` for actions that complete at once without a job (renewing an
active service, cancelling at the end of the period).
"""

from __future__ import annotations

from sqlalchemy import select

from . import clock, jobs
from .activity import audit, log_activity
from .db import db, new_uuid
from .errors import ActionNotAllowed, UserError
from .services import (ACTIVE, CANCELLED, PENDING, PROVISIONING, REINSTALLING, REMOVAL_QUEUED, SUSPENDED,
                       SUSPENDED_BY_STAFF,
                       Service, require_action, transition)

# action -> (job kind, customer-safe title)
_POWER = {"start": ("service.start", "Start server"), "stop": ("service.stop", "Stop server"),
          "restart": ("service.restart", "Restart server")}

# Actions of the table that other parts of hostbay carry out (they still check the table with require_action).
ELSEWHERE = {"change_package": "package change page", "mount_iso": "ISO page",
             "eject_iso": "ISO page", "console": "console page", "rdns": "addresses section"}

# Actions this module performs, for templates: (action, button label, confirmation needed).
PANEL_ACTIONS = [("start", "Start", False), ("stop", "Stop", False), ("restart", "Restart", False),
                 ("reinstall", "Reinstall", True), ("renew", "Renew now", True), ("cancel", "Cancel service", True)]
STAFF_ACTIONS = [("start", "Start"), ("stop", "Stop"), ("restart", "Restart"), ("suspend", "Suspend"),
                 ("unsuspend", "Unsuspend"), ("renew", "Renew from wallet"), ("terminate", "Terminate"),
                 ("cancel", "Cancel now")]


def _is_staff(actor) -> bool:
    return bool(getattr(actor, "is_staff", False))


def _key(action: str, service: Service, params: dict) -> str:
    return f"{action}:{service.uuid}:{params.get('request_id') or new_uuid()}"


# The permission a staff member needs for each action (checked by the staff pages and the staff API).
STAFF_PERMISSION = {"start": "services.power", "stop": "services.power", "restart": "services.power",
                    "move": "services.move"}


def staff_permission(action: str) -> str:
    from .force import NAMES

    return STAFF_PERMISSION.get(action) or ("services.force" if action in NAMES else "services.manage")


def request_action(service: Service, action: str, actor, **params):
    staff = _is_staff(actor)
    from .force import NAMES as FORCE

    if action in FORCE:
        if not staff:
            raise ActionNotAllowed("Only staff can force an action.")
        from .force import request_force

        return request_force(service, action, actor, reason=params.get("reason", ""),
                             request_id=params.get("request_id"))
    db.session.refresh(service)
    require_action(service, action, staff=staff)
    if not staff and actor is not None and getattr(actor, "id", None) != service.user_id:
        raise ActionNotAllowed("This service is not yours.")
    payload = {"actor_id": getattr(actor, "id", None), "actor_type": "staff" if staff else "customer"}
    who = "Support staff" if staff else "You"

    if action in _POWER:
        kind, title = _POWER[action]
        op = jobs.enqueue(kind, key=_key(action, service, params), service=service, title=title, payload=payload)
        audit(f"service.{action}.requested", "service", service.uuid, actor=actor, after={"operation": op.id})
        return op

    if action == "reinstall":
        image_id = params.get("image_id") or service.image_id
        if image_id != service.image_id:
            from .catalog import Image

            image = db.session.get(Image, image_id)
            if image is None or not image.enabled or image.driver != service.package.driver:
                raise UserError("Choose one of the offered images.")
        before = {"state": service.state, "image_id": service.image_id}
        if not transition(service, REINSTALLING, expect=ACTIVE, image_id=image_id):
            raise ActionNotAllowed("This service changed a moment ago; reload the page and try again.")
        op = jobs.enqueue("service.reinstall", key=_key(action, service, params), service=service,
                          title="Reinstall", payload=payload)
        audit("service.reinstall.requested", "service", service.uuid, actor=actor, before=before,
              after={"state": REINSTALLING, "image_id": image_id, "operation": op.id})
        return op

    if action == "renew":
        from .renewals import renew_service

        return renew_service(service, actor=actor, actor_type="staff" if staff else "customer")

    if action == "cancel":
        when = params.get("when", "end")
        if when not in ("end", "now"):
            raise UserError("Choose to cancel at the end of the billing period or now.")
        if when == "end" and service.state == ACTIVE:
            service.cancel_at_period_end = True
            log_activity(service.user_id, "cancel", f"{who} asked to end {service.hostname} on "
                         f"{service.renews_at:%Y-%m-%d}, at the end of the paid period.", service.id)
            audit("service.cancel_at_period_end", "service", service.uuid, actor=actor,
                  after={"renews_at": service.renews_at.isoformat()})
            return None
        expect = {ACTIVE} if service.state == ACTIVE else {PENDING, PROVISIONING} & {service.state}
        if not expect or not transition(service, CANCELLED, expect=expect, ended_at=clock.now()):
            raise ActionNotAllowed("This service cannot be cancelled right now.")
        log_activity(service.user_id, "cancel", f"{who} cancelled {service.hostname}; it is being removed.",
                     service.id)
        op = jobs.enqueue("service.remove", key=f"remove:{service.uuid}", service=service, title="Remove server",
                          payload={**payload, "reason": "cancelled"})
        audit("service.cancelled", "service", service.uuid, actor=actor, before={"state": ACTIVE},
              after={"state": CANCELLED, "operation": op.id})
        return op

    if action == "suspend":
        if not transition(service, SUSPENDED, expect=ACTIVE, suspended_at=clock.now(),
                          suspension_reason=SUSPENDED_BY_STAFF):
            raise ActionNotAllowed("This service changed a moment ago; reload the page and try again.")
        reason = (params.get("reason") or "staff")[:64]
        log_activity(service.user_id, "suspend", f"{service.hostname} was suspended by support staff.", service.id)
        op = jobs.enqueue("service.suspend", key=_key(action, service, params), service=service,
                          title="Suspend server", payload={**payload, "reason": reason})
        audit("service.suspended", "service", service.uuid, actor=actor, before={"state": ACTIVE},
              after={"state": SUSPENDED, "operation": op.id}, detail=reason)
        return op

    if action == "unsuspend":
        op = jobs.enqueue("service.unsuspend", key=_key(action, service, params), service=service,
                          title="Reactivate server", payload=payload)
        audit("service.unsuspend.requested", "service", service.uuid, actor=actor, after={"operation": op.id})
        return op

    if action == "terminate":
        before = service.state
        if not transition(service, REMOVAL_QUEUED, expect={ACTIVE, SUSPENDED}, removal_queued_at=clock.now()):
            raise ActionNotAllowed("This service changed a moment ago; reload the page and try again.")
        log_activity(service.user_id, "remove", f"{service.hostname} is being removed by support staff.",
                     service.id)
        op = jobs.enqueue("service.remove", key=f"remove:{service.uuid}", service=service, title="Remove server",
                          payload={**payload, "reason": "staff"})
        audit("service.terminated", "service", service.uuid, actor=actor, before={"state": before},
              after={"state": REMOVAL_QUEUED, "operation": op.id}, detail=params.get("reason", ""))
        return op

    if action == "retry":
        op = db.session.scalar(select(jobs.Operation).where(jobs.Operation.service_id == service.id,
                                                            jobs.Operation.state == jobs.FAILED)
                               .order_by(jobs.Operation.created_at.desc()).limit(1))
        if op is None:
            raise UserError("This service has no failed operation to retry.")
        return jobs.retry(op, actor=actor)

    if action in ELSEWHERE:
        raise UserError(f"Use the {ELSEWHERE[action]} for this action.")
    raise UserError(f"Unknown action “{action}”.")
