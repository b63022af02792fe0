"""Outgoing webhooks: a hosting company registers URLs for events; hostbay POSTs each event once to each URL that
wants it, signed, and retries through the job layer.

- Events come from the existing event hooks (``hostbay_service_provisioned``, ``_suspended``, ``_terminated``,
  ``hostbay_wallet_credited``, ``hostbay_operation_failed``): :class:`WebhookHooks` is registered with the plugin
  manager like any plugin; nothing in core calls this module.
- Each (endpoint, event) is one ``OutgoingDelivery`` row under a unique constraint, so an event that is reported
  twice is delivered once. Its body is fixed when the event happens; a retry or a redelivery sends the same bytes.
- ``Hostbay-Signature: sha256=<hex HMAC-SHA256(endpoint secret, raw body)>``; ``Hostbay-Event`` and
  ``Hostbay-Delivery`` name the event and the delivery (receivers deduplicate on the delivery id).
- A delivery is the job ``webhook.deliver``: an answer other than 2xx (or no answer) raises
  ``TransientDriverError``, so the job layer retries it with its back-off (5 s, 30 s, 2 min, 10 min); every
  attempt is appended to the delivery's log. Staff may redeliver any delivery (a new operation, same body).
- Addresses on private, loopback or link-local networks are refused unless ``HOSTBAY_WEBHOOK_ALLOW_PRIVATE`` is set
  (so a registered URL cannot reach the hosting company's own internal services).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import socket
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime

from flask import current_app
from sqlalchemy import JSON, ForeignKey, String, Text, UniqueConstraint, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column, relationship

from . import clock, jobs
from .activity import audit
from .db import db, new_uuid
from .errors import FatalDriverError, TransientDriverError, UserError
from .hookspecs import hookimpl
from .sealed import SealedString

log = logging.getLogger(__name__)

EVENTS = ("service.provisioned", "service.suspended", "service.terminated", "wallet.credited", "operation.failed")
DELIVER_KIND = "webhook.deliver"
TIMEOUT_SECONDS = 10
MAX_ATTEMPTS = 5
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"


class WebhookEndpoint(db.Model):
    __tablename__ = "webhook_endpoints"

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True, default=new_uuid)
    url: Mapped[str] = mapped_column(String(500))
    description: Mapped[str] = mapped_column(String(200), default="")
    events: Mapped[list] = mapped_column(JSON, default=list)
    secret: Mapped[str] = mapped_column(SealedString)  # needed to sign: stored sealed, shown once at creation
    active: Mapped[bool] = mapped_column(default=True)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=lambda: clock.now())


class OutgoingDelivery(db.Model):
    __tablename__ = "webhook_outgoing_deliveries"
    __table_args__ = (UniqueConstraint("endpoint_id", "event_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True, default=new_uuid)
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), index=True)
    event: Mapped[str] = mapped_column(String(40))
    event_id: Mapped[str] = mapped_column(String(120))
    body: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default=PENDING, index=True)
    attempts: Mapped[int] = mapped_column(default=0)
    redeliveries: Mapped[int] = mapped_column(default=0)
    last_status: Mapped[int | None] = mapped_column()
    last_error: Mapped[str | None] = mapped_column(String(255))
    attempt_log: Mapped[list] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(default=lambda: clock.now(), index=True)
    delivered_at: Mapped[datetime | None] = mapped_column()

    endpoint = relationship("WebhookEndpoint")


# --------------------------------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------------------------------

def _allow_private() -> bool:
    return bool(current_app.config.get("HOSTBAY_WEBHOOK_ALLOW_PRIVATE"))


def _check_host(host: str) -> None:
    """Refuse hosts that resolve to non-public addresses (unless allowed by the setting)."""
    if _allow_private():
        return
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        raise UserError("The webhook host name does not resolve.") from None
    for info in infos:
        addr = ipaddress.ip_address(info[4][0].split("%")[0])
        if not addr.is_global:
            raise UserError("Webhook URLs must reach a public address.")


def validate_url(url: str) -> str:
    url = (url or "").strip()
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname or len(url) > 500:
        raise UserError("Enter an http:// or https:// URL of at most 500 characters.")
    if parts.username or parts.password:
        raise UserError("Webhook URLs cannot carry a user name or password; the signature authenticates hostbay.")
    _check_host(parts.hostname)
    return url


def register_endpoint(url: str, events, actor, description: str = "") -> WebhookEndpoint:
    events = list(dict.fromkeys(events or []))
    unknown = [e for e in events if e not in EVENTS]
    if not events or unknown:
        raise UserError(f"Choose events from: {', '.join(EVENTS)}.")
    ep = WebhookEndpoint(url=validate_url(url), events=events, description=(description or "")[:200],
                         secret="whsec_" + secrets.token_urlsafe(32), created_by=getattr(actor, "id", None))
    db.session.add(ep)
    db.session.flush()
    audit("webhook.registered", "webhook", ep.uuid, actor=actor, after={"url": ep.url, "events": events})
    return ep


def remove_endpoint(ep: WebhookEndpoint, actor) -> None:
    ep.active = False
    audit("webhook.removed", "webhook", ep.uuid, actor=actor, before={"url": ep.url})


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# --------------------------------------------------------------------------------------------------------------
# Events -> deliveries
# --------------------------------------------------------------------------------------------------------------

def _service_data(service) -> dict:
    return {"uuid": service.uuid, "hostname": service.hostname, "state": service.state, "kind": service.kind,
            "package": service.package.slug if service.package else None,
            "customer": service.user.uuid if service.user else None}


def record_event(event: str, event_id: str, data: dict) -> list[OutgoingDelivery]:
    """Create one delivery per active endpoint that wants ``event`` and enqueue it; an event id seen before is not
    delivered again. The caller's transaction carries it (enqueue dispatches after commit)."""
    endpoints = [e for e in db.session.scalars(select(WebhookEndpoint).filter_by(active=True)) if event in e.events]
    out = []
    for ep in endpoints:
        if db.session.scalar(select(OutgoingDelivery.id).filter_by(endpoint_id=ep.id, event_id=event_id)):
            continue
        d = OutgoingDelivery(endpoint_id=ep.id, event=event, event_id=event_id[:120])
        d.body = json.dumps({"id": d.uuid or new_uuid(), "type": event, "created_at": clock.now().isoformat() + "Z",
                             "data": data}, separators=(",", ":"), sort_keys=True)
        d.uuid = json.loads(d.body)["id"]
        try:
            with db.session.begin_nested():
                db.session.add(d)
        except IntegrityError:  # reported concurrently: delivered by the other report
            continue
        _enqueue(d)
        out.append(d)
    return out


def _enqueue(d: OutgoingDelivery) -> jobs.Operation:
    return jobs.enqueue(DELIVER_KIND, key=f"webhook:{d.uuid}:{d.redeliveries}", payload={"delivery": d.uuid},
                        title="Webhook delivery", max_attempts=MAX_ATTEMPTS)


def redeliver(d: OutgoingDelivery, actor) -> jobs.Operation:
    """Send a delivery again (same body, same delivery id), whatever its state."""
    d.redeliveries += 1
    d.state = PENDING
    op = _enqueue(d)
    audit("webhook.redeliver", "webhook_delivery", d.uuid, actor=actor)
    return op


class WebhookHooks:
    """Listens to core's event hooks and turns each event into deliveries; schedules the API's housekeeping."""

    @hookimpl
    def hostbay_scheduled_jobs(self):
        from .idempotency import PURGE_KIND

        return [(PURGE_KIND, 3600)]

    @staticmethod
    def _run(event: str, event_id: str, build) -> None:
        try:
            if not db.session.scalar(select(WebhookEndpoint.id).filter_by(active=True).limit(1)):
                return
            record_event(event, event_id, build())
            db.session.commit()  # the hook runs after the event's commit: this is the deliveries' own transaction
        except Exception:  # noqa: BLE001 - a webhook problem never breaks the event
            db.session.rollback()
            log.exception("recording webhook event %s failed", event)

    @hookimpl
    def hostbay_service_provisioned(self, service):
        self._run("service.provisioned", f"provisioned:{service.uuid}", lambda: {"service": _service_data(service)})

    @hookimpl
    def hostbay_service_suspended(self, service, reason):
        at = service.suspended_at.isoformat() if service.suspended_at else clock.now().isoformat()
        self._run("service.suspended", f"suspended:{service.uuid}:{at}",
                  lambda: {"service": _service_data(service), "reason": reason})

    @hookimpl
    def hostbay_service_terminated(self, service):
        self._run("service.terminated", f"terminated:{service.uuid}", lambda: {"service": _service_data(service)})

    @hookimpl
    def hostbay_wallet_credited(self, user, entry):
        self._run("wallet.credited", f"credited:{entry.uuid}", lambda: {
            "customer": user.uuid, "entry": {"uuid": entry.uuid, "kind": entry.kind,
                                             "amount_cents": entry.amount_cents,
                                             "balance_after_cents": entry.balance_after_cents}})

    @hookimpl
    def hostbay_operation_failed(self, operation):
        if operation.kind == DELIVER_KIND:  # a failed delivery does not announce itself (no loop)
            return
        from .services import Service

        def build():
            svc = db.session.get(Service, operation.service_id) if operation.service_id else None
            return {"operation": {"id": operation.id, "kind": operation.kind, "title": operation.title,
                                  "attempts": operation.attempts, "message": operation.customer_error,
                                  "service": svc.uuid if svc else None}}

        self._run("operation.failed", f"failed:{operation.id}:{operation.attempts}:{operation.finished_at}", build)


def register_hooks(registry) -> None:
    if registry.pm.get_plugin("hostbay.core.webhooks") is None:
        registry.pm.register(WebhookHooks(), name="hostbay.core.webhooks")


# --------------------------------------------------------------------------------------------------------------
# Delivery job
# --------------------------------------------------------------------------------------------------------------

def _post(url: str, body: bytes, headers: dict) -> int:
    parts = urllib.parse.urlsplit(url)
    _check_host(parts.hostname or "")
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(req, timeout=TIMEOUT_SECONDS) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # a redirect could lead to an internal address
        return None


@jobs.handler(DELIVER_KIND, queue=jobs.NOTIFY)
def deliver(op, payload):
    """POST the delivery's body once; anything but 2xx raises TransientDriverError (the job layer retries)."""
    d = db.session.scalar(select(OutgoingDelivery).filter_by(uuid=payload["delivery"]))
    if d is None:
        raise FatalDriverError("webhook delivery is gone")
    ep = d.endpoint
    if not ep.active:
        d.state, d.last_error = FAILED, "endpoint removed"
        db.session.commit()
        return {"skipped": "endpoint removed"}
    body = d.body.encode()
    headers = {"Content-Type": "application/json", "User-Agent": "hostbay-webhooks",
               "Hostbay-Event": d.event, "Hostbay-Delivery": d.uuid, "Hostbay-Signature": sign(ep.secret, body)}
    url, delivery_id = ep.url, d.id
    db.session.commit()  # no transaction is held while the receiver answers
    status, error = None, None
    try:
        status = _post(url, body, headers)
    except UserError as exc:
        error = str(exc)
    except (OSError, ValueError) as exc:
        error = f"{type(exc).__name__}: {exc}"[:255]
    d = db.session.get(OutgoingDelivery, delivery_id)
    d.attempts += 1
    d.last_status, d.last_error = status, error
    d.attempt_log = [*(d.attempt_log or []), {"at": clock.now().isoformat(), "status": status, "error": error}][-50:]
    ok = status is not None and 200 <= status < 300
    if ok:
        d.state, d.delivered_at = DELIVERED, clock.now()
    elif op.attempts >= op.max_attempts:
        d.state = FAILED
    db.session.commit()
    if not ok:
        raise TransientDriverError(f"webhook receiver answered {status or error}",
                                   customer_message="The webhook receiver did not accept the delivery.")
    return {"status": status}
