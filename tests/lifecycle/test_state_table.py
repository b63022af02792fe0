"""One table for state changes: services.state is written only by services.transition / transition_bulk. The
guard is on in every test (create_app installs it when testing), so any code path of the suite that wrote the
column another way would fail; these tests show the guard itself fails such code, and that the bulk form obeys
the table."""

import importlib.util
import re
import textwrap
from pathlib import Path

import pytest

from hostbay.core import services
from hostbay.core.db import db

ROOT = Path(__file__).resolve().parents[2]


def _offender(tmp_path, body: str):
    """A module outside the test tree (the guard lets test set-up put rows into any state)."""
    path = tmp_path / "offender.py"
    path.write_text(textwrap.dedent(body))
    spec = importlib.util.spec_from_file_location("offender", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_an_orm_write_of_the_state_column_is_refused(app, make_user, make_package, make_service, tmp_path):
    svc = make_service(make_user(), make_package())
    mod = _offender(tmp_path, """
        from hostbay.core.db import db

        def suspend(svc):
            svc.state = "suspended"
            db.session.flush()
    """)
    with pytest.raises(services.StateWriteOutsideTransition):
        mod.suspend(svc)
    db.session.rollback()


def test_a_core_update_of_the_state_column_is_refused(app, make_user, make_package, make_service, tmp_path):
    svc = make_service(make_user(), make_package())
    mod = _offender(tmp_path, """
        from sqlalchemy import text, update
        from hostbay.core.db import db
        from hostbay.core.services import Service

        def by_update(sid):
            db.session.execute(update(Service).where(Service.id == sid).values(state="cancelled"))

        def by_sql(sid):
            db.session.execute(text("UPDATE services SET hostname = hostname, state = 'cancelled' WHERE id = :i"),
                               {"i": sid})
    """)
    for fn in (mod.by_update, mod.by_sql):
        with pytest.raises(services.StateWriteOutsideTransition):
            fn(svc.id)
        db.session.rollback()
    # the table's own functions pass the guard
    assert services.transition(svc, services.SUSPENDED, expect=services.ACTIVE)
    db.session.commit()


def test_bulk_transition_obeys_the_table(app, make_user, make_package, make_service):
    user, pkg = make_user(), make_package()
    a, b = make_service(user, pkg), make_service(user, pkg)
    c = make_service(user, pkg, state=services.PENDING)
    moved = services.transition_bulk([a.id, b.id, c.id], services.SUSPENDED, expect=services.ACTIVE,
                                     suspended_at=a.period_start)
    db.session.commit()
    assert sorted(moved) == sorted([a.id, b.id])  # c was not in the expected state
    for s in (a, b, c):
        db.session.refresh(s)
    assert a.state == b.state == services.SUSPENDED and a.suspended_at == a.period_start
    assert c.state == services.PENDING
    with pytest.raises(ValueError, match="illegal transition"):
        services.transition_bulk([c.id], services.ACTIVE, expect=services.PENDING)


def test_no_source_builds_a_raw_state_update_of_services():
    """Statements sent on a raw driver cursor bypass the guard: none of hostbay's code writes the column so."""
    pattern = re.compile(r'UPDATE\s+\\?"?services\\?"?\s+SET[^;"]*\bstate\b', re.I)
    bulk_state = re.compile(r'_bulk_update\(\s*s\s*,[^)]*"state"', re.S)
    offenders = []
    for folder in ("core", "web", "plugins"):
        for p in (ROOT / folder).rglob("*.py"):
            if "/tests/" in str(p) or p.name == "services.py" or "migrations" in p.parts:
                continue
            text = p.read_text()
            if pattern.search(text) or bulk_state.search(text):
                offenders.append(str(p.relative_to(ROOT)))
    assert offenders == []
