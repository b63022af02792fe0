"""Bulk seeding of customers with due services (tests and bench/renewal_sweep.py): Core inserts, no ORM."""
from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import insert

from hostbay.core.accounts import User
from hostbay.core.db import db
from hostbay.core.ledger import LedgerEntry, Wallet
from hostbay.core.services import Service


def seed_due(package, *, users: int, per_user: int, price_cents: int, balance_cents, due_at: datetime,
             chunk: int = 5000, tag: str = "s") -> list[int]:
    """``users`` customers with ``per_user`` active monthly services each, all due at ``due_at``; a customer's
    balance is ``balance_cents`` (an int, or a function of the customer's index). Returns the user ids."""
    now = due_at
    ids: list[int] = []
    for start in range(0, users, chunk):
        n = min(chunk, users - start)
        rows = [{"uuid": str(uuid.uuid4()), "email": f"{tag}{start + i}@bench.test", "name": "", "role": "customer",
                 "password_hash": "x", "active": True, "created_at": now} for i in range(n)]
        new_ids = list(db.session.scalars(insert(User.__table__).returning(User.__table__.c.id), rows))
        ids.extend(new_ids)
        bal = [balance_cents(start + i) if callable(balance_cents) else balance_cents for i in range(n)]
        wallet_ids = list(db.session.scalars(insert(Wallet.__table__).returning(Wallet.__table__.c.id),
                                             [{"user_id": u, "balance_cents": b, "currency": "USD"}
                                              for u, b in zip(new_ids, bal)]))
        entries = [{"uuid": str(uuid.uuid4()), "wallet_id": w, "idempotency_key": f"seed:{tag}:{u}", "kind": "topup",
                    "amount_cents": b, "balance_after_cents": b, "actor_type": "system",
                    "description": "Seed top-up", "created_at": now} for u, w, b in zip(new_ids, wallet_ids, bal) if b]
        if entries:
            db.session.execute(insert(LedgerEntry.__table__), entries)
        svcs = [{"uuid": str(uuid.uuid4()), "user_id": u, "package_id": package.id, "kind": "vps", "state": "active",
                 "hostname": f"h{u}-{k}.bench.test", "cycle": "monthly", "price_cents": price_cents,
                 "ssh_key_ids": [], "period_start": now, "renews_at": due_at, "cancel_at_period_end": False,
                 "infra_ref": {}, "created_at": now, "updated_at": now}
                for u in new_ids for k in range(per_user)]
        db.session.execute(insert(Service.__table__), svcs)
        db.session.commit()
    return ids


def expected_outcome(balance: int, per_user: int, price: int) -> tuple[int, int]:
    renew = min(per_user, balance // price) if price else per_user
    return renew, per_user - renew
