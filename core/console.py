"""Console tokens: single-use, bound to one signed-in user and one service, valid for at most 60 seconds.

Only the SHA-256 of a token is stored. :func:`redeem` spends a token with one conditional UPDATE (unused and not
expired), so of two connections presenting the same token exactly one wins; it then checks ownership and the
service's state again, because either may have changed since the token was issued, and returns the driver's
:class:`~hostbay.core.drivers.ConsoleTarget`. The target is for the console proxy only and never reaches a
customer.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import ForeignKey, String, delete, select, update
from sqlalchemy.orm import Mapped, mapped_column

from . import clock, jobs, services
from .accounts import User
from .activity import log_activity
from .db import db
from .drivers import ConsoleTarget
from .errors import ActionNotAllowed, NotFound, UserError

MAX_TTL_SECONDS = 60


class ConsoleRefused(UserError):
    """The token is unknown, spent, expired, or no longer allowed to open this console."""

    def __init__(self, message: str = "This console link has expired or was already used. Open the console again."):
        super().__init__(message)


class ConsoleToken(db.Model):
    __tablename__ = "console_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("services.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=lambda: clock.now())
    expires_at: Mapped[datetime] = mapped_column(index=True)
    used_at: Mapped[datetime | None] = mapped_column()


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def ttl_seconds() -> int:
    return max(1, min(MAX_TTL_SECONDS, int(current_app.config.get("HOSTBAY_CONSOLE_TOKEN_SECONDS", 60))))


def _check_allowed(user: User | None, service: services.Service | None, user_id: int) -> services.Service:
    """The service must exist, be visible to and owned by ``user_id`` (an active account), and allow "console"."""
    if user is None or not user.active or user.id != user_id:
        raise NotFound("No such service.")
    if service is None or service.user_id != user.id or service.state in services.HIDDEN_FROM_CUSTOMER:
        raise NotFound("No such service.")
    services.require_action(service, "console")
    return service


def issue(user: User, service: services.Service) -> str:
    """A new console token for ``user`` on ``service``; raises NotFound / ActionNotAllowed when refused."""
    _check_allowed(user, service, getattr(user, "id", None))
    if service.node is None or not service.infra_ref:
        raise ActionNotAllowed("The console is available once the server is set up.")
    token = secrets.token_urlsafe(32)
    now = clock.now()
    db.session.add(ConsoleToken(token_hash=_hash(token), user_id=user.id, service_id=service.id, created_at=now,
                                expires_at=now + timedelta(seconds=ttl_seconds())))
    db.session.flush()  # "Web console opened" is logged when the proxy has connected (see record_opened)
    return token


def redeem(token: str) -> ConsoleTarget:
    """Spend ``token`` and return where the console is. Raises :class:`ConsoleRefused` when refused.

    Commits the spending even when a later check refuses, so a refused token stays spent."""
    return redeem_for(token)[0]


def record_opened(user_id: int, service_id: int) -> None:
    """The outcome, logged by the proxy once it has connected to the console (not when a link was issued)."""
    log_activity(user_id, "console", "Web console opened.", service_id)
    db.session.commit()


def redeem_for(token: str) -> tuple[ConsoleTarget, int, int]:
    """:func:`redeem`, also returning the token's user and service ids (for :func:`record_opened`)."""
    if not token or len(token) > 200:
        raise ConsoleRefused()
    h = _hash(token)
    now = clock.now()
    res = db.session.execute(
        update(ConsoleToken)
        .where(ConsoleToken.token_hash == h, ConsoleToken.used_at.is_(None), ConsoleToken.expires_at > now)
        .values(used_at=now).execution_options(synchronize_session=False))
    db.session.commit()
    if res.rowcount != 1:
        raise ConsoleRefused()
    row = db.session.scalar(select(ConsoleToken).where(ConsoleToken.token_hash == h))
    user = db.session.get(User, row.user_id)
    service = db.session.get(services.Service, row.service_id)
    try:
        _check_allowed(user, service, row.user_id)
    except (NotFound, ActionNotAllowed) as exc:
        raise ConsoleRefused("The console is not available for this service right now.") from exc
    if service.node is None or not service.infra_ref:
        raise ConsoleRefused("The console is available once the server is set up.")
    from .service_drivers import driver_for

    return driver_for(service, need_server=True).console_target(service.infra_ref), row.user_id, row.service_id


def purge_expired(older_than_seconds: int = 3600) -> int:
    cutoff = clock.now() - timedelta(seconds=older_than_seconds)
    res = db.session.execute(delete(ConsoleToken).where(ConsoleToken.expires_at < cutoff))
    db.session.commit()
    return res.rowcount


@jobs.handler("console.purge_tokens", every=3600, queue=jobs.NOTIFY)
def handle_purge(op, payload):
    return {"removed": purge_expired()}

