"""Login sessions that can be ended from the server side.

Flask keeps the session in a signed cookie, so a copied cookie stays valid until it expires unless the server
can tell it apart from a fresh one. Every account has a ``session_generation`` counter; a login writes the current
value into the session, and every request compares it with the account's (the user loader does, once per
request). Bumping the counter (:func:`end_all_sessions`) therefore ends every session of that account at once,
on every device: logout, a password change or reset, a two-factor change and a staff lock do it. After a password
or two-factor change the browser that made the change is signed in again with the new generation
(:func:`renew_current`), so only the other sessions end.

A session also ends after ``HOSTBAY_SESSION_HOURS`` (the cookie's lifetime and a server-side check of the login
time, so an old cookie is refused even when a client ignores the expiry).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from flask import current_app, session
from sqlalchemy import update

from . import clock
from .accounts import User
from .db import db

GEN_KEY = "_hb_gen"
AT_KEY = "_hb_at"


def lifetime() -> timedelta:
    return timedelta(hours=int(current_app.config.get("HOSTBAY_SESSION_HOURS", 336)))


def start(user: User) -> None:
    """Record in the (already logged-in) session which generation of ``user``'s sessions it belongs to."""
    session[GEN_KEY] = int(user.session_generation or 0)
    session[AT_KEY] = clock.now().isoformat()
    session.permanent = True


def is_current(user: User) -> bool:
    """Whether the request's session still belongs to ``user``'s current generation and is within its lifetime."""
    if session.get(GEN_KEY) != int(user.session_generation or 0):
        return False
    try:
        at = datetime.fromisoformat(session.get(AT_KEY, ""))
    except (TypeError, ValueError):
        return False
    return clock.now() - at <= lifetime()


def end_all_sessions(user: User) -> None:
    """End every session of ``user`` (the caller commits). An atomic increment, so two concurrent calls both
    count."""
    user = _real(user)
    db.session.execute(update(User).where(User.id == user.id)
                       .values(session_generation=User.session_generation + 1)
                       .execution_options(synchronize_session=False))
    db.session.refresh(user)


def renew_current(user: User) -> None:
    """Keep the request's own session after :func:`end_all_sessions` (call it after the commit)."""
    from flask_login import login_user

    user = _real(user)
    login_user(user)
    start(user)


def _real(user):
    """The user object behind Flask-Login's ``current_user`` proxy (logging the proxy in would make it point at
    itself)."""
    return user._get_current_object() if hasattr(user, "_get_current_object") else user
