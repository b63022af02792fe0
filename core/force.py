"""Staff force actions on a service, for when the everyday action does not do: power off without waiting for the
guest, restart the same way, suspend or remove a service whose work is stuck, lift a suspension at once, give up
on a stuck operation.

Each action is an entry of ``services.ACTIONS`` (a refusal when the state does not allow it), needs the
``services.force`` permission (checked by the staff page), the service's hostname typed as confirmation
(``core/confirm.py``), and writes an audit entry with before/after; the customer's activity says what staff did
wherever it affects them. The caller commits.

- ``force_stop``: power off now (the driver's stop with no grace period); refused when the server is read as
  stopped.
- ``force_restart``: power off now, then start.
- ``force_suspend``: active or stuck busy → suspended by staff; the service's unfinished operations are given up
  (``abandoned``); the server is powered off by the suspension job.
- ``force_unsuspend``: suspended (for any reason) → active at once, then the server is started; the normal
  "Unsuspend" keeps the service suspended until the driver has started it.
- ``force_terminate``: active, suspended (also a staff suspension the retention sweep keeps) or stuck busy →
  queued for removal and removed now, without the retention window; unfinished operations are given up first.
  Refused while an operation runs on a live worker (mark it failed first).
- ``mark_failed``: the service's queued, retrying or stuck running operation (its heartbeat older than
  ``jobs.STALE_SECONDS``) is marked failed, so it can be retried or abandoned; a running operation with a live
  heartbeat is refused (its worker would record its outcome over the mark).
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from . import clock, jobs
from .activity import audit, log_activity
from .db import db, new_uuid
from .errors import ActionNotAllowed, UserError
from .services import (ACTIVE, REBUILDING, REINSTALLING, REMOVAL_QUEUED, RESIZING, SUSPENDED, SUSPENDED_BY_STAFF,
                       Service, require_action, transition)

# (action, button label, what it does: said next to the confirmation)
FORCE_ACTIONS = [
    ("force_stop", "Force power off", "Cuts the power now, without waiting for the guest to shut down."),
    ("force_restart", "Force restart", "Cuts the power now and starts the server again."),
    ("force_suspend", "Force suspend", "Suspends now, also while other work is stuck; unfinished operations are "
                                       "given up and the server is powered off."),
    ("force_unsuspend", "Force unsuspend", "Makes the service active now, whatever the reason of the suspension, "
                                           "and starts the server."),
    ("force_terminate", "Force terminate", "Removes the server and all its data now, without the retention window; "
                                           "unfinished operations are given up."),
    ("mark_failed", "Mark the stuck operation failed", "The service's unfinished operation (queued, retrying or "
                                                       "running without a live worker) is marked failed."),
]
NAMES = frozenset(a for a, _, _ in FORCE_ACTIONS)
LABELS = {a: label for a, label, _ in FORCE_ACTIONS}
UNFINISHED = (jobs.QUEUED, jobs.RETRYING, jobs.RUNNING, jobs.FAILED)


def _unfinished(service: Service):
    return db.session.scalars(select(jobs.Operation).where(jobs.Operation.service_id == service.id,
                                                           jobs.Operation.state.in_(UNFINISHED))
                              .order_by(jobs.Operation.created_at.desc())).all()


def _live(op: jobs.Operation) -> bool:
    stale = jobs._utcnow() - timedelta(seconds=jobs.STALE_SECONDS)  # heartbeats are on the real clock
    return op.state == jobs.RUNNING and op.heartbeat_at is not None and op.heartbeat_at >= stale


def _give_up(service: Service, actor, keep: str | None = None) -> list[str]:
    """Abandon the service's unfinished operations (not ``keep``'s kind); refuse while one runs on a live worker."""
    from .admin import ABANDONED

    ops = _unfinished(service)
    if any(_live(o) for o in ops if o.kind != keep):
        raise ActionNotAllowed("An operation is running on a live worker for this service; wait for it or mark it "
                               "failed once its worker stopped.")
    gone = []
    for op in ops:
        if op.kind == keep:
            continue
        res = db.session.execute(update(jobs.Operation).where(jobs.Operation.id == op.id,
                                                              jobs.Operation.state == op.state)
                                 .values(state=ABANDONED, finished_at=clock.now(), progress_text="Abandoned")
                                 .execution_options(synchronize_session=False))
        if res.rowcount:
            gone.append(op.id)
            audit("operation.abandon", "operation", op.id, actor=actor, before={"state": op.state},
                  after={"state": ABANDONED}, detail=f"given up by a force action on service {service.uuid}")
    return gone


def _power_state(service: Service) -> str | None:
    from . import power

    row = power.latest(service.id)
    return row.state if row is not None else None


def request_force(service: Service, action: str, actor, *, reason: str = "", request_id: str | None = None):
    """Carry out (or queue) the force ``action``; returns the operation it enqueued, or None."""
    from . import power

    if action not in NAMES:
        raise UserError(f"Unknown force action “{action}”.")
    db.session.refresh(service)
    require_action(service, action, staff=True)
    reason = (reason or "").strip()[:200]
    payload = {"actor_id": getattr(actor, "id", None), "actor_type": "staff", "forced": True}
    key = f"{action}:{service.uuid}:{request_id or new_uuid()}"
    before = {"state": service.state, "suspension_reason": service.suspension_reason}

    if action in ("force_stop", "force_restart"):
        if not service.infra_ref:
            raise ActionNotAllowed("This service has no server to power off.")
        if action == "force_stop" and _power_state(service) == "stopped":
            raise ActionNotAllowed("The server is stopped already.")
        op = jobs.enqueue(f"service.{action}", key=key, service=service, title={
            "force_stop": "Power off server", "force_restart": "Restart server"}[action], payload=payload)
        power.mark_stale(service)
        audit(f"service.{action}.requested", "service", service.uuid, actor=actor,
              before={**before, "power": _power_state(service)}, after={"operation": op.id}, detail=reason)
        return op

    if action == "force_suspend":
        given_up = _give_up(service, actor)
        if not transition(service, SUSPENDED, expect={ACTIVE, REBUILDING, REINSTALLING, RESIZING},
                          suspended_at=clock.now(), suspension_reason=SUSPENDED_BY_STAFF):
            raise ActionNotAllowed("This service changed a moment ago; reload the page and try again.")
        log_activity(service.user_id, "suspend", f"{service.hostname} was suspended by support staff.", service.id)
        op = jobs.enqueue("service.suspend", key=key, service=service, title="Suspend server",
                          payload={**payload, "reason": "staff"})
        audit("service.force_suspend", "service", service.uuid, actor=actor, before=before,
              after={"state": SUSPENDED, "suspension_reason": SUSPENDED_BY_STAFF, "operation": op.id,
                     "abandoned": given_up}, detail=reason)
        return op

    if action == "force_unsuspend":
        if not transition(service, ACTIVE, expect=SUSPENDED, suspended_at=None, suspension_reason=None):
            raise ActionNotAllowed("This service changed a moment ago; reload the page and try again.")
        log_activity(service.user_id, "unsuspend", f"Support staff lifted the suspension of {service.hostname}; "
                     "it is active again and its server is being started.", service.id)
        op = None
        if service.infra_ref or service.kind == "dedicated":
            op = jobs.enqueue("service.start", key=key, service=service, title="Start server", payload=payload)
            power.mark_stale(service)
        audit("service.force_unsuspend", "service", service.uuid, actor=actor, before=before,
              after={"state": ACTIVE, "suspension_reason": None, "operation": op.id if op else None}, detail=reason)
        return op

    if action == "force_terminate":
        given_up = _give_up(service, actor, keep="service.remove")
        if not transition(service, REMOVAL_QUEUED, expect={ACTIVE, SUSPENDED, REBUILDING, REINSTALLING, RESIZING},
                          removal_queued_at=clock.now()):
            raise ActionNotAllowed("This service changed a moment ago; reload the page and try again.")
        log_activity(service.user_id, "remove", f"{service.hostname} is being removed by support staff.",
                     service.id)
        op = jobs.enqueue("service.remove", key=f"remove:{service.uuid}", service=service, title="Remove server",
                          payload={**payload, "reason": "staff"})
        if op.state in (jobs.FAILED, "abandoned"):  # an earlier removal of this service gave up: run it again
            op.state, op.attempts, op.finished_at, op.error, op.customer_error = jobs.QUEUED, 0, None, None, None
            db.session.info.setdefault("hostbay_dispatch", []).append(op.id)
        audit("service.force_terminate", "service", service.uuid, actor=actor, before=before,
              after={"state": REMOVAL_QUEUED, "operation": op.id, "abandoned": given_up},
              detail=reason or "removed now, without the retention window")
        return op

    # mark_failed
    ops = [o for o in _unfinished(service) if o.state != jobs.FAILED]
    if not ops:
        raise UserError("This service has no queued, retrying or running operation.")
    op = ops[0]
    if _live(op):
        raise ActionNotAllowed(f"The operation “{op.title}” is running on a live worker (its heartbeat is fresh); "
                               "wait for it.")
    stale = jobs._utcnow() - timedelta(seconds=jobs.STALE_SECONDS)
    res = db.session.execute(
        update(jobs.Operation).where(jobs.Operation.id == op.id, jobs.Operation.state == op.state,
                                     (jobs.Operation.state != jobs.RUNNING) | (jobs.Operation.heartbeat_at < stale)
                                     | jobs.Operation.heartbeat_at.is_(None))
        .values(state=jobs.FAILED, finished_at=clock.now(), progress_text="Failed",
                error=f"marked failed by staff: {reason or 'no reason given'}"[:2000],
                customer_error="Our staff stopped this task; it did not complete.")
        .execution_options(synchronize_session=False))
    if res.rowcount != 1:
        raise ActionNotAllowed("The operation changed a moment ago; reload the page and try again.")
    log_activity(service.user_id, "operation", f"Support staff stopped the task “{op.title}” on {service.hostname}; "
                 "it did not complete.", service.id)
    audit("operation.mark_failed", "operation", op.id, actor=actor, before={"state": op.state},
          after={"state": jobs.FAILED}, detail=f"service {service.uuid}; {reason}".strip("; "))
    db.session.refresh(op)
    return op


# --- the jobs ----------------------------------------------------------------------------------------------------

@jobs.handler("service.force_stop", queue=jobs.DRIVER)
def force_stop_job(op, payload):
    return _force_power(op, payload, restart=False)


@jobs.handler("service.force_restart", queue=jobs.DRIVER)
def force_restart_job(op, payload):
    return _force_power(op, payload, restart=True)


def _force_power(op, payload, restart: bool):
    from .errors import FatalDriverError
    from .lifecycle import _actor, _refs, _service_of, driver_for

    svc = _service_of(op)
    if svc.state not in (ACTIVE, SUSPENDED) or (restart and svc.state != ACTIVE):
        raise FatalDriverError(f"cannot force {'restart' if restart else 'stop'} service {svc.uuid} in state "
                               f"{svc.state}", customer_message="The server could not be switched: it is not active.")
    drv, ref = driver_for(svc), dict(svc.infra_ref or {})
    jobs.call_driver(op, drv.stop, ref, 0, pct=20, text="Powering off")
    if restart:
        jobs.call_driver(op, drv.start, ref, pct=60, text="Starting")
    svc = _service_of(op)
    from .power import mark_stale

    mark_stale(svc)
    log_activity(svc.user_id, "restart" if restart else "stop",
                 f"Support staff {'restarted' if restart else 'powered off'} {svc.hostname} (forced, without waiting "
                 "for a clean shutdown).", svc.id)
    audit("service.force_restart" if restart else "service.force_stop", "service", svc.uuid,
          before={"power": "running"}, after={"power": "running" if restart else "stopped", **_refs(svc)},
          detail=f"operation {op.id}", actor_type="staff", actor=_actor(payload))
    db.session.commit()
    return {"done": "force_restart" if restart else "force_stop", "text": "Restarted" if restart else "Powered off"}
