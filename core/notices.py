"""E-mail notices, each sent exactly once.

A notice is a row with a unique ``key`` (``reminder7:<service uuid>:<renews_at>``, ``suspended:<uuid>:<renews_at>``),
so however often the reminder sweep runs, a notice exists once. Sending claims the row with a conditional UPDATE
(``sending_at`` from NULL to now) and commits before talking to the SMTP server, so two senders never mail the
same notice; after the server accepted it the row gets ``sent_at``. A failed delivery clears the claim (it is tried
again next run); a process that dies between the server's acceptance and the ``sent_at`` write leaves the claim in
place and the notice is not mailed a second time (staff see it as "sending" on the service's page).

Without ``HOSTBAY_SMTP_URL`` notices are recorded but not mailed.
"""

from __future__ import annotations

import logging
import smtplib
from datetime import datetime, timedelta
from email.message import EmailMessage
from urllib.parse import urlsplit

from flask import current_app
from sqlalchemy import ForeignKey, String, Text, select, update
from sqlalchemy.orm import Mapped, mapped_column

from . import clock, links
from .db import db
from .money import format_cents

log = logging.getLogger(__name__)

REMINDER_DAYS = (7, 1)


class Notice(db.Model):
    __tablename__ = "notices"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    service_id: Mapped[int | None] = mapped_column(ForeignKey("services.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))  # reminder, suspended
    subject: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=lambda: clock.now())
    sending_at: Mapped[datetime | None] = mapped_column()
    sent_at: Mapped[datetime | None] = mapped_column(index=True)
    attempts: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(String(500))


def _base_url() -> str:
    return current_app.config.get("HOSTBAY_BASE_URL", "http://127.0.0.1:5000")


_UUID_MARK = "00000000-0000-4000-8000-000000000000"


def suspension_notice_context() -> dict:
    """What every suspension notice of one sweep batch shares, computed once per batch: the retention period, the
    top-up link and the service link (built for a marker UUID, which each row replaces with its own)."""
    from .policy import retention_days

    return {"days": retention_days(), "topup": links.url("topup"),
            "service": links.url("service", uuid=_UUID_MARK)}


def suspension_notice_row(r, balance_cents: int, now: datetime, ctx: dict | None = None) -> dict:
    """The notice row for a service the renewal sweep suspended (``r``: a row with uuid, id, user_id, hostname,
    price_cents, renews_at; ``ctx``: :func:`suspension_notice_context`, computed anew when not given)."""
    ctx = ctx or suspension_notice_context()
    short = r.price_cents - balance_cents
    days = ctx["days"]
    body = (f"Your server {r.hostname} was suspended because its renewal of {format_cents(r.price_cents)} could "
            f"not be paid: your wallet balance is {format_cents(balance_cents)}.\n\n"
            f"Add at least {format_cents(short)} and renew the service within {days} days to keep it; after that it "
            f"is removed with its data.\n\nTop up: {ctx['topup']}\n"
            f"Your service: {ctx['service'].replace(_UUID_MARK, r.uuid)}\n")
    return {"key": f"suspended:{r.uuid}:{r.renews_at:%Y%m%dT%H%M%S}", "user_id": r.user_id, "service_id": r.id,
            "kind": "suspended", "subject": f"{r.hostname} is suspended: renew within {days} days",
            "body": body, "created_at": now, "attempts": 0}


def create_reminders(now: datetime | None = None) -> int:
    """Create a reminder for every active service whose renewal is within 7 days and within 1 day (one notice per
    threshold and period). Returns how many were new."""
    from . import ledger
    from .bulk import _insert_ignore
    from .services import ACTIVE, Service

    now = now or clock.now()
    created = 0
    for days in REMINDER_DAYS:
        rows = []
        due = db.session.execute(
            select(Service.id, Service.uuid, Service.user_id, Service.hostname, Service.price_cents,
                   Service.renews_at, Service.cancel_at_period_end)
            .where(Service.state == ACTIVE, Service.renews_at > now,
                   Service.renews_at <= now + timedelta(days=days))).all()
        for r in due:
            if r.cancel_at_period_end or r.price_cents <= 0:
                continue
            bal = ledger.balance_cents(r.user_id)
            body = (f"Your server {r.hostname} renews on {r.renews_at:%Y-%m-%d %H:%M} UTC for "
                    f"{format_cents(r.price_cents)}, paid from your wallet (balance {format_cents(bal)}).\n")
            if bal < r.price_cents:
                body += (f"\nAdd at least {format_cents(r.price_cents - bal)} before then, or the service is "
                         f"suspended.\nTop up: {links.url('topup')}\n")
            rows.append({"key": f"reminder{days}:{r.uuid}:{r.renews_at:%Y%m%dT%H%M%S}", "user_id": r.user_id,
                         "service_id": r.id, "kind": "reminder",
                         "subject": f"{r.hostname} renews on {r.renews_at:%Y-%m-%d}", "body": body,
                         "created_at": now, "attempts": 0})
        if rows:
            created += len(_insert_ignore(Notice.__table__, rows, Notice.__table__.c.key,
                                          returning=Notice.__table__.c.id))
    db.session.commit()
    return created


def _smtp_target():
    url = current_app.config.get("HOSTBAY_SMTP_URL")
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme != "smtp":
        raise ValueError("HOSTBAY_SMTP_URL must look like smtp://host:port")
    return parts.hostname or "127.0.0.1", parts.port or 25


def send_pending(limit: int = 500) -> int:
    """Mail unsent notices (each exactly once); returns how many the server accepted."""
    from .accounts import User

    target = _smtp_target()
    if target is None:
        return 0
    ids = db.session.scalars(select(Notice.id).where(Notice.sent_at.is_(None), Notice.sending_at.is_(None))
                             .order_by(Notice.id).limit(limit)).all()
    db.session.commit()
    sent = 0
    for nid in ids:
        claimed = db.session.execute(update(Notice).where(Notice.id == nid, Notice.sending_at.is_(None),
                                                          Notice.sent_at.is_(None))
                                     .values(sending_at=clock.now(), attempts=Notice.attempts + 1)
                                     .execution_options(synchronize_session=False)).rowcount
        db.session.commit()
        if not claimed:
            continue
        notice = db.session.get(Notice, nid)
        db.session.refresh(notice)
        user = db.session.get(User, notice.user_id)
        from .mail_templates import build

        msg = build(user.email, notice.subject, notice.body)  # plain text + HTML, in the installation's brand
        msg["Message-ID"] = f"<notice-{notice.id}-{notice.key.replace(':', '.')}@hostbay>"
        try:
            with smtplib.SMTP(*target, timeout=30) as smtp:
                smtp.send_message(msg)
        except (OSError, smtplib.SMTPException) as exc:
            notice.sending_at = None
            notice.error = f"{type(exc).__name__}: {exc}"[:500]
            db.session.commit()
            log.warning("notice %s not sent: %s", notice.id, notice.error)
            continue
        notice.sent_at = clock.now()
        notice.error = None
        db.session.commit()
        sent += 1
    return sent
