"""Idempotency keys of the REST API (``Idempotency-Key`` header on POSTs that move money or create servers).

One row per (user, key): the fingerprint of the first request (method, path and canonical body) and, once it
succeeded, its response. The row is written and committed *before* the work starts, under a unique constraint, so
of any number of concurrent requests with the same key exactly one runs; the others wait for its response and
replay it. A request whose work fails (4xx or 5xx) removes its row, so the client may retry with the same key once
it has fixed the cause (e.g. topped up the wallet). The domain functions keep their own keys as well
(``billing.place_order(key=...)``): even a lost row cannot charge twice.
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import datetime

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from . import clock, jobs
from .db import db

RUNNING, DONE = "running", "done"
KEEP_DAYS = 7  # how long a key is remembered
PURGE_KIND = "api.idempotency_purge"
MAX_KEY_LEN = 200
WAIT_SECONDS = 30.0


class IdempotencyRecord(db.Model):
    __tablename__ = "api_idempotency_keys"
    __table_args__ = (UniqueConstraint("user_id", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(MAX_KEY_LEN))
    fingerprint: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default=RUNNING)
    status_code: Mapped[int | None] = mapped_column()
    response_body: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=lambda: clock.now(), index=True)


def fingerprint(method: str, path: str, body: bytes) -> str:
    """The request's identity: JSON bodies compare by content (key order and spacing do not matter)."""
    try:
        canonical = json.dumps(json.loads(body or b"null"), sort_keys=True, separators=(",", ":")).encode()
    except ValueError:
        canonical = body or b""
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + canonical).hexdigest()


class KeyReused(Exception):
    """The key was used before with another request (a different body or endpoint)."""


class StillRunning(Exception):
    """The first request with this key has not finished within the wait."""


def begin(user_id: int, key: str, fp: str, wait: float = WAIT_SECONDS):
    """Claim ``key`` for this request. Returns ``None`` when this request is the first and must do the work, or
    ``(status_code, body_text)`` of the first request's response to replay. Commits the current session."""
    deadline = time.monotonic() + wait
    db.session.commit()
    rec = db.session.scalar(select(IdempotencyRecord).filter_by(user_id=user_id, key=key))
    if rec is not None and rec.state == DONE:  # the common replay: no failed insert first
        out = (rec.status_code, rec.response_body) if rec.fingerprint == fp else None
        db.session.rollback()
        if out is None:
            raise KeyReused()
        return out
    while True:
        db.session.commit()
        try:
            with db.session.begin_nested():
                db.session.add(IdempotencyRecord(user_id=user_id, key=key, fingerprint=fp, state=RUNNING))
            db.session.commit()
            return None
        except IntegrityError:
            db.session.rollback()
        rec = db.session.scalar(select(IdempotencyRecord).filter_by(user_id=user_id, key=key))
        if rec is not None:
            if rec.fingerprint != fp:
                db.session.rollback()
                raise KeyReused()
            if rec.state == DONE:
                out = (rec.status_code, rec.response_body)
                db.session.rollback()
                return out
        if time.monotonic() > deadline:
            db.session.rollback()
            raise StillRunning()
        db.session.rollback()  # end the snapshot, so the next look sees the other request's commit
        time.sleep(0.05)


def finish(user_id: int, key: str, status_code: int, body_text: str) -> None:
    """Keep a successful response for replays; forget the key after a failure (the client may retry)."""
    if 200 <= status_code < 300:
        db.session.commit()
    else:
        db.session.rollback()
    rec = db.session.scalar(select(IdempotencyRecord).filter_by(user_id=user_id, key=key))
    if rec is None:
        return
    if 200 <= status_code < 300:
        rec.state, rec.status_code, rec.response_body = DONE, status_code, body_text
    else:
        db.session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.id == rec.id))
    db.session.commit()


def purge(older_than: datetime) -> int:
    """Forget keys older than ``older_than`` (a client retries within hours, not months)."""
    res = db.session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.created_at < older_than))
    return res.rowcount or 0


@jobs.handler(PURGE_KIND, queue=jobs.NOTIFY)
def purge_job(op, payload):
    """Scheduled (hourly, through ``hostbay_scheduled_jobs`` of the API's hooks): forget keys older than a week."""
    from datetime import timedelta

    n = purge(clock.now() - timedelta(days=KEEP_DAYS))
    db.session.commit()
    return {"purged": n}
