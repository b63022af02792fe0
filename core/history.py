"""A service's history: the customer's activity view and the staff audit trail (activity, audit and ledger
entries merged, newest first)."""

from __future__ import annotations

from sqlalchemy import select

from . import ledger
from .activity import ActivityEntry, AuditEntry
from .db import db
from .ledger import LedgerEntry
from .money import format_cents
from .services import Service


def service_history(service: Service, limit: int = 50) -> list[dict]:
    """The customer's view of a service's history: its activity entries and the wallet movements that reference
    it (renewals and other charges), newest first, in customer-safe words."""
    acts = db.session.scalars(select(ActivityEntry).where(ActivityEntry.service_id == service.id,
                                                          ActivityEntry.user_id == service.user_id)
                              .order_by(ActivityEntry.created_at.desc(), ActivityEntry.id.desc()).limit(limit))
    out = [{"at": a.created_at, "event": a.event, "message": a.message} for a in acts]
    logged = {a["message"] for a in out if a["event"] == "billing"}
    for e in _ledger_of(service, limit):
        if ledger.activity_message(e) in logged:  # posted through the ledger: its activity line is shown already
            continue
        out.append({"at": e.created_at, "event": "billing",
                    "message": f"{e.description} ({format_cents(e.amount_cents)})"})
    out.sort(key=lambda x: x["at"], reverse=True)
    return out[:limit]


def _ledger_of(service: Service, limit: int):
    return db.session.scalars(select(LedgerEntry).where(LedgerEntry.reference_type == "service",
                                                        LedgerEntry.reference_id == service.uuid)
                              .order_by(LedgerEntry.created_at.desc(), LedgerEntry.id.desc()).limit(limit)).all()


def audit_trail(service: Service, op_ids=(), limit: int = 200) -> list[dict]:
    """The staff view: audit entries of the service and its operations, and its ledger entries, newest first."""
    from sqlalchemy import or_

    rows = db.session.scalars(select(AuditEntry).where(or_(
        (AuditEntry.target_type == "service") & (AuditEntry.target_id == service.uuid),
        (AuditEntry.target_type == "operation") & AuditEntry.target_id.in_(list(op_ids) or [""])))
        .order_by(AuditEntry.created_at.desc(), AuditEntry.id.desc()).limit(limit)).all()
    out = [{"at": a.created_at, "actor_type": a.actor_type, "actor_id": a.actor_id, "action": a.action,
            "before": a.before, "after": a.after, "detail": a.detail} for a in rows]
    for e in _ledger_of(service, limit):
        out.append({"at": e.created_at, "actor_type": e.actor_type, "actor_id": e.actor_id,
                    "action": f"ledger.{e.kind}", "before": None,
                    "after": {"amount_cents": e.amount_cents, "balance_after_cents": e.balance_after_cents,
                              "key": e.idempotency_key}, "detail": e.note or e.description})
    out.sort(key=lambda x: x["at"], reverse=True)
    return out[:limit]
