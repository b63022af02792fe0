"""Reverse DNS: customers set the PTR record of their own addresses; each pool's policy decides when it applies.

Policies (``IpPool.rdns_policy``):

- ``immediate``: the record is applied at once;
- ``forward_match``: applied once the hostname's forward record (A/AAAA, looked up through the DNS backend's
  ``resolve``) points at the same address. Checked when the customer asks, then by the ``rdns.recheck`` job every
  few minutes for :data:`FORWARD_WAIT` before the request expires;
- ``approval``: waits in the staff queue; staff approve or reject it with a note the customer sees.

Removing a PTR (an empty hostname) never waits: it cannot claim a name the customer does not hold.

Every request is an ``RdnsRequest`` row (the customer sees its state next to the address). Records reach DNS only
through the ``rdns.apply`` operation, which calls the configured :class:`~hostbay.core.drivers.DnsBackend`
(``dns_backend()``: the first enabled ``DnsBackendConfig`` row whose driver is loaded) and is retried when the DNS
server is briefly unreachable. ``IpAddress.ptr`` is what DNS holds.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import ForeignKey, String, Text, select, update
from sqlalchemy.orm import Mapped, mapped_column, relationship

from . import clock, jobs
from .activity import audit, log_activity
from .db import db, new_uuid
from .errors import FatalDriverError, NotFound, UserError
from .sealed import SealedSettings, SealedSettingsMixin

PENDING, WAITING, APPLYING, APPLIED, REJECTED, SUPERSEDED, CANCELLED, EXPIRED, FAILED = (
    "pending", "waiting", "applying", "applied", "rejected", "superseded", "cancelled", "expired", "failed")
OPEN = (PENDING, WAITING, APPLYING)
STATE_LABELS = {
    PENDING: "Waiting for staff review", WAITING: "Waiting for the forward record to match",
    APPLYING: "Queued: being applied", APPLIED: "Applied", REJECTED: "Not approved", SUPERSEDED: "Replaced by a newer request",
    CANCELLED: "Cancelled", EXPIRED: "Expired: the forward record never matched",
    FAILED: "Could not be applied: the DNS server did not accept the change. Try again later or contact support.",
}
# What the customer is told right after asking, by the request's state at that moment (queued, applied, failed).
OUTCOME_MESSAGES = {
    APPLYING: "Reverse DNS change queued; it is applied within a minute.",
    APPLIED: "Reverse DNS updated.",
    FAILED: STATE_LABELS[FAILED].replace("Could not be applied", "The reverse DNS change could not be applied"),
    PENDING: "Reverse DNS change requested; staff will review it.",
    WAITING: "Reverse DNS change requested; it is applied once the host name resolves to the address.",
}
FORWARD_WAIT = timedelta(days=7)
RECHECK_SECONDS = 300

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


class HostnameError(UserError):
    pass


def validate_hostname(raw: str | None) -> str | None:
    """A PTR target: a fully qualified host name (RFC 1123 labels, at least two, total ≤ 253, last label not
    numeric), lower-cased, without the trailing dot. Empty means "remove the record" (returns None)."""
    name = (raw or "").strip().lower()
    if name.endswith("."):
        name = name[:-1]
    if not name:
        return None
    if len(name) > 253:
        raise HostnameError("A host name can be at most 253 characters long.")
    labels = name.split(".")
    if len(labels) < 2:
        raise HostnameError("Use a fully qualified host name, such as server1.example.com.")
    for label in labels:
        if not _LABEL.match(label):
            raise HostnameError(f"“{label}” is not a valid part of a host name: use letters, digits and hyphens "
                                "(not at the start or end), 1 to 63 characters.")
    if labels[-1].isdigit():
        raise HostnameError("The last part of a host name cannot be a number.")
    return name


class DnsBackendConfig(SealedSettingsMixin, db.Model):
    """A configured DNS backend (driver name + its cleaned settings). The first enabled one applies records.
    Its secret settings are stored sealed (core/sealed.py)."""

    __tablename__ = "dns_backends"
    __settings_kind__ = "dns"

    id: Mapped[int] = mapped_column(primary_key=True)
    driver: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(120), default="")
    settings: Mapped[dict] = mapped_column(SealedSettings, default=dict)
    enabled: Mapped[bool] = mapped_column(default=True)
    priority: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=lambda: clock.now())


class RdnsRequest(db.Model):
    __tablename__ = "rdns_requests"

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True, default=new_uuid)
    address_id: Mapped[int] = mapped_column(ForeignKey("ip_addresses.id", ondelete="CASCADE"), index=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("services.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    hostname: Mapped[str | None] = mapped_column(String(253))  # None: remove the record
    policy: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(12), index=True)
    staff_note: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str | None] = mapped_column(Text)  # admin detail
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    decided_at: Mapped[datetime | None] = mapped_column()
    checked_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=lambda: clock.now(), index=True)

    address = relationship("IpAddress")
    service = relationship("Service")
    user = relationship("User", foreign_keys=[user_id])

    @property
    def label(self) -> str:
        return STATE_LABELS.get(self.state, self.state)


# ---------------------------------------------------------------------------------------------------------------
# Backend
# ---------------------------------------------------------------------------------------------------------------

def dns_backend():
    """The DNS backend that applies records: the first enabled configuration whose driver is loaded."""
    registry = current_app.extensions["hostbay"]
    loaded = registry.drivers.get("dns", {})
    for cfg in db.session.scalars(select(DnsBackendConfig).where(DnsBackendConfig.enabled.is_(True))
                                  .order_by(DnsBackendConfig.priority, DnsBackendConfig.id)):
        if cfg.driver in loaded:
            return registry.driver("dns", cfg.driver, cfg.settings)
    raise FatalDriverError("no DNS backend is configured (staff: Network → DNS backend)")


def forward_matches(hostname: str, address: str, backend=None) -> bool:
    backend = backend or dns_backend()
    want = ipaddress.ip_address(address)
    for found in backend.resolve(hostname):
        try:
            if ipaddress.ip_address(found) == want:
                return True
        except ValueError:
            continue
    return False


# ---------------------------------------------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------------------------------------------

def _customer_address(service, address: str):
    from .ipam_models import ASSIGNED, IpAddress

    try:
        norm = str(ipaddress.ip_address((address or "").strip()))
    except ValueError:
        raise NotFound("No such address on this service.") from None
    row = db.session.scalar(select(IpAddress).where(IpAddress.address == norm, IpAddress.service_id == service.id,
                                                    IpAddress.state == ASSIGNED))
    if row is None:
        raise NotFound("No such address on this service.")
    return row


def enqueue_apply(address: str, hostname: str | None, *, request: RdnsRequest | None = None, reason: str = ""):
    payload = {"address": address, "hostname": hostname, "reason": reason}
    if request is not None:
        payload["request"] = request.uuid
    return jobs.enqueue("rdns.apply", key=f"rdns.apply:{request.uuid if request else new_uuid()}",
                        service=request.service if request else None, payload=payload,
                        title="Update reverse DNS")


def request_ptr(service, address: str, hostname: str | None, actor) -> RdnsRequest:
    """A customer (or staff on their behalf) asks for ``address``'s PTR to become ``hostname`` (None/"" removes
    it). Raises NotFound when the address is not attached to ``service``. Flushes; the caller commits (the apply job
    is dispatched after that commit)."""
    from .services import require_action

    row = _customer_address(service, address)
    require_action(service, "rdns", staff=bool(getattr(actor, "is_staff", False)))
    name = validate_hostname(hostname)
    now = clock.now()
    db.session.execute(update(RdnsRequest).where(RdnsRequest.address_id == row.id, RdnsRequest.state.in_(OPEN))
                       .values(state=SUPERSEDED, decided_at=now).execution_options(synchronize_session=False))
    policy = row.pool.rdns_policy if name is not None else "immediate"
    req = RdnsRequest(address_id=row.id, service_id=service.id, user_id=service.user_id, hostname=name,
                      policy=policy, state=APPLYING, created_at=now)
    if policy == "approval":
        req.state = PENDING
    elif policy == "forward_match":
        req.checked_at = now
        if not forward_matches(name, row.address):
            req.state = WAITING
    db.session.add(req)
    db.session.flush()
    if req.state == APPLYING:
        enqueue_apply(row.address, name, request=req)
    target = name or "(none)"
    message = {
        APPLYING: f"Reverse DNS of {row.address} → {target} queued.",
        PENDING: f"Reverse DNS of {row.address} → {target} requested; it is applied after staff review.",
        WAITING: f"Reverse DNS of {row.address} → {target} requested; it is applied once {target} resolves to "
                 f"{row.address}.",
    }[req.state]
    log_activity(service.user_id, "rdns_change", message, service.id)
    audit("rdns.request", "ip_address", row.address, actor=actor, before={"ptr": row.ptr},
          after={"hostname": name, "policy": policy, "state": req.state})
    db.session.flush()
    return req


def open_request_for(address_id: int) -> RdnsRequest | None:
    return db.session.scalar(select(RdnsRequest).where(RdnsRequest.address_id == address_id)
                             .order_by(RdnsRequest.id.desc()).limit(1))


def cancel_open_requests(address_ids: list[int]) -> None:
    """Used when addresses leave a service: their pending requests must not apply to the next holder."""
    if address_ids:
        db.session.execute(update(RdnsRequest).where(RdnsRequest.address_id.in_(address_ids),
                                                     RdnsRequest.state.in_(OPEN))
                           .values(state=CANCELLED, decided_at=clock.now())
                           .execution_options(synchronize_session=False))


def pending_queue():
    return db.session.scalars(select(RdnsRequest).where(RdnsRequest.state == PENDING)
                              .order_by(RdnsRequest.created_at)).all()


def _get(uuid: str) -> RdnsRequest:
    req = db.session.scalar(select(RdnsRequest).where(RdnsRequest.uuid == uuid))
    if req is None:
        raise NotFound("No such reverse DNS request.")
    return req


def approve(uuid: str, actor, note: str = "") -> RdnsRequest:
    req = _get(uuid)
    now = clock.now()
    res = db.session.execute(update(RdnsRequest).where(RdnsRequest.id == req.id, RdnsRequest.state == PENDING)
                             .values(state=APPLYING, staff_note=(note or "").strip(), decided_by_id=actor.id,
                                     decided_at=now).execution_options(synchronize_session=False))
    if res.rowcount != 1:  # nothing was written
        raise UserError("This request was already decided or replaced.")
    db.session.refresh(req)
    enqueue_apply(req.address.address, req.hostname, request=req)
    log_activity(req.user_id, "rdns_change",
                 f"Reverse DNS of {req.address.address} → {req.hostname} approved."
                 + (f" Note: {req.staff_note}" if req.staff_note else ""), req.service_id)
    audit("rdns.approve", "ip_address", req.address.address, actor=actor, after={"hostname": req.hostname},
          detail=req.staff_note)
    db.session.flush()
    return req


def reject(uuid: str, actor, note: str) -> RdnsRequest:
    note = (note or "").strip()
    if not note:
        raise UserError("Tell the customer why: a note is required to reject.")
    req = _get(uuid)
    res = db.session.execute(update(RdnsRequest).where(RdnsRequest.id == req.id, RdnsRequest.state == PENDING)
                             .values(state=REJECTED, staff_note=note, decided_by_id=actor.id,
                                     decided_at=clock.now()).execution_options(synchronize_session=False))
    if res.rowcount != 1:  # nothing was written
        raise UserError("This request was already decided or replaced.")
    db.session.refresh(req)
    log_activity(req.user_id, "rdns_change",
                 f"Reverse DNS of {req.address.address} → {req.hostname} was not approved: {note}", req.service_id)
    audit("rdns.reject", "ip_address", req.address.address, actor=actor, after={"hostname": req.hostname},
          detail=note)
    db.session.flush()
    return req


# ---------------------------------------------------------------------------------------------------------------
# Jobs
# ---------------------------------------------------------------------------------------------------------------

@jobs.handler("rdns.apply", queue=jobs.DRIVER)
def _apply_job(op, payload):
    """Set the PTR in DNS. Safe to re-run: ``set_ptr`` replaces the record, and a request that was cancelled or
    superseded meanwhile is not applied."""
    from .ipam_models import IpAddress

    address, hostname = payload["address"], payload.get("hostname")
    req = None
    if payload.get("request"):
        req = db.session.scalar(select(RdnsRequest).where(RdnsRequest.uuid == payload["request"]))
        if req is not None and req.state == FAILED and payload.get("retried"):
            # a staff retry of the failed apply: the request applies again (it is not reported done untried)
            db.session.execute(update(RdnsRequest).where(RdnsRequest.id == req.id, RdnsRequest.state == FAILED)
                               .values(state=APPLYING, error=None).execution_options(synchronize_session=False))
            db.session.refresh(req)
        if req is None or req.state != APPLYING:
            return {"skipped": req.state if req else "missing"}
    else:
        row = db.session.scalar(select(IpAddress).where(IpAddress.address == address))
        if row is not None and row.ptr and hostname is None:
            return {"skipped": "a newer record exists"}
    try:
        jobs.call_driver(op, dns_backend().set_ptr, address, hostname)  # the driver-call template
    except FatalDriverError as exc:
        if req is not None:
            db.session.execute(update(RdnsRequest).where(RdnsRequest.id == req.id, RdnsRequest.state == APPLYING)
                               .values(state=FAILED, error=str(exc))
                               .execution_options(synchronize_session=False))
            log_activity(req.user_id, "rdns_change", f"Reverse DNS of {address} → {hostname or '(none)'} could "
                         "not be applied: the DNS server did not accept the change.", req.service_id)
            db.session.commit()
        raise
    if req is not None:
        res = db.session.execute(update(RdnsRequest).where(RdnsRequest.id == req.id, RdnsRequest.state == APPLYING)
                                 .values(state=APPLIED).execution_options(synchronize_session=False))
        if res.rowcount == 1:
            db.session.execute(update(IpAddress).where(IpAddress.id == req.address_id,
                                                       IpAddress.service_id == req.service_id)
                               .values(ptr=hostname).execution_options(synchronize_session=False))
            # the outcome, logged when it happened
            log_activity(req.user_id, "rdns_change", f"Reverse DNS of {address} set to {hostname or '(none)'}."
                         if hostname else f"Reverse DNS of {address} removed.", req.service_id)
    db.session.commit()
    return {"address": address, "hostname": hostname, "text": "Reverse DNS set" if hostname else "Reverse DNS removed"}


@jobs.handler("rdns.recheck", every=RECHECK_SECONDS, queue=jobs.NOTIFY)
def _recheck_job(op, payload):
    """Apply forward-match requests whose forward record now matches; expire the ones that waited too long."""
    now = clock.now()
    waiting = db.session.scalars(select(RdnsRequest).where(RdnsRequest.state == WAITING)
                                 .order_by(RdnsRequest.created_at).limit(500)).all()
    if not waiting:
        return {"checked": 0, "applied": 0}
    backend = dns_backend()
    ids = [req.id for req in waiting]
    todo = [(req.id, req.hostname, req.address.address) for req in waiting
            if req.created_at + FORWARD_WAIT >= now]
    db.session.rollback()  # DNS lookups are slow: no transaction (on SQLite, no write lock) is held meanwhile
    matched = {rid for rid, hostname, address in todo if forward_matches(hostname, address, backend)}
    checked = {rid for rid, _, _ in todo}
    applied = 0
    waiting = db.session.scalars(select(RdnsRequest).where(RdnsRequest.id.in_(ids),
                                                           RdnsRequest.state == WAITING)).all()
    for req in waiting:
        if req.id not in checked:
            req.state, req.decided_at = EXPIRED, now
            log_activity(req.user_id, "rdns_change",
                         f"Reverse DNS request for {req.address.address} expired: {req.hostname} never resolved "
                         "to it.", req.service_id)
            continue
        req.checked_at = now
        if req.id in matched:
            req.state = APPLYING
            enqueue_apply(req.address.address, req.hostname, request=req)
            applied += 1
    db.session.commit()
    return {"checked": len(waiting), "applied": applied}

