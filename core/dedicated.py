"""The lifecycle of dedicated services: what the shared job kinds (``service.provision``, ``service.start``, …)
do when the service is a dedicated server. :mod:`hostbay.core.lifecycle` hands a dedicated service to the
function of the same name here; the state machine, the ``ACTIONS`` table, billing and the dashboard are the same
as for a VPS.

Where the server can be driven (a BMC and a loaded power driver) power actions go through the driver; an
install is automated when the server is marked ``auto_install`` and an installer plugin takes the
``hostbay_dedicated_install_requested`` hook: next boot PXE, the install request, then a power cycle. Everything
else becomes a datacenter task (:mod:`hostbay.core.dctasks`); the customer sees "Queued for datacenter handling"
and, when staff finish the task, the outcome (:func:`task_finished`).

Like the VPS handlers, each commits before a slow driver call and is safe to run again.
"""

from __future__ import annotations

import hashlib
import json
import secrets as _secrets
from datetime import datetime

from flask import current_app
from sqlalchemy import JSON, ForeignKey, String, select, update
from sqlalchemy.orm import Mapped, mapped_column

from . import clock, dctasks, inventory, jobs
from .activity import audit, log_activity
from .db import db, new_uuid
from .drivers import PowerState
from .errors import FatalDriverError
from .inventory import AVAILABLE, IN_USE, MAINTENANCE, PROVISIONING as HW_PROVISIONING, RESERVED, WIPING
from .services import (ACTIVE, CANCELLED, PROVISIONING, REINSTALLING, REMOVAL_QUEUED, SUSPENDED,
                       TERMINATED, Service, transition)

NO_SERVER = ("No matching server is free right now. Our staff have been notified and will set up your service.")


class InstallRequest(db.Model):
    """An automated install handed to an installer plugin: the secret of its answer-file URL (stored as a SHA-256
    hash) and whether it was fetched. Single use: ``used_at`` is set by one conditional UPDATE."""

    __tablename__ = "install_requests"

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True, default=new_uuid)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("services.id"), index=True)
    server_id: Mapped[int] = mapped_column(ForeignKey("hardware_servers.id"))
    installer: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict] = mapped_column(JSON, default=dict)  # hostname, image, ssh keys: what the answer needs
    created_at: Mapped[datetime] = mapped_column(default=lambda: clock.now())
    expires_at: Mapped[datetime] = mapped_column()
    used_at: Mapped[datetime | None] = mapped_column()


def new_install_request(service, server, installer: str, payload: dict, lifetime_hours: int = 24) -> tuple[
        InstallRequest, str]:
    """Create an install request and return it with its secret token (only the hash is stored)."""
    from datetime import timedelta

    token = _secrets.token_urlsafe(32)
    req = InstallRequest(token_sha256=hashlib.sha256(token.encode()).hexdigest(), service_id=service.id,
                         server_id=server.id, installer=installer, payload=payload,
                         expires_at=clock.now() + timedelta(hours=lifetime_hours))
    db.session.add(req)
    db.session.flush()
    return req, token


def redeem_install_request(token: str) -> InstallRequest | None:
    """The install request of ``token`` if it is unused and not expired; marks it used (once, atomically)."""
    digest = hashlib.sha256((token or "").encode()).hexdigest()
    now = clock.now()
    res = db.session.execute(update(InstallRequest).where(InstallRequest.token_sha256 == digest,
                                                          InstallRequest.used_at.is_(None),
                                                          InstallRequest.expires_at > now)
                             .values(used_at=now).execution_options(synchronize_session=False))
    if res.rowcount != 1:
        return None
    return db.session.scalar(select(InstallRequest).filter_by(token_sha256=digest))


# --------------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------------

def _registry():
    return current_app.extensions["hostbay"]


def power_driver_for(server):
    """The server's PowerDriver, configured from ``HOSTBAY_POWER_SETTINGS``, or None when it cannot be driven."""
    if not server.has_bmc:
        return None
    reg = _registry()
    try:
        cls = reg.driver_class("power", server.power_driver)
    except Exception:  # noqa: BLE001 - driver not loaded: the work goes to the datacenter queue
        return None
    raw = current_app.config.get("HOSTBAY_POWER_SETTINGS") or {}
    if isinstance(raw, str):
        raw = json.loads(raw or "{}")
    return cls(dict(raw.get(server.power_driver) or {}))


def _installer_loaded() -> bool:
    return bool(_registry().hook.hostbay_dedicated_install_requested.get_hookimpls())


def can_automate_install(server) -> bool:
    drv = power_driver_for(server)
    return bool(server.auto_install and drv is not None and drv.supports("boot_device") and _installer_loaded())


def _notify(hook: str, svc: Service, **kw) -> None:
    """Fire a service event hook once the transaction that holds the change commits (never if it rolls back):
    the one after-commit mechanism, :func:`hostbay.core.jobs.notify_after_commit`."""
    sid = svc.id
    jobs.notify_after_commit(hook, lambda: {"service": db.session.get(Service, sid), **kw})


def _say(op, pct: int, text: str) -> None:
    db.session.commit()
    op.progress(pct, text)


def _server(svc) -> inventory.HardwareServer:
    server = inventory.server_of(svc)
    if server is None:
        raise FatalDriverError(f"dedicated service {svc.uuid} has no hardware server",
                               customer_message=NO_SERVER)
    return server


def _image_and_keys(svc):
    from .accounts import SSHKey
    from .catalog import Image

    image = db.session.get(Image, svc.image_id) if svc.image_id else None
    keys = []
    if svc.ssh_key_ids:
        keys = [k.public_key for k in db.session.scalars(
            select(SSHKey).where(SSHKey.id.in_(list(svc.ssh_key_ids)), SSHKey.user_id == svc.user_id)
            .order_by(SSHKey.id))]
    return image, keys


def _queue_task(op, svc, server, kind: str, key: str, params: dict, activity_event: str, activity: str,
                requested_by=None) -> dctasks.DatacenterTask:
    task = dctasks.create(kind, server, service=svc, params=params, key=key, requested_by=requested_by,
                          requested_by_type=None if requested_by else "system")
    log_activity(svc.user_id, activity_event, activity, svc.id)
    _say(op, 100, dctasks.QUEUED_TEXT)
    return task


def _requester(payload):
    from .accounts import User

    aid = payload.get("actor_id")
    return db.session.get(User, aid) if aid else None


# --------------------------------------------------------------------------------------------------------------
# Provisioning and reinstall
# --------------------------------------------------------------------------------------------------------------

def _auto_install(op, svc, server, reinstall: bool) -> bool:
    """PXE next boot, the installer plugin's request, a power cycle. False when no installer took it."""
    drv = power_driver_for(server)
    image, keys = _image_and_keys(svc)
    _say(op, 30, "Preparing the automated installation")
    answer = _registry().hook.hostbay_dedicated_install_requested(service=svc, server=server, image=image,
                                                                   ssh_keys=list(keys))
    if not answer:
        db.session.rollback()
        return False
    audit("server.install_requested", "server", server.uuid, after={"service": svc.uuid, "reinstall": reinstall,
                                                                     "image": image.name if image else None})
    target = server.power_target()
    jobs.call_driver(op, drv.set_boot_device, target, "pxe", efi=server.boot_efi, pct=50,
                     text="Setting the next boot to the network installer")
    jobs.call_driver(op, drv.power_cycle, target, pct=70, text="Restarting the server into the installer")
    return True


def provision(op, payload, svc: Service):
    """Set up a dedicated service that :func:`hostbay.core.lifecycle.provision` moved to provisioning (it checks
    the state once for every kind)."""
    _say(op, 5, "Preparing your server")
    server = inventory.server_of(svc)
    if server is None:
        try:
            server = inventory.reserve_for(svc)
        except inventory.OutOfStock:
            raise FatalDriverError(f"no available server matches package {svc.package.slug} for {svc.uuid}",
                                   customer_message=NO_SERVER) from None
    if server.state == RESERVED:
        inventory.move(server, HW_PROVISIONING, expect=RESERVED)
    db.session.commit()
    if svc.package.ipv4_count or svc.package.ipv6 or svc.package.pool_counts():
        from . import ipam

        _say(op, 10, "Reserving IP addresses")
        ipam.allocate_for_service(svc)
        db.session.commit()
    open_install = db.session.scalar(select(dctasks.DatacenterTask).where(
        dctasks.DatacenterTask.service_id == svc.id, dctasks.DatacenterTask.kind == dctasks.INSTALL_OS,
        dctasks.DatacenterTask.state.in_((dctasks.OPEN, dctasks.IN_PROGRESS))))
    if open_install is not None:
        return {"queued": open_install.uuid}
    if can_automate_install(server) and _auto_install(op, svc, server, reinstall=False):
        svc = db.session.get(Service, svc.id)
        server = _server(svc)
        inventory.move(server, IN_USE, expect={HW_PROVISIONING, RESERVED})
        if not transition(svc, ACTIVE, expect=PROVISIONING):
            raise FatalDriverError(f"service {svc.uuid} left provisioning while being set up (now {svc.state})")
        log_activity(svc.user_id, "create", f"{svc.hostname} was restarted into the automated operating system "
                     "installer; it is yours to use once the installation finishes.", svc.id)
        audit("service.provisioned", "service", svc.uuid, before={"state": PROVISIONING},
              after={"state": ACTIVE, "server": server.name, "automated": True}, detail=f"operation {op.id}")
        _notify("hostbay_service_provisioned", svc)
        db.session.commit()
        _say(op, 100, "Your server is installing its operating system")
        return {"state": ACTIVE, "automated": True}
    image, _keys = _image_and_keys(svc)
    task = _queue_task(op, svc, server, dctasks.INSTALL_OS, f"install:{svc.uuid}:provision",
                       {"image": image.name if image else None, "hostname": svc.hostname},
                       "create", f"Setting up {svc.hostname}: {dctasks.QUEUED_TEXT.lower()}.",
                       requested_by=svc.user)
    return {"queued": task.uuid}


def reinstall(op, payload, svc: Service):
    if svc.state == ACTIVE and (op.result or {}).get("done"):
        return {"state": ACTIVE}
    if svc.state != REINSTALLING:
        raise FatalDriverError(f"service {svc.uuid} is {svc.state}, not reinstalling")
    server = _server(svc)
    key = f"install:{svc.uuid}:reinstall:{op.id}"
    if db.session.scalar(select(dctasks.DatacenterTask.id).filter_by(key=key)) is not None:
        return {"queued": True}
    if can_automate_install(server) and _auto_install(op, svc, server, reinstall=True):
        svc = db.session.get(Service, svc.id)
        if not transition(svc, ACTIVE, expect=REINSTALLING):
            raise FatalDriverError(f"service {svc.uuid} left reinstalling while the job ran (now {svc.state})")
        log_activity(svc.user_id, "reinstall", f"{svc.hostname} was restarted into the automated installer for a "
                     "fresh system; the installation runs on the server now.", svc.id)
        audit("service.reinstall", "service", svc.uuid, after={"state": ACTIVE, "server": server.name,
                                                                "automated": True}, detail=f"operation {op.id}")
        db.session.commit()
        return {"state": ACTIVE, "done": True}
    image, _keys = _image_and_keys(svc)
    task = _queue_task(op, svc, server, dctasks.INSTALL_OS, key,
                       {"image": image.name if image else None, "hostname": svc.hostname, "reinstall": True},
                       "reinstall", f"Reinstalling {svc.hostname}: {dctasks.QUEUED_TEXT.lower()}.",
                       requested_by=_requester(payload))
    return {"queued": task.uuid}


# --------------------------------------------------------------------------------------------------------------
# Power, suspension, removal
# --------------------------------------------------------------------------------------------------------------

_POWER_WORDS = {"start": ("on", "Started {h}.", "Starting"), "stop": ("off", "Stopped {h}.", "Stopping"),
                "restart": ("cycle", "Restarted {h}.", "Restarting")}


def _drive(op, server, action: str) -> None:
    """One power action through the driver-call template (transaction ended, heartbeat kept, errors mapped)."""
    drv = power_driver_for(server)
    target = server.power_target()
    calls = {"on": (drv.power_on, {}), "off": (drv.power_off, {}), "soft_off": (drv.power_off, {"soft": True}),
             "cycle": (drv.power_cycle, {})}
    if action not in calls:
        raise FatalDriverError(f"unknown power action {action!r}")
    fn, kwargs = calls[action]
    jobs.call_driver(op, fn, target, **kwargs)


def power(op, payload, svc: Service, action: str):
    if svc.state != ACTIVE:
        raise FatalDriverError(f"cannot {action} service {svc.uuid} in state {svc.state}",
                               customer_message="The server is not active.")
    server = _server(svc)
    what, message, doing = _POWER_WORDS[action]
    if power_driver_for(server) is None:
        task = _queue_task(op, svc, server, dctasks.POWER, f"power:{svc.uuid}:{op.id}", {"action": what},
                           action, f"{doing} {svc.hostname}: {dctasks.QUEUED_TEXT.lower()}.",
                           requested_by=_requester(payload))
        return {"queued": task.uuid}
    _say(op, 20, doing)
    _drive(op, server, "soft_off" if action == "stop" else what)
    svc = db.session.get(Service, svc.id)
    log_activity(svc.user_id, action, message.format(h=svc.hostname), svc.id)
    audit(f"service.{action}", "service", svc.uuid, after={"server": server.name}, detail=f"operation {op.id}",
          actor=_requester(payload), actor_type=payload.get("actor_type"))
    db.session.commit()
    return {"done": action}


def suspend(op, payload, svc: Service):
    if svc.state != SUSPENDED:
        return {"skipped": svc.state}
    server = inventory.server_of(svc)
    if server is not None and server.state == IN_USE:
        if power_driver_for(server) is None:
            dctasks.create(dctasks.POWER, server, service=svc, params={"action": "off", "reason": "suspended"},
                           key=f"power:{svc.uuid}:{op.id}")
        else:
            _say(op, 30, "Suspending")
            _drive(op, server, "off")
    audit("service.suspended.driver", "service", svc.uuid, after={"server": getattr(server, "name", None)},
          detail=f"operation {op.id}")
    _notify("hostbay_service_suspended", svc, reason=payload.get("reason", "unpaid"))
    db.session.commit()
    return {"state": SUSPENDED}


def unsuspend(op, payload, svc: Service):
    if svc.state == ACTIVE:
        return {"state": ACTIVE}
    if svc.state != SUSPENDED:
        raise FatalDriverError(f"service {svc.uuid} is {svc.state}, cannot unsuspend")
    server = inventory.server_of(svc)
    queued = False
    if server is not None and server.state == IN_USE:
        if power_driver_for(server) is None:
            dctasks.create(dctasks.POWER, server, service=svc, params={"action": "on", "reason": "reactivated"},
                           key=f"power:{svc.uuid}:{op.id}")
            queued = True
        else:
            _say(op, 30, "Starting your server again")
            _drive(op, server, "on")
            svc = db.session.get(Service, svc.id)
    if not transition(svc, ACTIVE, expect=SUSPENDED, suspended_at=None):
        raise FatalDriverError(f"service {svc.uuid} changed state during unsuspend (now {svc.state})")
    log_activity(svc.user_id, "unsuspend", f"{svc.hostname} is active again" + (
        f"; powering it on is {dctasks.QUEUED_TEXT.lower()}." if queued else " and powered on."), svc.id)
    audit("service.unsuspended", "service", svc.uuid, before={"state": SUSPENDED}, after={"state": ACTIVE},
          detail=f"operation {op.id}")
    _notify("hostbay_service_unsuspended", svc)
    db.session.commit()
    return {"state": ACTIVE}


def remove(op, payload, svc: Service):
    """Power the server off, hand it to the wipe queue (wiping → available when staff finish the wipe), release
    the service's addresses; removal-queued → terminated."""
    from . import ipam

    if svc.state not in (REMOVAL_QUEUED, CANCELLED, TERMINATED):
        raise FatalDriverError(f"service {svc.uuid} is {svc.state}; only queued or cancelled services are removed")
    server = inventory.server_of(svc)
    if server is not None:
        if server.state in (IN_USE, HW_PROVISIONING) and power_driver_for(server) is not None:
            _say(op, 20, "Powering the server off")
            _drive(op, server, "off")
            server = db.session.get(inventory.HardwareServer, server.id)
        if server.state in (RESERVED,):
            inventory.move(server, AVAILABLE, expect=RESERVED, service_id=None)
        elif server.state != WIPING:
            inventory.move(server, WIPING, expect={IN_USE, HW_PROVISIONING})
        if server.state == WIPING:
            dctasks.create(dctasks.WIPE, server, service=svc, key=f"wipe:{svc.uuid}",
                           params={"after": payload.get("reason", "removed")})
        for t in db.session.scalars(select(dctasks.DatacenterTask).where(
                dctasks.DatacenterTask.service_id == svc.id, dctasks.DatacenterTask.kind != dctasks.WIPE,
                dctasks.DatacenterTask.state.in_((dctasks.OPEN, dctasks.IN_PROGRESS)))):
            t.state, t.finished_at = dctasks.FAILED, clock.now()
            t.notes = (t.notes + "\n" if t.notes else "") + "Closed: the service was removed."
    svc = db.session.get(Service, svc.id)
    ipam.release_for_service(svc)
    db.session.commit()
    if svc.state == REMOVAL_QUEUED:
        if not transition(svc, TERMINATED, expect=REMOVAL_QUEUED, ended_at=clock.now()):
            raise FatalDriverError(f"service {svc.uuid} changed state during removal")
        log_activity(svc.user_id, "remove", f"{svc.hostname} was removed.", svc.id)
    audit("service.removed", "service", svc.uuid, after={"state": svc.state, "server": getattr(server, "name", None),
                                                         "server_state": getattr(server, "state", None)},
          detail=f"operation {op.id}; addresses released; server handed to the wipe queue")
    _notify("hostbay_service_terminated", svc)
    db.session.commit()
    return {"state": svc.state}


# --------------------------------------------------------------------------------------------------------------
# Datacenter outcomes
# --------------------------------------------------------------------------------------------------------------

def task_finished(task: dctasks.DatacenterTask, actor) -> None:
    """Called by :func:`dctasks.finish` in the staff request's transaction: move the service and the server on
    and tell the customer the outcome."""
    server = db.session.get(inventory.HardwareServer, task.server_id)
    svc = db.session.get(Service, task.service_id) if task.service_id else None
    ok = task.state == dctasks.DONE
    if task.kind == dctasks.WIPE:
        if ok:
            inventory.move(server, AVAILABLE, expect=WIPING, service_id=None)
        else:
            inventory.move(server, MAINTENANCE, expect=WIPING, service_id=None)
        return
    if svc is None:
        return
    if task.kind == dctasks.INSTALL_OS:
        reinstall_ = bool((task.params or {}).get("reinstall"))
        busy = REINSTALLING if reinstall_ else PROVISIONING
        event = "reinstall" if reinstall_ else "create"
        if ok and svc.state == busy:
            if not reinstall_:
                inventory.move(server, IN_USE, expect={HW_PROVISIONING, RESERVED})
            transition(svc, ACTIVE, expect=busy)
            log_activity(svc.user_id, event, f"{svc.hostname} was {'reinstalled' if reinstall_ else 'set up'} by "
                         "our datacenter team and is ready.", svc.id)
            audit(f"service.{'reinstall' if reinstall_ else 'provisioned'}", "service", svc.uuid, actor=actor,
                  before={"state": busy}, after={"state": ACTIVE, "server": server.name, "task": task.uuid})
            if not reinstall_:
                _notify("hostbay_service_provisioned", svc)
        elif not ok:
            if reinstall_ and svc.state == REINSTALLING:
                transition(svc, ACTIVE, expect=REINSTALLING)
            log_activity(svc.user_id, event, f"Our datacenter team could not {'reinstall' if reinstall_ else 'set up'} "
                         f"{svc.hostname}. Our staff will contact you.", svc.id)
        return
    if task.kind == dctasks.POWER:
        action = (task.params or {}).get("action", "")
        words = {"on": ("start", "started"), "off": ("stop", "stopped"), "cycle": ("restart", "restarted")}
        event, done = words.get(action, ("restart", "handled"))
        if ok:
            log_activity(svc.user_id, event, f"{svc.hostname} was {done} by our datacenter team.", svc.id)
        else:
            log_activity(svc.user_id, event, f"Our datacenter team could not complete the power action on "
                         f"{svc.hostname}. Our staff will contact you.", svc.id)
        return
    if task.kind == dctasks.HARDWARE_SWAP:
        log_activity(svc.user_id, "restart", f"Hardware work on {svc.hostname} was "
                     f"{'completed' if ok else 'not completed; our staff will contact you'}.", svc.id)


def staff_power_task(server, action: str, actor, notes: str = "") -> dctasks.DatacenterTask:
    """Staff: a power action by hand at the rack (servers without a BMC, or a BMC that does not answer)."""
    svc = db.session.get(Service, server.service_id) if server.service_id else None
    return dctasks.create(dctasks.POWER, server, service=svc, params={"action": action}, requested_by=actor,
                          notes=notes)


def power_state_of(server) -> PowerState:
    drv = power_driver_for(server)
    if drv is None:
        return PowerState.UNKNOWN
    return drv.power_state(server.power_target())
