"""Wallet top-ups through payment gateways: payment records, webhook deduplication and the crediting template.
The rows live in :mod:`.payment_models`, the gateway configuration in :mod:`.payment_gateways`; this module is the
top-up and webhook pipeline (their names stay importable from here).

Core owns everything around a gateway driver (``hostbay.core.drivers.PaymentGateway``): the payment row, limits,
signature rejection, deduplication, state mapping, re-fetching before money moves, the ledger credit, audit and
hooks. A driver only creates the provider's invoice, verifies and parses a webhook, and re-fetches an invoice.

Exactly once: the credit's ledger idempotency key is ``topup:<gateway>:<provider invoice id>`` and the payment row
is claimed with a conditional UPDATE, so however many deliveries (sequential, concurrent, redelivered, out of
order) reach us, and whoever reconciles, one provider invoice moves money at most once.

Policy (docs/payments.md):
- credit on settlement only (BTCPay ``Settled``, NOWPayments ``finished``), after re-fetching the invoice from the
  provider; the amount credited is the amount the customer asked for;
- overpayment: the asked amount is credited and the payment is flagged for staff (the excess is theirs to refund
  or credit by hand);
- underpayment (or payment after expiry): nothing is credited automatically; the payment shows ``underpaid`` and
  staff may credit the USD actually received (same ledger key, so still at most once);
- a payment that turns invalid or refunded after it was credited goes to ``review``; nothing is debited
  automatically.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import lazyload

from . import clock, ledger, metrics
from .activity import audit, log_activity
from .db import db
from .drivers import PaymentGateway, PaymentState, PaymentStatus, SignatureError, WebhookEvent
from .errors import DriverError, FatalDriverError, NotFound, TransientDriverError, UserError
from .money import cents_to_decimal, format_cents, to_cents

log = logging.getLogger(__name__)

# the rows and the gateway configuration live in their own modules; their names stay importable from here
from .payment_models import (CONFIRMING, CREDITED, DEFAULT_MAX_CENTS, DEFAULT_MIN_CENTS, EXPIRED, FINAL,
                             _FROM_PROVIDER, GatewayConfig, INVALID, LABELS, Payment, PENDING, _RANK, REVIEW,
                             STATUSES, UNDERPAID, WebhookDelivery)  # noqa: E402,F401
from .payment_gateways import (_base_url, _cached_gateway, _caches, enabled_gateways, gateway,
                               GATEWAY_CACHE_SECONDS, gateway_classes, gateway_config, limits, mask,
                               masked_settings, _registry, _remember, save_gateway_config, SEEN_CACHE_SIZE,
                               _seen_recently)  # noqa: E402,F401


# --------------------------------------------------------------------------------------------------------------
# Starting a top-up
# --------------------------------------------------------------------------------------------------------------

def parse_amount(raw) -> int:
    """Customer input ("25", "25.50", "$25") to cents, within the configured limits; UserError otherwise."""
    try:
        cents = to_cents(str(raw or "").replace(",", "").strip())
    except (ValueError, TypeError):
        raise UserError("Enter an amount in US dollars, such as 25 or 25.50.") from None
    lo, hi = limits()
    if cents < lo or cents > hi:
        raise UserError(f"Top-ups must be between {format_cents(lo)} and {format_cents(hi)}.")
    return cents


def start_topup(user, gateway_name: str, amount) -> Payment:
    """Validate a top-up and add its pending payment row (flushed). The caller commits it, then calls
    :func:`open_checkout` and commits again, so the row is committed before the provider is called (a crash leaves
    a visible pending row, never an orphan invoice we cannot match) and no transaction is open during the call."""
    cents = amount if isinstance(amount, int) and not isinstance(amount, bool) else parse_amount(amount)
    lo, hi = limits()
    if cents < lo or cents > hi:
        raise UserError(f"Top-ups must be between {format_cents(lo)} and {format_cents(hi)}.")
    gateway(gateway_name)  # refuses an unknown or disabled gateway before any row is written
    payment = Payment(user_id=user.id, gateway=gateway_name, amount_cents=cents, status=PENDING)
    db.session.add(payment)
    db.session.flush()
    return payment


def open_checkout(payment: Payment) -> Payment:
    """Create the provider's invoice for the committed pending ``payment`` and record its id and checkout link
    (flushed; the caller commits and redirects to ``payment.checkout_url``). When the provider fails, the payment
    is marked invalid (flushed: the caller commits that too) and UserError says so."""
    from . import links

    gateway_name, cents, user = payment.gateway, payment.amount_cents, payment.user
    drv = gateway(gateway_name)
    try:
        co = drv.create_checkout(cents_to_decimal(cents), payment.uuid,
                                 links.url("payment", payment_uuid=payment.uuid),
                                 links.url("webhook", gateway=gateway_name))
    except DriverError as exc:
        payment.status, payment.note, payment.updated_at = INVALID, f"checkout failed: {exc}"[:500], clock.now()
        audit("payments.checkout_failed", "payment", payment.uuid, actor_type="system", detail=str(exc))
        db.session.flush()
        log.warning("checkout with %s failed for payment %s: %s", gateway_name, payment.uuid, exc)
        raise UserError("The payment provider is not answering right now. Please try again in a few minutes.") \
            from None
    payment.provider_ref, payment.checkout_url = co.provider_ref, co.checkout_url
    payment.updated_at = clock.now()
    log_activity(user.id, "billing", f"Top-up of {format_cents(cents)} started.")
    audit("payments.started", "payment", payment.uuid, actor=user, actor_type="customer",
          after={"gateway": gateway_name, "amount_cents": cents, "provider_ref": co.provider_ref})
    db.session.flush()
    return payment


def payment_for_customer(user, payment_uuid: str) -> Payment:
    p = db.session.scalar(select(Payment).filter_by(uuid=payment_uuid, user_id=user.id))
    if p is None:
        raise NotFound("No such payment.")
    return p


# --------------------------------------------------------------------------------------------------------------
# Webhooks
# --------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class WebhookResult:
    http_status: int
    outcome: str  # processed, duplicate, forged, malformed, unknown_gateway, unknown_invoice, retry
    payment_uuid: str | None = None


def _find_payment(gateway_name: str, provider_ref: str) -> Payment | None:
    return db.session.scalar(select(Payment).filter_by(gateway=gateway_name, provider_ref=provider_ref))


def _lock(payment: Payment) -> Payment:
    """Take the payment row for this transaction (SELECT ... FOR UPDATE) and reload it: every change to one
    payment is serialised, always taken before the wallet row, so concurrent deliveries queue instead of
    deadlocking, and each sees what the one before it committed."""
    return db.session.scalar(select(Payment).where(Payment.id == payment.id).with_for_update(of=Payment)
                             .execution_options(populate_existing=True))


def _lock_by_ref(gateway_name: str, provider_ref: str) -> Payment | None:
    return db.session.scalar(select(Payment).filter_by(gateway=gateway_name, provider_ref=provider_ref)
                             .options(lazyload(Payment.user)).with_for_update(of=Payment)
                             .execution_options(populate_existing=True))


def _seen(gateway_name: str, event_id: str) -> bool:
    return db.session.scalar(select(WebhookDelivery.id).filter_by(gateway=gateway_name, event_id=event_id)) \
        is not None


@metrics.counts_webhooks  # hostbay_payment_webhooks_total{gateway, result, outcome}
def handle_webhook(gateway_name: str, headers, raw_body: bytes) -> WebhookResult:
    """Verify, deduplicate and apply one delivery. Forged, malformed and unknown-invoice deliveries change
    nothing. Commits (a credit fires ``hostbay_wallet_credited`` from the ledger)."""
    headers = {str(k).lower(): v for k, v in dict(headers).items()}
    try:
        drv = _cached_gateway(gateway_name)
    except (NotFound, FatalDriverError):
        log.warning("webhook for unknown or disabled gateway %r rejected", gateway_name[:64])
        return WebhookResult(404, "unknown_gateway")
    try:
        event = drv.parse_webhook(headers, raw_body)
    except SignatureError:
        log.warning("forged webhook rejected: gateway=%s bytes=%d sha256=%s", gateway_name, len(raw_body),
                    hashlib.sha256(raw_body).hexdigest()[:16])
        return WebhookResult(401, "forged")
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("malformed webhook rejected: gateway=%s: %s", gateway_name, type(exc).__name__)
        return WebhookResult(400, "malformed")
    event_id = str(event.event_id)[:200]
    if _seen_recently(gateway_name, event_id):
        return WebhookResult(200, "duplicate")
    if _seen(gateway_name, event_id):
        db.session.rollback()  # end the read-only transaction
        _remember(gateway_name, event_id)
        return WebhookResult(200, "duplicate")
    payment = _lock_by_ref(gateway_name, str(event.provider_ref))
    if payment is None:
        db.session.rollback()
        log.warning("webhook for unknown invoice ignored: gateway=%s invoice=%s", gateway_name,
                    str(event.provider_ref)[:64])
        return WebhookResult(404, "unknown_invoice")
    # Deliveries of one event name one invoice, so with its row locked no other transaction can record this
    # event now: check again (one may have committed while we waited) and record it.
    if _seen(gateway_name, event_id):
        db.session.rollback()
        _remember(gateway_name, event_id)
        return WebhookResult(200, "duplicate")
    delivery = WebhookDelivery(gateway=gateway_name, event_id=event_id, event_type=event.raw_type[:64],
                               payment_id=payment.id, outcome="received")
    db.session.add(delivery)
    try:
        _apply_event(drv, payment, event)
    except TransientDriverError as exc:
        db.session.rollback()  # the delivery row goes too: the provider's retry is processed afresh
        log.warning("webhook for payment %s deferred: %s", payment.uuid, exc)
        return WebhookResult(503, "retry", payment.uuid)
    except DriverError as exc:
        db.session.rollback()
        log.error("webhook for payment %s could not be applied: %s", payment.uuid, exc)
        return WebhookResult(502, "retry", payment.uuid)
    delivery.outcome = payment.status
    try:
        db.session.commit()
    except IntegrityError:  # the same event id for another invoice: a provider bug, never applied twice
        db.session.rollback()
        return WebhookResult(200, "duplicate")
    _remember(gateway_name, event_id)
    return WebhookResult(200, "processed", payment.uuid)


def _needs_refetch(status: PaymentStatus | None) -> bool:
    """Anything that may move money (or that says nothing by itself) is confirmed with the provider first."""
    return status not in (PaymentStatus.PENDING, PaymentStatus.CONFIRMING)


def _apply_event(drv: PaymentGateway, payment: Payment, event: WebhookEvent):
    if event.fetch_ref and payment.fetch_ref != event.fetch_ref:
        payment.fetch_ref = str(event.fetch_ref)[:200]
    if drv.supports("refetch") and _needs_refetch(event.status):
        state = _fetch(drv, payment)
        return _apply_state(payment, state, source=f"webhook {event.raw_type}")
    if event.status is None:
        return None
    state = PaymentState(payment.provider_ref, event.status, event.amount_received, event.raw_type)
    return _apply_state(payment, state, source=f"webhook {event.raw_type}")


def _fetch(drv: PaymentGateway, payment: Payment) -> PaymentState:
    state = drv.fetch(payment.fetch_ref or payment.provider_ref)
    if str(state.provider_ref) != str(payment.provider_ref):
        raise FatalDriverError(f"provider returned invoice {state.provider_ref!r} for {payment.provider_ref!r}")
    return state


def _received_cents(amount: Decimal | None) -> int | None:
    if amount is None:
        return None
    return int((Decimal(amount) * 100).to_integral_value(rounding=ROUND_DOWN))


def _set_status(payment: Payment, status: str) -> None:
    payment.status, payment.updated_at = status, clock.now()


def _apply_state(payment: Payment, state: PaymentState, *, source: str):
    """Move ``payment`` according to the provider's state. Returns the new ledger entry when this call credited
    the wallet, else None. Never moves a payment backwards; never credits twice."""
    if state.raw_status:
        payment.provider_status = state.raw_status[:64]
    received = _received_cents(state.amount_received)
    if received is not None:
        payment.received_cents = received
    if state.status == PaymentStatus.SETTLED:
        if payment.ledger_entry_id is not None or payment.status in (CREDITED, REVIEW):
            return None
        if received is not None and received > payment.amount_cents:
            payment.overpaid = True
            audit("payments.overpaid", "payment", payment.uuid, actor_type="gateway",
                  detail=f"asked {format_cents(payment.amount_cents)}, received {format_cents(received)}")
        return _credit(payment, payment.amount_cents, source=source, actor_type="gateway")
    new = _FROM_PROVIDER[state.status]
    if new == INVALID and payment.status == CREDITED:
        _set_status(payment, REVIEW)
        audit("payments.invalid_after_credit", "payment", payment.uuid, actor_type="gateway",
              detail=f"{source}: provider status {state.raw_status}; nothing was debited")
        return None
    if payment.status in (CREDITED, REVIEW) or _RANK[new] <= _RANK[payment.status]:
        return None
    if new == UNDERPAID:
        audit("payments.underpaid", "payment", payment.uuid, actor_type="gateway",
              detail=f"{source}: asked {format_cents(payment.amount_cents)}, received "
                     f"{format_cents(received) if received is not None else 'unknown'}")
    _set_status(payment, new)
    return None


def _credit(payment: Payment, cents: int, *, source: str, actor_type: str, actor=None, note: str | None = None):
    """Credit ``cents`` for ``payment`` exactly once. Returns the entry if this call made it, else None."""
    key = f"topup:{payment.gateway}:{payment.provider_ref}"
    entry = ledger.credit(payment.user_id, cents, kind="topup", key=key,
                          description=f"Crypto top-up {payment.uuid[:8]}",
                          reference=("payment", payment.uuid), actor_type=actor_type,
                          actor_id=getattr(actor, "id", None), note=note)
    claimed = db.session.execute(
        update(Payment).where(Payment.id == payment.id, Payment.ledger_entry_id.is_(None))
        .values(ledger_entry_id=entry.id, status=CREDITED, credited_at=clock.now(), updated_at=clock.now())
        .execution_options(synchronize_session=False)).rowcount
    db.session.refresh(payment)
    if claimed != 1:
        return None
    audit("payments.credited", "payment", payment.uuid, actor=actor, actor_type=actor_type,
          after={"ledger_entry": entry.uuid, "amount_cents": cents}, detail=source)
    return entry


# --------------------------------------------------------------------------------------------------------------
# Staff actions
# --------------------------------------------------------------------------------------------------------------

def get_payment(payment_uuid: str) -> Payment:
    p = db.session.scalar(select(Payment).filter_by(uuid=payment_uuid))
    if p is None:
        raise NotFound("No such payment.")
    return p


def reconcile(payment: Payment, actor, *, quiet: bool = False) -> str:
    """Re-fetch the invoice and apply it (credits if settled, once). Audited. Flushes; the caller commits (also
    after the UserError of a provider that cannot be asked: its audit entry stays). Returns the new status.
    ``actor`` None means the system (the stale-payment sweep)."""
    if not payment.provider_ref:
        raise UserError("This payment never reached the provider; there is nothing to reconcile.")
    drv = gateway(payment.gateway, require_enabled=False)
    if not drv.supports("refetch"):
        raise UserError("This gateway cannot look up invoices.")
    payment = _lock(payment)
    before = {"status": payment.status, "received_cents": payment.received_cents}
    try:
        state = _fetch(drv, payment)
    except DriverError as exc:
        if not quiet:  # the sweep only logs, or every sweep would add an entry for a provider that is down
            audit("payments.reconcile_failed", "payment", payment.uuid, actor=actor, detail=str(exc)[:500])
            db.session.flush()
        raise UserError(f"The provider could not be asked: {exc}") from None
    entry = _apply_state(payment, state, source="sweep" if quiet else "reconcile")
    if not quiet or payment.status != before["status"]:
        audit("payments.reconcile", "payment", payment.uuid, actor=actor, before=before,
              after={"status": payment.status, "received_cents": payment.received_cents,
                     "provider_status": state.raw_status})
    db.session.flush()
    return payment.status


def credit_received(payment: Payment, actor, amount) -> Payment:
    """Staff decision on an underpaid payment: credit what was actually received (at most what was asked).
    Uses the payment's ledger key, so it can happen once and never besides a settlement credit."""
    payment = _lock(payment)
    if payment.status not in (UNDERPAID, EXPIRED, REVIEW) or payment.ledger_entry_id is not None:
        raise UserError("Only an uncredited underpaid, expired or held payment can be credited by hand.")
    try:
        cents = to_cents(str(amount).strip())
    except (ValueError, TypeError):
        raise UserError("Enter the amount received in US dollars.") from None
    if cents <= 0 or cents > payment.amount_cents:
        raise UserError(f"The amount must be above zero and at most {format_cents(payment.amount_cents)}.")
    entry = _credit(payment, cents, source="staff decision", actor_type="staff", actor=actor,
                    note=f"received {format_cents(payment.received_cents or 0)} per provider")
    if entry is None:  # the ledger replayed the first credit: nothing was written
        raise UserError("This payment was credited meanwhile.")
    db.session.flush()
    return payment


def list_payments(status: str | None = None, limit: int = 200) -> list[Payment]:
    q = select(Payment).order_by(Payment.created_at.desc(), Payment.id.desc()).limit(limit)
    if status:
        q = q.where(Payment.status == status)
    return list(db.session.scalars(q))


# --------------------------------------------------------------------------------------------------------------
# Sweep: payments whose webhooks never arrived
# --------------------------------------------------------------------------------------------------------------

SWEEP_EVERY_SECONDS = 600
SWEEP_AFTER_MINUTES = 30
SWEEP_FOR_DAYS = 3


def reconcile_stale(limit: int = 200) -> dict[str, int]:
    """Reconcile open payments (pending, confirming) untouched for SWEEP_AFTER_MINUTES and younger than
    SWEEP_FOR_DAYS, so a lost webhook never loses a top-up. Returns counts per resulting status."""
    from datetime import timedelta

    now = clock.now()
    rows = db.session.scalars(
        select(Payment).where(Payment.status.in_((PENDING, CONFIRMING)), Payment.provider_ref.is_not(None),
                              Payment.updated_at < now - timedelta(minutes=SWEEP_AFTER_MINUTES),
                              Payment.created_at > now - timedelta(days=SWEEP_FOR_DAYS))
        .order_by(Payment.updated_at).limit(limit)).all()
    counts: dict[str, int] = {}
    for p in rows:
        try:
            status = reconcile(p, None, quiet=True)
            db.session.commit()  # the sweep owns its transactions: one payment per commit
        except (UserError, DriverError) as exc:
            db.session.rollback()
            log.warning("sweep could not reconcile payment %s: %s", p.uuid, exc)
            status = "error"
        counts[status] = counts.get(status, 0) + 1
    return counts


def _sweep(op, payload):
    return reconcile_stale()  # the counts per resulting status become the operation's result


def _mark_sweep() -> None:
    from . import jobs  # jobs imports nothing of payments; marked here to keep the import order of the module

    jobs.handler("payments.reconcile_stale", every=SWEEP_EVERY_SECONDS, queue=jobs.MONEY)(_sweep)


_mark_sweep()
