"""Notices of a planned maintenance to the customers it concerns, ahead of time and exactly once.

They are core's notices (``hostbay.core.notices``): one row per customer and window with the unique key
``maintenance:<window uuid>:<customer uuid>``, mailed by core's notice sender. However often the tick runs, and
whatever the number of schedulers, a customer gets one notice per window.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import select

from hostbay.core.db import db
from hostbay.core.notices import Notice

from .models import MAINT_SCHEDULED, Maintenance


def _base_url() -> str:
    return current_app.config.get("HOSTBAY_BASE_URL", "http://127.0.0.1:5000").rstrip("/")


def _insert_new(rows: list[dict]) -> int:
    """INSERT ... ON CONFLICT (key) DO NOTHING: a notice that exists stays as it is. Returns how many were new."""
    if db.engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stmt = insert(Notice.__table__).on_conflict_do_nothing(index_elements=["key"]).returning(Notice.__table__.c.id)
    return sum(len(db.session.execute(stmt, [row]).all()) for row in rows)


def create_maintenance_notices(now: datetime) -> int:
    """For every window asking for notices whose start is within its notice lead time, add one notice per
    affected customer. Returns how many rows were new."""
    from hostbay.core.accounts import User

    from .status import services_of

    due = db.session.scalars(select(Maintenance).where(
        Maintenance.notify.is_(True), Maintenance.status == MAINT_SCHEDULED,
        Maintenance.notices_created_at.is_(None), Maintenance.scheduled_for > now)).all()
    created = 0
    for m in due:
        if m.scheduled_for - timedelta(hours=m.notice_hours) > now:
            continue
        per_user: dict[int, list[str]] = {}
        first_service: dict[int, int] = {}
        for sid, _uuid, uid, hostname in services_of({c.id for c in m.components}):
            per_user.setdefault(uid, []).append(hostname)
            first_service.setdefault(uid, sid)
        uuids = dict(db.session.execute(select(User.id, User.uuid).where(User.id.in_(per_user or {0}))).all())
        rows = []
        for uid, hosts in per_user.items():
            body = (f"Planned maintenance: {m.name}\n\n"
                    f"From {m.scheduled_for:%Y-%m-%d %H:%M} to {m.scheduled_until:%Y-%m-%d %H:%M} UTC.\n\n"
                    + (m.body.strip() + "\n\n" if m.body.strip() else "")
                    + "Your services concerned: " + ", ".join(sorted(hosts)) + "\n\n"
                    f"Details: {_base_url()}/status/maintenance/{m.uuid}\n")
            rows.append({"key": f"maintenance:{m.uuid}:{uuids[uid]}", "user_id": uid,
                         "service_id": first_service[uid] if len(hosts) == 1 else None, "kind": "maintenance",
                         "subject": f"Planned maintenance on {m.scheduled_for:%Y-%m-%d}: {m.name}"[:200],
                         "body": body, "created_at": now, "attempts": 0})
        if rows:
            created += _insert_new(rows)
        m.notices_created_at = now
    return created
