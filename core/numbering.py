"""Numbers reserved inside a range, for drivers whose infrastructure names things by number (a Proxmox VMID).

A reservation is one row ``(scope, number, owner)``; ``(scope, number)`` and ``(scope, owner)`` are unique, so two
workers can never be handed the same number and an owner (a service UUID) keeps its number across retries. Each
call commits on its own connection at once: the number is durable before the driver creates anything with it, so a
worker killed right after creating the server finds the same number when the job is retried.

``scope`` groups the numbers that share one namespace (for Proxmox: the cluster, i.e. the API URL); the range
``[lo, hi]`` is the caller's (the node's ``vmid_min``/``vmid_max``). A number that the infrastructure reports as
already used by something else is recorded with :func:`mark_foreign`, so no later reservation picks it again.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, UniqueConstraint, delete, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from . import clock
from .db import db
from .errors import FatalDriverError

FOREIGN = "foreign:"


class ReservedNumber(db.Model):
    __tablename__ = "reserved_numbers"
    __table_args__ = (UniqueConstraint("scope", "number"), UniqueConstraint("scope", "owner"))

    id: Mapped[int] = mapped_column(primary_key=True)
    scope: Mapped[str] = mapped_column(String(255))
    number: Mapped[int] = mapped_column()
    owner: Mapped[str] = mapped_column(String(64))  # a service UUID, or "foreign:<number>"
    created_at: Mapped[datetime] = mapped_column(default=lambda: clock.now())


T = ReservedNumber.__table__


def _conn():
    """A connection outside the caller's transaction (committed at once); on SQLite, whose single writer may be
    held by the caller's own transaction, that transaction's connection instead."""
    session = db.session()
    if db.engine.dialect.name == "sqlite" and session.in_transaction():
        return None
    return db.engine.begin()


def _run(fn):
    cm = _conn()
    if cm is None:
        with db.session.begin_nested():
            return fn(db.session.connection())
    with cm as conn:
        return fn(conn)


def lookup(scope: str, owner: str) -> int | None:
    def q(conn):
        return conn.execute(select(T.c.number).where(T.c.scope == scope, T.c.owner == owner)).scalar()
    return _run(q)


def reserve(scope: str, lo: int, hi: int, owner: str) -> int:
    """The number ``owner`` holds in ``scope``, reserving the lowest free one in ``[lo, hi]`` if it holds none."""
    if lo > hi:
        raise FatalDriverError(f"empty number range {lo}..{hi} for {scope}")
    for _attempt in range(50):
        held = lookup(scope, owner)
        if held is not None:
            return held

        def take(conn):
            used = set(conn.execute(select(T.c.number).where(T.c.scope == scope, T.c.number >= lo,
                                                             T.c.number <= hi)).scalars())
            free = next((n for n in range(lo, hi + 1) if n not in used), None)
            if free is None:
                raise FatalDriverError(f"every number in {lo}..{hi} of {scope} is taken",
                                       customer_message="No server capacity is available right now. Our staff "
                                                        "have been notified.")
            conn.execute(insert(T).values(scope=scope, number=free, owner=owner, created_at=clock.now()))
            return free
        try:
            return _run(take)
        except IntegrityError:  # another worker took that number (or this owner raced itself): look again
            continue
    raise FatalDriverError(f"could not reserve a number in {lo}..{hi} of {scope} after 50 attempts")


def mark_foreign(scope: str, number: int, owner: str) -> None:
    """``number`` is used by something hostbay did not create: give it up (if ``owner`` held it) and keep it
    reserved so nobody picks it again. The owner's next :func:`reserve` picks another number."""
    def q(conn):
        conn.execute(delete(T).where(T.c.scope == scope, T.c.number == number, T.c.owner == owner))
        try:
            with conn.begin_nested():
                conn.execute(insert(T).values(scope=scope, number=number, owner=f"{FOREIGN}{number}",
                                              created_at=clock.now()))
        except IntegrityError:
            pass
    _run(q)


def release(scope: str, owner: str) -> None:
    """Give the owner's number back (the server it named is gone)."""
    _run(lambda conn: conn.execute(delete(T).where(T.c.scope == scope, T.c.owner == owner)))


def held_in(scope: str) -> dict[int, str]:
    """Every reservation of ``scope``: number → owner."""
    return dict(_run(lambda conn: conn.execute(select(T.c.number, T.c.owner).where(T.c.scope == scope)).all()))
