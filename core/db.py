"""The database handle and helpers shared by every model module."""

from __future__ import annotations

import uuid

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


db = SQLAlchemy(model_class=Base)


def new_uuid() -> str:
    return str(uuid.uuid4())


def is_postgres() -> bool:
    return db.engine.dialect.name == "postgresql"


def configure_sqlite(engine) -> None:
    """SQLite (embedded mode): WAL, foreign keys, and BEGIN IMMEDIATE so concurrent writers queue on the busy
    timeout instead of failing on a stale snapshot."""
    from sqlalchemy import event

    if engine.dialect.name != "sqlite" or getattr(engine, "_hostbay_configured", False):
        return
    engine._hostbay_configured = True

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        if ":memory:" not in str(engine.url):
            cur.execute("PRAGMA journal_mode=WAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
