"""Service lifecycle: the job handlers that drive servers (provision, power, reinstall, resize, rebuild, suspend,
unsuspend, remove). The renewal and retention sweeps, the customer's renewal and the scheduled notices job live in
:mod:`.renewals`; placement in :mod:`.placement`, the set-based SQL in :mod:`.bulk`, the history views in
:mod:`.history` (placement and history names stay importable from here).

Every handler is safe to re-run after a crash: it reads the service's state, skips the steps that already
happened (a node reservation exists, the driver's ``create`` is idempotent on the service UUID, a state
transition is a conditional UPDATE) and commits before each slow driver call, so a worker that dies leaves a
consistent row that the next attempt continues from. A handler that fails leaves the operation ``failed`` and the
service in its busy state (never silently ``active``); staff retry the operation from the service's staff page.
"""

from __future__ import annotations

import logging

from flask import current_app
from sqlalchemy import select

from . import clock, ipam, jobs, network, readiness
from .activity import audit, log_activity
from .catalog import Image
from .db import db
from .drivers import ServerSpec
from .errors import FatalDriverError
from .services import (ACTIVE, CANCELLED, ENDED, PENDING, PROVISIONING, REBUILDING, REINSTALLING, REMOVAL_QUEUED,
                       RESIZING, SUSPENDED, TERMINATED, Service, transition)

log = logging.getLogger(__name__)

from .placement import (NodeReservation, _need, _reserve_on, adjust_reservation, place,  # noqa: E402,F401
                        release_reservation)


# ==============================================================================================================
# Helpers
# ==============================================================================================================

def _registry():
    return current_app.extensions["hostbay"]


from .service_drivers import driver_for  # noqa: E402,F401 - the one lookup; kept importable from here


def _service_of(op) -> Service:
    svc = db.session.get(Service, op.service_id) if op.service_id else None
    if svc is None:
        raise FatalDriverError(f"operation {op.id} has no service")
    db.session.refresh(svc)
    return svc


def _say(op, pct: int, text: str) -> None:
    """Record progress. The handler's own transaction is committed first: progress is written on a separate
    connection, and SQLite allows one writer at a time."""
    db.session.commit()
    op.progress(pct, text)


def _release() -> None:
    """End the handler's transaction (kept for callers outside the driver-call template; driver calls go through
    :func:`hostbay.core.jobs.call_driver`, which also keeps the heartbeat alive and maps errors)."""
    db.session.commit()


def _progress(op, lo: int, hi: int):
    """A driver progress callback mapped into [lo, hi] of the operation's bar."""
    def cb(pct, text):
        _say(op, lo + (hi - lo) * max(0, min(100, int(pct))) // 100, text)
    return cb


def _refs(service: Service) -> dict:
    return {"node": service.node.name if service.node else None, "infra_ref": dict(service.infra_ref or {})}


def _notify(hook: str, service, **kw) -> None:
    """Fire a service event hook once the handler's work has committed (the one after-commit mechanism)."""
    sid = service.id
    jobs.notify_after_commit(hook, lambda: {"service": db.session.get(Service, sid), **kw})


def _dedicated():
    """Dedicated services run the same job kinds; their steps live in hostbay.core.dedicated."""
    from . import dedicated

    return dedicated


# ==============================================================================================================
# Placement
# ==============================================================================================================

# moved to hostbay.core.placement (imported above)


# ==============================================================================================================
# Server spec
# ==============================================================================================================

def build_spec(service: Service, addresses=None) -> ServerSpec:
    from .accounts import SSHKey

    pkg = service.package
    image = db.session.get(Image, service.image_id) if service.image_id else None
    keys = ()
    if service.ssh_key_ids:
        keys = tuple(k.public_key for k in db.session.scalars(
            select(SSHKey).where(SSHKey.id.in_(list(service.ssh_key_ids)), SSHKey.user_id == service.user_id)
            .order_by(SSHKey.id)))
    if addresses is None:
        addresses = ipam.addresses_for(service)
    node = service.node
    settings = dict(node.settings or {}) if node else {}
    return ServerSpec(
        uuid=service.uuid, hostname=service.hostname, vcpus=pkg.vcpus, memory_mib=pkg.memory_mib,
        disk_gib=pkg.disk_gib,
        image={"name": image.name, "source": image.source, "os": image.os_family} if image else {},
        node=settings, ssh_keys=keys, addresses=tuple(addresses or ()),
        nameservers=tuple(ipam.nameservers_for(service) or settings.get("nameservers") or ()),
        port_speed_mbit=pkg.port_speed_mbit)


# ==============================================================================================================
# Job handlers
# ==============================================================================================================

@jobs.handler("service.provision", queue=jobs.DRIVER)
def provision(op, payload):
    """Place, allocate addresses, create the server, filter its network, mark it active. Re-runnable: each step
    is idempotent and committed before the next slow one."""
    svc = _service_of(op)
    if svc.state == ACTIVE:
        return {"state": ACTIVE, "note": "already provisioned"}
    if svc.state in ENDED or svc.state == REMOVAL_QUEUED:
        return {"state": svc.state, "note": "service ended before provisioning"}
    if svc.state == PENDING:
        transition(svc, PROVISIONING, expect=PENDING)
        db.session.commit()
    if svc.state != PROVISIONING:
        raise FatalDriverError(f"service {svc.uuid} is {svc.state}, not provisioning")
    if svc.kind == "dedicated":  # hardware inventory: hostbay.core.dedicated, from provisioning on
        return _dedicated().provision(op, payload, svc)
    _say(op, 5, "Choosing a host")
    node = place(svc)
    audit("service.placed", "service", svc.uuid, after={"node": node.name, "node_id": node.id})
    db.session.commit()
    _say(op, 10, "Reserving IP addresses")
    addresses = ipam.allocate_for_service(svc)
    db.session.commit()
    driver = driver_for(svc)
    spec = readiness.prepare(svc, op, driver, build_spec(svc, addresses), "create")
    ref = jobs.call_driver(op, driver.create, spec, _progress(op, 15, 90), pct=15, text="Creating your server")
    svc = db.session.get(Service, svc.id)
    svc.infra_ref = dict(ref or {})
    db.session.commit()
    _say(op, 92, "Applying network protection")
    network.apply_network_filter(svc, driver, op=op)
    readiness.wait(op, svc, "create")  # Active only after the guest's own report (images that can report)
    if not transition(svc, ACTIVE, expect=PROVISIONING):
        raise FatalDriverError(f"service {svc.uuid} left provisioning while being set up (now {svc.state})")
    log_activity(svc.user_id, "create", f"Server {svc.hostname} was set up and is running.", svc.id)
    audit("service.provisioned", "service", svc.uuid, before={"state": PROVISIONING},
          after={"state": ACTIVE, **_refs(svc)}, detail=f"operation {op.id}")
    db.session.commit()
    _say(op, 100, "Your server is ready")
    _notify("hostbay_service_provisioned", service=svc)
    return {"state": ACTIVE, "text": "Your server is ready"}


def _simple_power(action: str, method: str, message: str):
    @jobs.handler(f"service.{action}", queue=jobs.DRIVER)
    def _h(op, payload):
        svc = _service_of(op)
        if svc.kind == "dedicated":  # hardware inventory: hostbay.core.dedicated
            return _dedicated().power(op, payload, svc, action)
        if svc.state != ACTIVE:
            raise FatalDriverError(f"cannot {action} service {svc.uuid} in state {svc.state}",
                                   customer_message=f"The server could not be {message.split()[0].lower()}: "
                                   "it is not active.")
        call, ref = getattr(driver_for(svc), method), dict(svc.infra_ref or {})
        jobs.call_driver(op, call, ref, pct=20, text=f"{action.title()}ing" if action != "stop" else "Stopping")
        svc = _service_of(op)
        from .power import mark_stale

        mark_stale(svc)  # a reading taken while the job ran is old news: the next page reads the server again
        log_activity(svc.user_id, action, message.format(hostname=svc.hostname), svc.id)
        audit(f"service.{action}", "service", svc.uuid, after=_refs(svc), detail=f"operation {op.id}",
              actor_type=payload.get("actor_type"), actor=_actor(payload))
        db.session.commit()
        return {"done": action, "text": {"start": "Started", "stop": "Stopped", "restart": "Restarted"}[action]}
    return _h


def _actor(payload):
    from .accounts import User

    aid = payload.get("actor_id")
    return db.session.get(User, aid) if aid else None


start_job = _simple_power("start", "start", "Started {hostname}.")
stop_job = _simple_power("stop", "stop", "Stopped {hostname}.")
restart_job = _simple_power("restart", "restart", "Restarted {hostname}.")


def _finish_busy(svc: Service, busy: str, op, event: str, message: str, before: dict) -> None:
    if not transition(svc, ACTIVE, expect=busy):
        raise FatalDriverError(f"service {svc.uuid} left {busy} while the job ran (now {svc.state})")
    log_activity(svc.user_id, event, message, svc.id)
    audit(f"service.{event}", "service", svc.uuid, before=before, after={"state": ACTIVE, **_refs(svc)},
          detail=f"operation {op.id}")
    db.session.commit()


@jobs.handler("service.reinstall", queue=jobs.DRIVER)
def reinstall(op, payload):
    """Fresh system disk from the service's image, with the same SSH keys as at creation."""
    svc = _service_of(op)
    if svc.kind == "dedicated":  # hardware inventory: hostbay.core.dedicated
        return _dedicated().reinstall(op, payload, svc)
    if svc.state == ACTIVE and (op.result or {}).get("done"):
        return {"state": ACTIVE}
    if svc.state != REINSTALLING:
        raise FatalDriverError(f"service {svc.uuid} is {svc.state}, not reinstalling")
    before = _refs(svc)
    drv, ref, spec = driver_for(svc), dict(svc.infra_ref or {}), build_spec(svc)
    spec = readiness.prepare(svc, op, drv, spec, "reinstall")
    ref = jobs.call_driver(op, drv.reinstall, ref, spec, _progress(op, 10, 95), pct=10, text="Preparing the reinstall")
    svc = db.session.get(Service, svc.id)
    svc.infra_ref = dict(ref or svc.infra_ref)
    readiness.wait(op, svc, "reinstall")
    _finish_busy(svc, REINSTALLING, op, "reinstall", f"{svc.hostname} was reinstalled with a fresh system.", before)
    return {"state": ACTIVE, "text": "Reinstalled"}


def _resize_like(op, busy: str, method: str, message: str):
    svc = _service_of(op)
    if svc.state != busy:
        raise FatalDriverError(f"service {svc.uuid} is {svc.state}, not {busy}")
    before = {**_refs(svc), "old_package_id": op.payload.get("old_package_id")}
    _say(op, 5, "Reserving capacity")
    adjust_reservation(svc)
    db.session.commit()
    _say(op, 10, "Changing the server")
    drv = driver_for(svc)
    if not drv.supports(method):
        raise FatalDriverError(f"driver {drv.name} does not support {method}")
    call, ref, spec = getattr(drv, method), dict(svc.infra_ref or {}), build_spec(svc)
    if method == "rebuild":  # a fresh system disk: wait for its guest like a new server
        spec = readiness.prepare(svc, op, drv, spec, "rebuild")
    ref = jobs.call_driver(op, call, ref, spec, _progress(op, 10, 95))
    svc = db.session.get(Service, svc.id)
    svc.infra_ref = dict(ref or svc.infra_ref)
    db.session.commit()
    network.apply_network_filter(svc, drv, op=op)
    if method == "rebuild":
        readiness.wait(op, svc, "rebuild")
    _finish_busy(svc, busy, op, "package_change", message.format(hostname=svc.hostname, package=svc.package.name),
                 before)
    return {"state": ACTIVE, "text": "Package changed"}


@jobs.handler("service.resize", queue=jobs.DRIVER)
def resize(op, payload):
    return _resize_like(op, RESIZING, "resize", "{hostname} now runs the {package} package.")


@jobs.handler("service.rebuild", queue=jobs.DRIVER)
def rebuild(op, payload):
    return _resize_like(op, REBUILDING, "rebuild", "{hostname} was rebuilt on the {package} package.")


@jobs.handler("service.suspend", queue=jobs.MONEY)
def suspend_job(op, payload):
    """Stop the server of a suspended service (the state moved already, in the sweep or the staff action)."""
    svc = _service_of(op)
    if svc.kind == "dedicated":  # hardware inventory: hostbay.core.dedicated
        return _dedicated().suspend(op, payload, svc)
    if svc.state != SUSPENDED:
        return {"skipped": svc.state}
    if svc.infra_ref and svc.kind == "vps":
        drv, ref = driver_for(svc), dict(svc.infra_ref)
        jobs.call_driver(op, drv.suspend, ref, pct=30, text="Suspending")
        svc = _service_of(op)
    audit("service.suspended.driver", "service", svc.uuid, after=_refs(svc), detail=f"operation {op.id}")
    db.session.commit()
    _notify("hostbay_service_suspended", service=svc, reason=payload.get("reason", "unpaid"))
    return {"state": SUSPENDED, "text": "Suspended"}


@jobs.handler("service.unsuspend", queue=jobs.MONEY)
def unsuspend_job(op, payload):
    """Start the server again and make the service active (after a renewal or a staff decision)."""
    svc = _service_of(op)
    if svc.kind == "dedicated":  # hardware inventory: hostbay.core.dedicated
        return _dedicated().unsuspend(op, payload, svc)
    if svc.state == ACTIVE:
        return {"state": ACTIVE}
    if svc.state != SUSPENDED:
        raise FatalDriverError(f"service {svc.uuid} is {svc.state}, cannot unsuspend")
    if svc.infra_ref and svc.kind == "vps":
        drv, ref = driver_for(svc), dict(svc.infra_ref)
        jobs.call_driver(op, drv.unsuspend, ref, pct=30, text="Starting your server again")
        svc = _service_of(op)
    if not transition(svc, ACTIVE, expect=SUSPENDED, suspended_at=None, suspension_reason=None):
        raise FatalDriverError(f"service {svc.uuid} changed state during unsuspend (now {svc.state})")
    log_activity(svc.user_id, "unsuspend", f"{svc.hostname} is active again.", svc.id)
    audit("service.unsuspended", "service", svc.uuid, before={"state": SUSPENDED},
          after={"state": ACTIVE, **_refs(svc)}, detail=f"operation {op.id}")
    db.session.commit()
    _notify("hostbay_service_unsuspended", service=svc)
    return {"state": ACTIVE, "text": "Active again"}


@jobs.handler("service.remove", queue=jobs.MONEY)
def remove_job(op, payload):
    """Delete the server and its volumes, release its IPs and node capacity; removal-queued → terminated (a
    cancelled service stays cancelled). Every step tolerates having run before."""
    svc = _service_of(op)
    if svc.kind == "dedicated":  # hardware inventory: hostbay.core.dedicated
        return _dedicated().remove(op, payload, svc)
    if svc.state not in (REMOVAL_QUEUED, CANCELLED, TERMINATED):
        raise FatalDriverError(f"service {svc.uuid} is {svc.state}; only queued or cancelled services are removed")
    before = {"state": svc.state, **_refs(svc)}
    if svc.infra_ref and svc.kind == "vps":
        drv, ref = driver_for(svc), dict(svc.infra_ref)
        jobs.call_driver(op, drv.delete, ref, pct=20, text="Deleting the server")
        svc = _service_of(op)
    _say(op, 60, "Releasing addresses")
    ipam.release_for_service(svc)
    release_reservation(svc)
    db.session.commit()
    if svc.state == REMOVAL_QUEUED:
        if not transition(svc, TERMINATED, expect=REMOVAL_QUEUED, ended_at=clock.now()):
            raise FatalDriverError(f"service {svc.uuid} changed state during removal")
        log_activity(svc.user_id, "remove", f"{svc.hostname} was removed.", svc.id)
    audit("service.removed", "service", svc.uuid, before=before, after={"state": svc.state},
          detail=f"operation {op.id}; addresses released; node capacity released")
    db.session.commit()
    _notify("hostbay_service_terminated", service=svc)
    return {"state": svc.state, "text": "Removed"}


from .history import _ledger_of, audit_trail, service_history  # noqa: E402,F401


__all__ = ["driver_for", "place", "build_spec", "NodeReservation", "service_history", "audit_trail"]
