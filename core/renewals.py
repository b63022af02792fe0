"""Renewal and retention: the scheduled sweeps that charge each service's next period, suspend those the wallet
cannot cover, end those set to end with their period, and queue for removal those suspended for non-payment
longer than the retention window; the customer's own renewal (:func:`renew_service`) and the renewals after a
top-up; the scheduled notices job. The job handlers that drive the servers (provision, power, reinstall, resize,
suspend, unsuspend, remove) are in :mod:`.lifecycle`; the sweeps only move states and queue those jobs.

The job kinds keep their ``lifecycle.`` prefix (``lifecycle.renewal_sweep``, ``lifecycle.retention_sweep``,
``lifecycle.retry_renewals``, ``lifecycle.notices``): workers, schedules and stored operations name them.

Renewal (``renewal_sweep``) works in set-based batches: one transaction claims a batch of due services
(``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so several workers share the work), locks the customers' wallets in id
order, walks each customer's due services in renewal order against the locked balance, and then writes all ledger
entries (``ON CONFLICT DO NOTHING`` on the idempotency key ``renewal:<uuid>:<renews_at>``), wallet updates, service
updates, suspension operations, notices, activity and audit rows with a handful of statements (the set-based SQL
is in :mod:`.bulk`). A batch commits as a whole or not at all, so a killed worker leaves nothing half-done, and a
re-run finds only what is still due.

Recovery after a top-up: core's built-in plugin (:mod:`hostbay.core.builtin`) implements ``hostbay_wallet_credited``
with :func:`queue_retry_renewals`, which enqueues ``lifecycle.retry_renewals`` for the
customer; that job renews suspended services inside the retention window while the balance covers them.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

from sqlalchemy import select, update

from . import clock, jobs
from .activity import ActivityEntry, AuditEntry, audit, log_activity
from .bulk import _bulk_insert, _bulk_update, _insert_ignore, _pg_exec
from .catalog import add_cycle
from .db import db, is_postgres, new_uuid
from .errors import ActionNotAllowed, InsufficientFunds
from .ledger import LedgerEntry, Wallet, debit
from .money import format_cents
from .policy import retention_days
from .services import ACTIVE, CANCELLED, ENDED, REMOVAL_QUEUED, SUSPENDED, Service, transition, transition_bulk

RENEWAL_BATCH = 10000  # services per transaction; bench/renewal_sweep.py measures 5000 and 10000
RENEWAL_EVERY = 30       # seconds between scheduled renewal sweeps: a due service is renewed within ~40 s
RETENTION_EVERY = 600
NOTICES_EVERY = 900


def renewal_key(service_uuid: str, renews_at: datetime) -> str:
    """One ledger idempotency key per service and period: gateway-triggered renewals and sweeps share it."""
    return f"renewal:{service_uuid}:{renews_at:%Y%m%dT%H%M%S}"


def _refs(service: Service) -> dict:
    """Where the service's server is, for the audit trail (the same shape as the lifecycle handlers write)."""
    return {"node": service.node.name if service.node else None, "infra_ref": dict(service.infra_ref or {})}


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
    try:
        while max_batches is None or totals["batches"] < max_batches:
            got = _renewal_batch(now, batch_size, dispatch)
            if got is None:
                break
            totals["batches"] += 1
            for k in ("renewed", "suspended", "cancelled"):
                totals[k] += got[k]
    finally:
        jobs.wait_background_dispatch()  # every committed batch's jobs are in their queues before the sweep ends
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
        from .notices import suspension_notice_context, suspension_notice_row

        notice_ctx = suspension_notice_context()
        days = notice_ctx["days"]
        for r, balance in suspend_rows:
            short = r.price_cents - balance
            acts.append({"user_id": r.user_id, "service_id": r.id, "event": "suspend", "created_at": now,
                         "message": f"{r.hostname} was suspended: the renewal of {format_cents(r.price_cents)} "
                                    f"could not be paid from your wallet ({format_cents(balance)}). Add at least "
                                    f"{format_cents(short)} within {days} days and renew it to keep it."})
            audits.append({"actor_type": "system", "actor_id": None, "action": "service.suspended",
                           "target_type": "service", "target_id": r.uuid,
                           "before": {"state": ACTIVE, "renews_at": r.renews_at.isoformat()},
                           "after": {"state": SUSPENDED, "balance_cents": balance, "price_cents": r.price_cents},
                           "detail": "renewal sweep: insufficient balance", "created_at": now})
            ops.append({"id": None if pg else new_uuid(), "key": f"suspend:{r.uuid}:{stamps[r.renews_at]}", "kind": "service.suspend",
                        "service_id": r.id, "user_id": r.user_id, "payload": {"reason": "unpaid"},
                        "state": jobs.QUEUED, "title": "Suspend server", "progress_pct": 0,
                        "progress_text": "Queued", "attempts": 0, "max_attempts": 4, "created_at": jobs._utcnow()})
            notices.append(suspension_notice_row(r, balance, now, notice_ctx))
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
    if dispatch:  # pushed on the dispatch thread while the next batch is read and written (the sweep waits)
        for kind, ids in new_ops.items():
            if ids:
                jobs.dispatch_after_commit(ids, kind, background=True)
    db.session.commit()
    from . import metrics  # counted once the batch is committed (a rolled-back batch counts nothing)

    metrics.SWEEP_SERVICES.labels("renewed").inc(len(renew_rows))
    metrics.SWEEP_SERVICES.labels("suspended").inc(len(suspend_rows))
    metrics.SWEEP_SERVICES.labels("cancelled").inc(len(cancelled))
    return {"renewed": len(renew_rows), "suspended": len(suspend_rows), "cancelled": len(cancels)}


@jobs.handler("lifecycle.renewal_sweep", every=RENEWAL_EVERY, queue=jobs.MONEY)
def renewal_sweep_job(op, payload):
    return renewal_sweep(batch_size=int(payload.get("batch", RENEWAL_BATCH)))


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


__all__ = ["renewal_sweep", "retention_sweep", "renew_service", "renewal_key", "due_query", "queue_retry_renewals"]
