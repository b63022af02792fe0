"""The built-in staff roles are data: rows of ``staff_roles`` (``builtin``) that every database has, seeded with
``accounts.DEFAULT_ROLE_PERMISSIONS``. Staff with ``staff.roles`` change support and billing in the role editor
(audited, in force at once); no built-in role is deleted, and admin is not edited: it holds every permission."""

import pytest
from sqlalchemy import create_engine, select

from hostbay.core import staff_roles
from hostbay.core.accounts import DEFAULT_ROLE_PERMISSIONS, NAMED_PERMISSIONS, User
from hostbay.core.activity import AuditEntry
from hostbay.core.db import db
from hostbay.core.errors import UserError
from hostbay.core.staff_roles import StaffRole
from hostbay.testing.pytest_plugin import login


def _row(name):
    db.session.expire_all()
    return db.session.scalar(select(StaffRole).filter_by(name=name))


def test_changing_the_support_row_changes_what_support_staff_may_do_at_once(app, make_user):
    admin, member = make_user(role="admin"), make_user(role="support")
    boss, support = app.test_client(), app.test_client()
    login(boss, admin)
    login(support, member)
    assert support.get("/staff/tickets/").status_code == 200
    assert support.get("/staff/network/").status_code == 404

    before = sorted(DEFAULT_ROLE_PERMISSIONS["support"])
    fewer = [p for p in before if p not in ("tickets.view", "tickets.reply")]
    resp = boss.post("/staff/team/roles", data={"name": "support", "label": "Support", "permission": fewer},
                     follow_redirects=True)
    assert b"Role support was saved." in resp.data
    assert _row("support").permissions == fewer and _row("support").builtin
    # the member's next request (no new login) no longer reaches the tickets, and the menu no longer offers them
    assert support.get("/staff/tickets/").status_code == 404
    assert not db.session.get(User, member.id).can("tickets.view")
    entry = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "staff_role.update",
                                                        AuditEntry.target_id == "support")).one()
    assert entry.before["permissions"] == before and entry.after["permissions"] == fewer

    boss.post("/staff/team/roles", data={"name": "support", "label": "Support", "permission": fewer + ["network.view"]})
    assert support.get("/staff/network/").status_code == 200
    assert support.get("/staff/tickets/").status_code == 404
    # the other built-in role is untouched
    billing = app.test_client()
    login(billing, make_user(role="billing"))
    assert billing.get("/staff/network/").status_code == 404 and billing.get("/staff/billing/").status_code == 200


def test_billing_is_edited_under_the_same_rules_as_custom_roles(app, make_user):
    """A member with staff.roles changes billing only when holding every old and new permission of it."""
    staff_roles.save_role("lead", "Lead", ["staff.accounts", "staff.roles", "customers.view", "audit.view"],
                          make_user(role="admin"))
    db.session.commit()
    lead = app.test_client()
    login(lead, make_user(role="lead"))
    resp = lead.post("/staff/team/roles", data={"name": "billing", "permission": ["audit.view"]},
                     follow_redirects=True)
    assert b"holds permissions you do not hold" in resp.data
    assert _row("billing").permissions == sorted(DEFAULT_ROLE_PERMISSIONS["billing"])
    page = lead.get("/staff/team/").get_data(as_text=True)
    assert 'data-edit-role="billing"' not in page and 'data-edit-role="lead"' in page


def test_built_in_roles_are_not_deleted_and_admin_is_not_edited(app, make_user):
    admin = make_user(role="admin")
    boss = app.test_client()
    login(boss, admin)
    for name in ("admin", "support", "billing"):
        resp = boss.post(f"/staff/team/roles/{name}/delete", follow_redirects=True)
        assert f"{name} is a built-in role; it cannot be deleted".encode() in resp.data, name
        assert _row(name) is not None and _row(name).builtin, name
    resp = boss.post("/staff/team/roles", data={"name": "admin", "permission": ["tickets.view"]},
                     follow_redirects=True)
    assert b"The admin role always holds every permission; it cannot be changed." in resp.data
    assert _row("admin").permissions == sorted(DEFAULT_ROLE_PERMISSIONS["admin"])
    with pytest.raises(UserError, match="admin role always holds every permission"):
        staff_roles.save_role("admin", "", ["tickets.view"], None)  # not even without an actor (scripts)
    # admin holds every permission whatever its row lists
    _row("admin").permissions = ["tickets.view"]
    db.session.commit()
    assert all(db.session.get(User, admin.id).can(p) for p in NAMED_PERMISSIONS)
    assert boss.get("/staff/network/").status_code == 200
    assert not db.session.scalars(select(AuditEntry).where(AuditEntry.action.like("staff_role.%"))).all()


def test_the_role_editor_offers_support_and_billing_but_not_admin(app, make_user):
    boss = app.test_client()
    login(boss, make_user(role="admin"))
    page = boss.get("/staff/team/").get_data(as_text=True)
    assert 'data-edit-role="support"' in page and 'data-edit-role="billing"' in page
    assert 'data-edit-role="admin"' not in page
    page = boss.get("/staff/team/?edit=billing").get_data(as_text=True)
    assert "Change the role billing" in page and 'name="name" value="billing" readonly' in page
    for perm in NAMED_PERMISSIONS:
        ticked = f'value="{perm}" checked' in page
        assert ticked == (perm in DEFAULT_ROLE_PERMISSIONS["billing"]), perm
    page = boss.get("/staff/team/?edit=admin").get_data(as_text=True)  # not offered for admin
    assert "Change the role admin" not in page and " checked" not in page


def test_a_database_made_by_create_all_has_the_built_in_rows(tmp_path):
    import hostbay.core.models  # noqa: F401 - every model on the metadata

    engine = create_engine(f"sqlite:///{tmp_path / 'fresh.sqlite3'}")
    db.metadata.create_all(engine)
    with engine.begin() as conn:
        rows = {r.name: (sorted(r.permissions), r.builtin) for r in conn.execute(select(StaffRole.__table__))}
        assert staff_roles.ensure_builtin_roles(conn) == 0  # idempotent
    engine.dispose()
    assert rows == {name: (sorted(perms), True) for name, perms in DEFAULT_ROLE_PERMISSIONS.items()}


def test_each_test_starts_with_the_default_built_in_rows(app):
    """The fixtures empty every table after a test and put the built-in rows back (the tests above edit them)."""
    rows = {r.name: sorted(r.permissions) for r in db.session.scalars(select(StaffRole))}
    assert rows == {name: sorted(perms) for name, perms in DEFAULT_ROLE_PERMISSIONS.items()}
