"""`hostbay db upgrade` builds exactly the schema the models describe, on SQLite and PostgreSQL."""

import json
import os
import subprocess
import sys

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from hostbay.core.db import db


@pytest.fixture
def empty_database_url(database_url, tmp_path):
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrations.sqlite3'}"
        return
    name = f"{url.database}_migrations"
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield url.set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_upgrade_matches_models(empty_database_url, tmp_path, app):
    env = dict(os.environ, HOSTBAY_DATABASE_URL=empty_database_url, HOSTBAY_INSTANCE_PATH=str(tmp_path / "i"))
    out = subprocess.run([sys.executable, "-m", "hostbay.web.cli", "db", "upgrade"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    engine = create_engine(empty_database_url)
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, db.metadata)
    engine.dispose()
    assert diff == [], f"models and migrations disagree: {diff}"


def _cli(url, tmp_path, *args):
    env = dict(os.environ, HOSTBAY_DATABASE_URL=url, HOSTBAY_INSTANCE_PATH=str(tmp_path / "i"))
    out = subprocess.run([sys.executable, "-m", "hostbay.web.cli", *args], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return out


def test_upgrade_seeds_the_built_in_staff_roles_and_keeps_custom_ones(empty_database_url, tmp_path, app):
    """A database at the schema before the built-in roles became rows, with a custom role: `db upgrade` adds
    admin, support and billing (builtin) with their default permissions and leaves the custom role as it was."""
    from hostbay.core.accounts import DEFAULT_ROLE_PERMISSIONS

    _cli(empty_database_url, tmp_path, "db", "upgrade", "0001")
    engine = create_engine(empty_database_url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO staff_roles (name, label, permissions) VALUES ('helpdesk', 'Help desk', "
                          "'[\"tickets\"]')"))
    _cli(empty_database_url, tmp_path, "db", "upgrade")
    with engine.connect() as conn:
        rows = {r.name: (r.label, sorted(r.permissions if isinstance(r.permissions, list)
                                         else json.loads(r.permissions)), bool(r.builtin))
                for r in conn.execute(text("SELECT name, label, permissions, builtin FROM staff_roles"))}
    engine.dispose()
    assert rows == {"helpdesk": ("Help desk", ["tickets"], False),
                    **{name: (name.capitalize(), sorted(perms), True)
                       for name, perms in DEFAULT_ROLE_PERMISSIONS.items()}}
    _cli(empty_database_url, tmp_path, "create-admin", "--email", "s@example.test", "--password", "a-long-password",
         "--role", "support")
