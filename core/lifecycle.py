"""Service lifecycle: the job handlers that drive servers, and the renewal, retention and removal sweeps.
Placement lives in :mod:`.placement`, the set-based SQL in :mod:`.bulk`, the history views in :mod:`.history`
(their names stay importable from here).

Every handler is safe to re-run after a crash: it reads the service's state, skips the steps that already
happened (a node reservation exists, the driver's ``create`` is idempotent on the service UUID, a state
transition is a conditional UPDATE) and commits before each slow driver call, so a worker that dies leaves a
consistent row that the next attempt continues from. A handler that fails leaves the operation ``failed`` and the
service in its busy state (never silently ``active``); staff retry the operation from the service's staff page.

Renewal (``renewal_sweep``) works in set-based batches: one transaction claims a batch of due services
(``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so several workers share the work), locks the customers' wallets in id
order, walks each customer's due services in renewal order against the locked balance, and then writes all ledger
entries (``ON CONFLICT DO NOTHING`` on the idempotency key ``renewal:<uuid>:<renews_at>``), wallet updates, service
updates, suspension operations, notices, activity and audit rows with a handful of statements. A batch commits
as a whole or not at all, so a killed worker leaves nothing half-done, and a re-run finds only what is still due.

Recovery after a top-up: core's built-in plugin (:mod:`hostbay.core.builtin`) implements ``hostbay_wallet_credited``
with :func:`queue_retry_renewals`, which enqueues ``lifecycle.retry_renewals`` for the
customer; that job renews suspended services inside the retention window while the balance covers them.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import select, update

from . import clock, ipam, jobs, ledger, network, readiness
from .activity import ActivityEntry, AuditEntry, audit, log_activity
from .catalog import Image, add_cycle
from .db import db, is_postgres, new_uuid
from .drivers import ServerSpec
from .errors import ActionNotAllowed, FatalDriverError, InsufficientFunds
from .ledger import LedgerEntry, Wallet, debit
from .money import format_cents
from .services import (ACTIVE, CANCELLED, ENDED, PENDING, PROVISIONING, REBUILDING, REINSTALLING, REMOVAL_QUEUED,
                       RESIZING, SUSPENDED, TERMINATED, Service, transition, transition_bulk)

log = logging.getLogger(__name__)

RENEWAL_BATCH = 10000  # services per transaction; bench/renewal_sweep.py measures 5000 and 10000
RENEWAL_EVERY = 30       # seconds between scheduled renewal sweeps: a due service is renewed within ~40 s
RETENTION_EVERY = 600
NOTICES_EVERY = 900

from .placement import (NodeReservation, _need, _reserve_on, adjust_reservation, place,  # noqa: E402,F401
                        release_reservation)


# ==============================================================================================================
# Helpers
# ==============================================================================================================

def renewal_key(service_uuid: str, renews_at: datetime) -> str:
    """One ledger idempotency key per service and period: gateway-triggered renewals and sweeps share it."""
    return f"renewal:{service_uuid}:{renews_at:%Y%m%dT%H%M%S}"


from .policy import retention_days  # noqa: E402,F401 - kept importable from here


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


# ==============================================================================================================
# Renewal
# ==============================================================================================================

def renew_service(service: Service, actor=None, actor_type: str = "customer"):
    """Pay the current period of ``service`` now from its wallet and extend it by one cycle; a suspended service
    inside the retention window is then unsuspended by its driver (returns that operation). Raises
    InsufficientFunds (nothing written) or ActionNotAllowed. Shares the sweep's idempotency key."""
    svc = db.session.scalar(select(Service).where(Service.id == service.id).with_for_update(of=Service)
                            .execution_options(populate_existing=True))
    now = clock.now()
    if svc.state == REMOVAL_QUEUED or svc.state in ENDED:
        raise ActionNotAllowed("This service is queued for removal and can no longer be recovered. "
                               "Please order a new service.")
    if svc.state == SUSPENDED and not getattr(actor, "is_staff", False) and not _suspended_for_nonpayment(svc):
        raise ActionNotAllowed("This service was suspended by our staff; please open a support ticket.")
    if svc.state == SUSPENDED and svc.renews_at > now:
        raise ActionNotAllowed("This period is paid already; the service is being reactivated.")
    if svc.state not in (ACTIVE, SUSPENDED):
        raise ActionNotAllowed("This service cannot be renewed right now.")
    old = svc.renews_at
    new = add_cycle(old, svc.cycle)
    if svc.price_cents > 0:
        debit(svc.user_id, svc.price_cents, kind="renewal", key=renewal_key(svc.uuid, old),
              description=f"Renewal of {svc.hostname} until {new:%Y-%m-%d}", reference=("service", svc.uuid),
              actor_type=actor_type, actor_id=getattr(actor, "id", None))
    res = db.session.execute(update(Service).where(Service.id == svc.id, Service.renews_at == old)
                             .values(period_start=old, renews_at=new, updated_at=now)
                             .execution_options(synchronize_session=False))
    if res.rowcount != 1:
        raise ActionNotAllowed("This service was renewed a moment ago.")
    db.session.refresh(svc)
    if svc.price_cents <= 0:  # no ledger entry records it
        log_activity(svc.user_id, "renew", f"Renewed {svc.hostname} until {new:%Y-%m-%d}.", svc.id)
    audit("service.renewed", "service", svc.uuid, actor=actor, actor_type=None if actor else "system",
          before={"renews_at": old.isoformat(), "state": svc.state},
          after={"renews_at": new.isoformat(), "price_cents": svc.price_cents})
    op = None
    if svc.state == SUSPENDED:
        op = jobs.enqueue("service.unsuspend", key=f"unsuspend:{svc.uuid}:{old:%Y%m%dT%H%M%S}", service=svc,
                          title="Reactivate server", payload={"reason": "renewed"})
    return op


def _suspended_for_nonpayment(svc: Service) -> bool:
    """Whether the service's latest suspension was the renewal sweep's (a staff suspension is lifted by staff, not
    by a payment)."""
    if svc.suspension_reason is not None:
        return svc.suspension_reason == "unpaid"
    last = db.session.scalar(select(jobs.Operation.payload).where(jobs.Operation.service_id == svc.id,
                                                                   jobs.Operation.kind == "service.suspend")
                             .order_by(jobs.Operation.created_at.desc()).limit(1))
    return last is None or (last or {}).get("reason") == "unpaid"


@jobs.handler("lifecycle.retry_renewals", queue=jobs.MONEY)
def retry_renewals(op, payload):
    """After a wallet credit: renew the customer's suspended services (oldest first) while the balance covers
    them; each renewal is its own transaction."""
    user_id = payload["user_id"]
    cutoff = clock.now()
    ids = db.session.scalars(select(Service.id).where(Service.user_id == user_id, Service.state == SUSPENDED,
                                                      Service.renews_at <= cutoff)
                             .order_by(Service.renews_at, Service.id)).all()
    renewed = []
    for sid in ids:
        svc = db.session.get(Service, sid)
        if not _suspended_for_nonpayment(svc):
            continue  # suspended by staff: a payment does not lift it
        try:
            renew_service(svc, actor=None, actor_type="system")
            db.session.commit()
            renewed.append(svc.uuid)
        except (InsufficientFunds, ActionNotAllowed):
            db.session.rollback()
            break
    return {"renewed": renewed}


def queue_retry_renewals(user, entry) -> None:
    """Core's ``hostbay_wallet_credited`` listener (see :mod:`hostbay.core.builtin`): fired after the credit
    committed, in a fresh session that the event mechanism commits afterwards."""
    if user is None:
        return
    if db.session.scalar(select(Service.id).where(Service.user_id == user.id, Service.state == SUSPENDED,
                                                  Service.renews_at <= clock.now()).limit(1)) is None:
        return  # nothing to renew: no operation row for every top-up
    jobs.enqueue("lifecycle.retry_renewals", key=f"retry-renewals:{getattr(entry, 'idempotency_key', new_uuid())}",
                 user_id=user.id, payload={"user_id": user.id}, title="Renew suspended services")


def _ts(d: datetime) -> str:
    return f"{d:%Y%m%dT%H%M%S}"


def renewal_sweep(now: datetime | None = None, batch_size: int = RENEWAL_BATCH, max_batches: int | None = None,
                  dispatch: bool = True) -> dict:
    """Renew every active service whose ``renews_at`` is due, in batches; suspend those the wallet cannot cover;
    cancel those set to end with their period. Safe to run concurrently and repeatedly."""
    now = now or clock.now()
    totals = {"renewed": 0, "suspended": 0, "cancelled": 0, "batches": 0}
    while max_batches is None or totals["batches"] < max_batches:
        got = _renewal_batch(now, batch_size, dispatch)
        if got is None:
            break
        totals["batches"] += 1
        for k in ("renewed", "suspended", "cancelled"):
            totals[k] += got[k]
    from . import metrics

    metrics.SWEEPS.inc()  # after the last batch committed (or found nothing due)
    return totals


def due_query(now: datetime, batch_size: int = RENEWAL_BATCH):
    """The sweep's due-time query: active services whose ``renews_at`` has come, a batch of them, locked (rows
    another sweep holds are skipped on PostgreSQL). The index ``ix_services_state_renews_at`` answers it: with
    nothing due it is one index probe, whatever the number of services."""
    s = Service.__table__
    q = (select(s.c.id, s.c.uuid, s.c.user_id, s.c.hostname, s.c.price_cents, s.c.period_start, s.c.renews_at,
                s.c.cycle, s.c.cancel_at_period_end)
         .where(s.c.state == ACTIVE, s.c.renews_at <= now)
         .order_by(s.c.user_id, s.c.renews_at, s.c.id).limit(batch_size))
    if is_postgres():
        q = q.with_for_update(skip_locked=True, of=s)
    return q


def _renewal_batch(now: datetime, batch_size: int, dispatch: bool, check_paid: bool = False) -> dict | None:
    pg = is_postgres()
    s = Service.__table__
    rows = db.session.execute(due_query(now, batch_size)).all()
    if not rows:
        db.session.rollback()
        return None

    cancels = [r for r in rows if r.cancel_at_period_end]
    due = [r for r in rows if not r.cancel_at_period_end]
    user_ids = sorted({r.user_id for r in due})
    w = Wallet.__table__
    wq = select(w.c.id, w.c.user_id, w.c.balance_cents).where(w.c.user_id.in_(user_ids)).order_by(w.c.id)
    if pg:
        wq = wq.with_for_update()
    wallets = {r.user_id: [r.id, r.balance_cents] for r in db.session.execute(wq)} if user_ids else {}
    missing = [u for u in user_ids if u not in wallets]
    if missing:  # a customer who never had a wallet: create it so the suspension notice can quote a balance
        from .ledger import wallet_for

        for u in missing:
            wallets[u] = [wallet_for(u).id, 0]
    stamps: dict = {}  # formatted dates, computed once per distinct date rather than once per service
    for r in due:
        if r.renews_at not in stamps:
            stamps[r.renews_at] = _ts(r.renews_at)
    keys = {r.id: f"renewal:{r.uuid}:{stamps[r.renews_at]}" for r in due}
    le = LedgerEntry.__table__
    paid: set = set()
    if not check_paid:
        pass  # the ledger insert's ON CONFLICT tells whether a key exists; only then is the batch redone with a look
    elif pg:
        paid = set(_pg_exec("SELECT idempotency_key FROM ledger_entries WHERE idempotency_key = ANY(%(k)b)",
                            {"k": list(keys.values())}, fetch=True))
    else:
        paid = set(db.session.scalars(select(le.c.idempotency_key)
                                      .where(le.c.idempotency_key.in_(list(keys.values())))))
    cycles: dict = {}

    ledger_rows, wallet_debits, renew_rows, suspend_rows = [], defaultdict(int), [], []
    for r in due:  # ordered by customer, then renewal date: each customer's balance is spent oldest first
        wallet = wallets[r.user_id]
        new = cycles.get((r.renews_at, r.cycle))
        if new is None:
            new = cycles[(r.renews_at, r.cycle)] = add_cycle(r.renews_at, r.cycle)
            stamps[new] = f"{new:%Y-%m-%d}"
        if keys[r.id] in paid or r.price_cents <= 0:
            renew_rows.append((r, new, False))
        elif wallet[1] >= r.price_cents:
            wallet[1] -= r.price_cents
            wallet_debits[wallet[0]] += r.price_cents
            ledger_rows.append({
                "uuid": None if pg else new_uuid(), "wallet_id": wallet[0], "idempotency_key": keys[r.id], "kind": "renewal",
                "amount_cents": -r.price_cents, "balance_after_cents": wallet[1], "reference_type": "service",
                "reference_id": r.uuid, "actor_type": "system", "actor_id": None,
                "description": f"Renewal of {r.hostname} until {stamps[new]}"[:255], "note": None,
                "created_at": now})
            renew_rows.append((r, new, True))
        else:
            suspend_rows.append((r, wallet[1]))

    if ledger_rows:
        inserted = _insert_ignore(le, ledger_rows, le.c.idempotency_key, returning=le.c.idempotency_key)
        if len(inserted) != len(ledger_rows):
            # some period was paid already (a gateway renewal): redo the batch, renewing those without a charge
            db.session.rollback()
            if check_paid:
                raise RuntimeError("renewal keys appeared while the batch held its locks")
            return _renewal_batch(now, batch_size, dispatch, check_paid=True)
    if wallet_debits:
        _bulk_update(w, "id", [{"k": wid, "amt": -amt} for wid, amt in wallet_debits.items()],
                     {"balance_cents": ("add", "amt")}, guard='"wallets"."balance_cents" + v.amt >= 0',
                     expect=len(wallet_debits))
    # one UPDATE for the batch: renewed services move their period (their state stays); the suspended ones change
    # state through the bulk form of the one state table
    svc_rows = [{"k": r.id, "ps": r.renews_at, "ra": new, "ua": now} for r, new, _ in renew_rows]
    _bulk_update(s, "id", svc_rows, {"period_start": "ps", "renews_at": "ra", "updated_at": "ua"},
                 guard=f"\"services\".\"state\" = '{ACTIVE}'", expect=len(svc_rows))
    if suspend_rows:
        moved = transition_bulk([r.id for r, _ in suspend_rows], SUSPENDED, expect=ACTIVE, suspended_at=now,
                                suspension_reason="unpaid")
        if len(moved) != len(suspend_rows):  # the batch holds the rows' locks: nobody else can have moved them
            raise RuntimeError(f"bulk suspension moved {len(moved)} of {len(suspend_rows)} services")

    # A renewal's record is its ledger entry (customer-safe description, actor, service reference, amount and
    # balance after): the service pages show it in the activity log and the audit trail, so the sweep writes
    # no second row per renewal. State changes (suspension, cancellation) get their own activity and audit rows.
    acts, audits, notices, ops = [], [], [], []
    for r, new, charged in renew_rows:
        if not charged and r.price_cents <= 0:  # free services: no ledger entry, so log the renewal here
            acts.append({"user_id": r.user_id, "service_id": r.id, "event": "renew", "created_at": now,
                         "message": f"Renewed {r.hostname} until {new:%Y-%m-%d}."})
            audits.append({"actor_type": "system", "actor_id": None, "action": "service.renewed",
                           "target_type": "service", "target_id": r.uuid,
                           "before": {"renews_at": r.renews_at.isoformat()}, "after": {"renews_at": new.isoformat()},
                           "detail": "renewal sweep (free)", "created_at": now})
    if suspend_rows:
        from .notices import suspension_notice_row

        for r, balance in suspend_rows:
            short = r.price_cents - balance
            acts.append({"user_id": r.user_id, "service_id": r.id, "event": "suspend", "created_at": now,
                         "message": f"{r.hostname} was suspended: the renewal of {format_cents(r.price_cents)} "
                                    f"could not be paid from your wallet ({format_cents(balance)}). Add at least "
                                    f"{format_cents(short)} within {retention_days()} days and renew it to keep it."})
            audits.append({"actor_type": "system", "actor_id": None, "action": "service.suspended",
                           "target_type": "service", "target_id": r.uuid,
                           "before": {"state": ACTIVE, "renews_at": r.renews_at.isoformat()},
                           "after": {"state": SUSPENDED, "balance_cents": balance, "price_cents": r.price_cents},
                           "detail": "renewal sweep: insufficient balance", "created_at": now})
            ops.append({"id": None if pg else new_uuid(), "key": f"suspend:{r.uuid}:{stamps[r.renews_at]}", "kind": "service.suspend",
                        "service_id": r.id, "user_id": r.user_id, "payload": {"reason": "unpaid"},
                        "state": jobs.QUEUED, "title": "Suspend server", "progress_pct": 0,
                        "progress_text": "Queued", "attempts": 0, "max_attempts": 4, "created_at": jobs._utcnow()})
            notices.append(suspension_notice_row(r, balance, now))
    cancelled = set(transition_bulk([r.id for r in cancels], CANCELLED, expect=ACTIVE, ended_at=now))
    for r in cancels:
        if r.id in cancelled:
            acts.append({"user_id": r.user_id, "service_id": r.id, "event": "cancel", "created_at": now,
                         "message": f"{r.hostname} ended with its billing period, as you asked."})
            audits.append({"actor_type": "system", "actor_id": None, "action": "service.cancelled",
                           "target_type": "service", "target_id": r.uuid, "before": {"state": ACTIVE},
                           "after": {"state": CANCELLED}, "detail": "cancelled at period end", "created_at": now})
            ops.append({"id": None if pg else new_uuid(), "key": f"remove:{r.uuid}", "kind": "service.remove", "service_id": r.id,
                        "user_id": r.user_id, "payload": {"reason": "cancelled"}, "state": jobs.QUEUED,
                        "title": "Remove server", "progress_pct": 0, "progress_text": "Queued", "attempts": 0,
                        "max_attempts": 4, "created_at": jobs._utcnow()})
    _bulk_insert(ActivityEntry.__table__, acts)
    _bulk_insert(AuditEntry.__table__, audits)
    op_t, new_ops = jobs.Operation.__table__, {}
    for kind in ("service.suspend", "service.remove"):  # one insert per kind: the dispatch knows each one's queue
        rows_of = [o for o in ops if o["kind"] == kind]
        if rows_of:
            new_ops[kind] = _insert_ignore(op_t, rows_of, op_t.c.key, returning=op_t.c.id)
    if notices:
        from .notices import Notice

        _insert_ignore(Notice.__table__, notices, Notice.__table__.c.key)
    if dispatch:
        for kind, ids in new_ops.items():
            if ids:
                jobs.dispatch_after_commit(ids, kind)
    db.session.commit()
    from . import metrics  # counted once the batch is committed (a rolled-back batch counts nothing)

    metrics.SWEEP_SERVICES.labels("renewed").inc(len(renew_rows))
    metrics.SWEEP_SERVICES.labels("suspended").inc(len(suspend_rows))
    metrics.SWEEP_SERVICES.labels("cancelled").inc(len(cancelled))
    return {"renewed": len(renew_rows), "suspended": len(suspend_rows), "cancelled": len(cancels)}


from .bulk import _bulk_insert, _bulk_update, _insert_ignore, _pg_array_type, _pg_exec, _pg_param  # noqa: E402,F401


@jobs.handler("lifecycle.renewal_sweep", every=RENEWAL_EVERY, queue=jobs.MONEY)
def renewal_sweep_job(op, payload):
    return renewal_sweep(batch_size=int(payload.get("batch", RENEWAL_BATCH)))


from .history import _ledger_of, audit_trail, service_history  # noqa: E402,F401


# ==============================================================================================================
# Retention
# ==============================================================================================================

def retention_sweep(now: datetime | None = None, limit: int = 5000) -> int:
    """Queue for removal every service suspended for unpaid renewal longer than the retention window (both its
    paid period and its suspension ended that long ago; a staff suspension of a paid service is kept)."""
    now = now or clock.now()
    cutoff = now - timedelta(days=retention_days())
    q = select(Service).where(Service.state == SUSPENDED, Service.suspended_at.is_not(None),
                              Service.suspension_reason.is_distinct_from("staff"),
                              Service.suspended_at <= cutoff, Service.renews_at <= cutoff).limit(limit)
    if is_postgres():
        q = q.with_for_update(skip_locked=True, of=Service)
    count = 0
    for svc in db.session.scalars(q).unique().all():
        if not transition(svc, REMOVAL_QUEUED, expect=SUSPENDED, removal_queued_at=now):
            continue
        log_activity(svc.user_id, "remove", f"{svc.hostname} was not renewed within {retention_days()} days of its "
                     "suspension and is being removed.", svc.id)
        audit("service.removal_queued", "service", svc.uuid, before={"state": SUSPENDED},
              after={"state": REMOVAL_QUEUED, **_refs(svc)}, detail=f"retention of {retention_days()} days over")
        jobs.enqueue("service.remove", key=f"remove:{svc.uuid}", service=svc, title="Remove server",
                     payload={"reason": "retention"})
        count += 1
    db.session.commit()
    from . import metrics

    metrics.SWEEP_SERVICES.labels("removal_queued").inc(count)  # after the commit
    return count


@jobs.handler("lifecycle.retention_sweep", every=RETENTION_EVERY, queue=jobs.MONEY)
def retention_sweep_job(op, payload):
    return {"queued": retention_sweep()}


@jobs.handler("lifecycle.notices", every=NOTICES_EVERY, queue=jobs.NOTIFY)
def notices_job(op, payload):
    from . import notices

    created = notices.create_reminders()
    sent = notices.send_pending()
    return {"created": created, "sent": sent}


__all__ = ["driver_for", "place", "renewal_sweep", "retention_sweep", "renew_service", "NodeReservation",
           "renewal_key", "service_history", "audit_trail"]
