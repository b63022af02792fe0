"""Two append-only logs.

- ``ActivityEntry``: what the customer sees: plain words about their own services and billing, no infrastructure.
- ``AuditEntry``: what staff see: every staff and system action with full detail (who, what, before/after,
  driver references).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, String, Text, event
from sqlalchemy.orm import Mapped, mapped_column

from . import clock
from .db import db

CUSTOMER_EVENTS = ("create", "start", "stop", "restart", "reinstall", "package_change", "iso_mount", "iso_eject",
                   "rdns_change", "billing", "suspend", "unsuspend", "renew", "cancel", "remove", "console",
                   "ssh_key", "account", "ticket", "move", "operation")


class ActivityEntry(db.Model):
    __tablename__ = "activity_entries"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    service_id: Mapped[int | None] = mapped_column(ForeignKey("services.id"), index=True)
    event: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(default=lambda: clock.now(), index=True)


class AuditEntry(db.Model):
    __tablename__ = "audit_entries"

    id: Mapped[int] = mapped_column(primary_key=True)
    actor_type: Mapped[str] = mapped_column(String(16))  # staff, customer, system, gateway
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    action: Mapped[str] = mapped_column(String(64), index=True)
    target_type: Mapped[str] = mapped_column(String(32))
    target_id: Mapped[str | None] = mapped_column(String(64), index=True)
    before: Mapped[dict | None] = mapped_column(JSON)
    after: Mapped[dict | None] = mapped_column(JSON)
    detail: Mapped[str] = mapped_column(Text, default="")
    address: Mapped[str | None] = mapped_column(String(45))  # the client address of the request, if any
    created_at: Mapped[datetime] = mapped_column(default=lambda: clock.now(), index=True)


@event.listens_for(ActivityEntry, "before_update")
@event.listens_for(AuditEntry, "before_update")
@event.listens_for(ActivityEntry, "before_delete")
@event.listens_for(AuditEntry, "before_delete")
def _append_only(mapper, connection, target):
    raise RuntimeError(f"{type(target).__name__} is append-only")


def log_activity(user_id: int, event_name: str, message: str, service_id: int | None = None) -> ActivityEntry:
    if event_name not in CUSTOMER_EVENTS:
        raise ValueError(f"unknown customer event {event_name!r}")
    entry = ActivityEntry(user_id=user_id, service_id=service_id, event=event_name, message=message[:500])
    db.session.add(entry)
    return entry


def audit(action: str, target_type: str, target_id, *, actor=None, actor_type: str | None = None,
          before: dict | None = None, after: dict | None = None, detail: str = "") -> AuditEntry:
    if actor_type is None:
        actor_type = "system" if actor is None else ("staff" if getattr(actor, "is_staff", False) else "customer")
    entry = AuditEntry(actor_type=actor_type, actor_id=getattr(actor, "id", None), action=action,
                       target_type=target_type, target_id=None if target_id is None else str(target_id),
                       before=before, after=after, detail=detail, address=_client_address())
    db.session.add(entry)
    return entry


def _client_address() -> str | None:
    """The client address of the current request (ProxyFix has applied HOSTBAY_TRUSTED_PROXIES), else None."""
    from flask import has_request_context, request

    return (request.remote_addr or None) if has_request_context() else None
