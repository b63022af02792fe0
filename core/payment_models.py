"""Payments: the rows (payments, webhook deliveries, gateway settings) and their statuses."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import BigInteger, Boolean, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from . import clock
from .db import db, new_uuid
from .drivers import PaymentStatus
from .money import cents_to_decimal
from .sealed import SealedSettings, SealedSettingsMixin


# hostbay's payment statuses
PENDING, CONFIRMING, CREDITED = "pending", "confirming", "credited"
EXPIRED, UNDERPAID, INVALID, REVIEW = "expired", "underpaid", "invalid", "review"
STATUSES = (PENDING, CONFIRMING, CREDITED, EXPIRED, UNDERPAID, INVALID, REVIEW)
FINAL = (CREDITED, EXPIRED, INVALID, REVIEW)

LABELS = {
    PENDING: "Waiting for your payment",
    CONFIRMING: "Payment seen, waiting for confirmations",
    CREDITED: "Paid: added to your wallet",
    EXPIRED: "Expired: no payment arrived in time",
    UNDERPAID: "Underpaid: our staff will review it",
    INVALID: "Not completed",
    REVIEW: "Under review by our staff",
}

# How far along a status is; a delivery never moves a payment backwards.
_RANK = {PENDING: 0, CONFIRMING: 1, EXPIRED: 2, INVALID: 2, UNDERPAID: 3, CREDITED: 4, REVIEW: 5}

_FROM_PROVIDER = {
    PaymentStatus.PENDING: PENDING,
    PaymentStatus.CONFIRMING: CONFIRMING,
    PaymentStatus.UNDERPAID: UNDERPAID,
    PaymentStatus.EXPIRED: EXPIRED,
    PaymentStatus.INVALID: INVALID,
}

DEFAULT_MIN_CENTS = 500
DEFAULT_MAX_CENTS = 1_000_000


class Payment(db.Model):
    __tablename__ = "payments"
    __table_args__ = (UniqueConstraint("gateway", "provider_ref", name="gateway_provider_ref"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True, default=new_uuid)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    gateway: Mapped[str] = mapped_column(String(64))
    amount_cents: Mapped[int] = mapped_column(BigInteger)  # asked for, USD
    received_cents: Mapped[int | None] = mapped_column(BigInteger)  # USD actually received, when known
    status: Mapped[str] = mapped_column(String(16), default=PENDING, index=True)
    provider_ref: Mapped[str | None] = mapped_column(String(200))  # the provider's invoice id
    fetch_ref: Mapped[str | None] = mapped_column(String(200))  # provider's payment id when it differs
    provider_status: Mapped[str] = mapped_column(String(64), default="")  # raw, staff only
    checkout_url: Mapped[str | None] = mapped_column(String(1000))
    ledger_entry_id: Mapped[int | None] = mapped_column(ForeignKey("ledger_entries.id"), unique=True)
    overpaid: Mapped[bool] = mapped_column(Boolean, default=False)
    note: Mapped[str | None] = mapped_column(String(500))  # staff only
    created_at: Mapped[datetime] = mapped_column(default=lambda: clock.now(), index=True)
    updated_at: Mapped[datetime] = mapped_column(default=lambda: clock.now())
    credited_at: Mapped[datetime | None] = mapped_column()

    user = relationship("User", lazy="joined")
    ledger_entry = relationship("LedgerEntry")

    @property
    def label(self) -> str:
        return LABELS.get(self.status, self.status)

    @property
    def final(self) -> bool:
        return self.status in FINAL

    @property
    def amount(self) -> Decimal:
        return cents_to_decimal(self.amount_cents)


class WebhookDelivery(db.Model):
    """One verified delivery, kept for deduplication and audit. Forgeries are never stored."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (UniqueConstraint("gateway", "event_id", name="gateway_event"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    gateway: Mapped[str] = mapped_column(String(64))
    event_id: Mapped[str] = mapped_column(String(200))
    event_type: Mapped[str] = mapped_column(String(64), default="")
    payment_id: Mapped[int | None] = mapped_column(ForeignKey("payments.id"), index=True)
    received_at: Mapped[datetime] = mapped_column(default=lambda: clock.now(), index=True)
    outcome: Mapped[str] = mapped_column(String(32), default="")


class GatewayConfig(SealedSettingsMixin, db.Model):
    """A payment gateway's stored settings; its API keys and webhook secrets are stored sealed (core/sealed.py)."""

    __tablename__ = "gateway_configs"
    __settings_kind__ = "payment"
    __settings_driver__ = "name"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    settings: Mapped[dict] = mapped_column(SealedSettings, default=dict)
    updated_at: Mapped[datetime] = mapped_column(default=lambda: clock.now())
