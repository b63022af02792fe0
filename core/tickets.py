"""Support tickets: opened by customers in the panel or by anyone through the contact page, answered by staff.

A ticket has a public UUID, an optional service (which must belong to the ticket's customer), a subject and a
status: ``open`` (waiting for staff), ``answered`` (staff replied, waiting for the customer) or ``closed``. A
customer reply re-opens an answered ticket. Contact-page requests are tickets without a user (``source`` =
``contact``) unless the visitor was logged in.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, Text, func, select
from sqlalchemy.orm import Mapped, mapped_column, relationship

from . import clock
from .accounts import User, normalise_email
from .activity import audit, log_activity
from .db import db, new_uuid
from .errors import UserError
from .services import Service, get_customer_service

OPEN, ANSWERED, CLOSED = "open", "answered", "closed"
STATUSES = (OPEN, ANSWERED, CLOSED)
STATUS_LABELS = {OPEN: "Waiting for support", ANSWERED: "Answered", CLOSED: "Closed"}
MAX_SUBJECT = 200
MAX_BODY = 10000


class Ticket(db.Model):
    __tablename__ = "tickets"

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True, default=new_uuid)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    service_id: Mapped[int | None] = mapped_column(ForeignKey("services.id", ondelete="SET NULL"))
    subject: Mapped[str] = mapped_column(String(MAX_SUBJECT))
    status: Mapped[str] = mapped_column(String(16), default=OPEN, index=True)
    source: Mapped[str] = mapped_column(String(16), default="panel")  # panel, contact
    contact_name: Mapped[str] = mapped_column(String(120), default="")
    contact_email: Mapped[str | None] = mapped_column(String(254))
    created_at: Mapped[datetime] = mapped_column(default=lambda: clock.now())
    updated_at: Mapped[datetime] = mapped_column(default=lambda: clock.now(), index=True)
    closed_at: Mapped[datetime | None] = mapped_column()

    user = relationship("User")
    service = relationship("Service")
    messages = relationship("TicketMessage", back_populates="ticket", order_by="TicketMessage.id",
                            cascade="all, delete-orphan")

    @property
    def label(self) -> str:
        return STATUS_LABELS.get(self.status, self.status)

    @property
    def reply_to(self) -> str | None:
        return self.user.email if self.user is not None else self.contact_email


class TicketMessage(db.Model):
    __tablename__ = "ticket_messages"

    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), index=True)
    author_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    staff: Mapped[bool] = mapped_column(default=False)
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=lambda: clock.now())

    ticket = relationship("Ticket", back_populates="messages")
    author = relationship("User")


def _clean(subject: str, body: str) -> tuple[str, str]:
    subject = " ".join((subject or "").split())
    body = (body or "").strip()
    if not subject:
        raise UserError("Enter a subject.")
    if len(subject) > MAX_SUBJECT:
        raise UserError(f"The subject can have at most {MAX_SUBJECT} characters.")
    return subject, _clean_body(body)


def _clean_body(body: str) -> str:
    body = (body or "").strip()
    if not body:
        raise UserError("Write a message.")
    if len(body) > MAX_BODY:
        raise UserError(f"A message can have at most {MAX_BODY:,} characters.")
    return body


def _own_service(user: User | None, service_uuid: str | None) -> Service | None:
    if not service_uuid:
        return None
    service = get_customer_service(user.id, service_uuid) if user is not None else None
    if service is None:
        raise UserError("Choose one of your services, or none.")
    return service


def open_ticket(user: User, subject: str, body: str, service_uuid: str | None = None) -> Ticket:
    subject, body = _clean(subject, body)
    service = _own_service(user, service_uuid)
    ticket = Ticket(user_id=user.id, service=service, subject=subject, source="panel")
    ticket.messages.append(TicketMessage(author_id=user.id, staff=False, body=body))
    db.session.add(ticket)
    db.session.flush()
    log_activity(user.id, "ticket", f"Support ticket opened: {subject}", service.id if service else None)
    return ticket


def submit_contact(name: str, email: str, subject: str, body: str, *, user: User | None = None,
                   service_uuid: str | None = None) -> Ticket:
    """A contact-page request. A logged-in visitor's request is attached to their account (and service)."""
    subject, body = _clean(subject, body)
    name = " ".join((name or "").split())[:120]
    email = user.email if user is not None else normalise_email(email)
    service = _own_service(user, service_uuid)
    ticket = Ticket(user_id=getattr(user, "id", None), service=service, subject=subject, source="contact",
                    contact_name=name, contact_email=email)
    ticket.messages.append(TicketMessage(author_id=getattr(user, "id", None), staff=False, body=body))
    db.session.add(ticket)
    db.session.flush()
    if user is not None:
        log_activity(user.id, "ticket", f"Contact request sent: {subject}", service.id if service else None)
    return ticket


def customer_tickets(user_id: int):
    return select(Ticket).where(Ticket.user_id == user_id)


def get_customer_ticket(user_id: int, uuid: str) -> Ticket | None:
    return db.session.scalar(customer_tickets(user_id).where(Ticket.uuid == uuid))


def reply(ticket: Ticket, author: User, body: str, *, staff: bool) -> TicketMessage:
    body = _clean_body(body)
    if ticket.status == CLOSED and not staff:
        raise UserError("This ticket is closed. Open a new one if you need more help.")
    msg = TicketMessage(author_id=author.id, staff=staff, body=body)
    ticket.messages.append(msg)
    ticket.status = ANSWERED if staff else OPEN
    ticket.closed_at = None
    ticket.updated_at = clock.now()
    if staff:
        audit("ticket.reply", "ticket", ticket.uuid, actor=author)
    db.session.flush()
    return msg


def close(ticket: Ticket, actor: User, *, staff: bool) -> None:
    if ticket.status == CLOSED:
        return
    ticket.status = CLOSED
    ticket.closed_at = ticket.updated_at = clock.now()
    if staff:
        audit("ticket.close", "ticket", ticket.uuid, actor=actor)
    elif ticket.user_id is not None:
        log_activity(ticket.user_id, "ticket", f"Support ticket closed: {ticket.subject}", ticket.service_id)


def status_counts() -> dict[str, int]:
    rows = db.session.execute(select(Ticket.status, func.count()).group_by(Ticket.status)).all()
    return {status: n for status, n in rows}
