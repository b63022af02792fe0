"""Staff roles as data: every staff role is a row of ``staff_roles``, a name and the named permissions it holds
(from :data:`accounts.NAMED_PERMISSIONS`, picked per action in the role editor on the staff accounts page, grouped
by area, each with its one-line description). The built-in rows (admin, support, billing; ``builtin``) exist in
every database (:func:`ensure_builtin_roles`, and the migration that added them) with the permissions of
:data:`accounts.DEFAULT_ROLE_PERMISSIONS`; they are never deleted or renamed. Staff with ``staff.roles`` change
support and billing in the same editor as the custom roles they add; admin is not edited: it always holds every
permission. A user whose ``role`` names a row is staff with exactly its permissions (an area name, as roles saved
before the named permissions hold, stands for the whole area). Every staff page and action checks one named
permission (``web.staff.staff_required``)."""

from __future__ import annotations

import re

from sqlalchemy import JSON, String, event, false, func, insert, select, update
from sqlalchemy.orm import Mapped, mapped_column

from .activity import audit
from .db import db
from .errors import UserError

_NAME = re.compile(r"^[a-z][a-z0-9-]{1,31}$")


class StaffRole(db.Model):
    __tablename__ = "staff_roles"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(32), unique=True)
    label: Mapped[str] = mapped_column(String(80), default="")
    permissions: Mapped[list] = mapped_column(JSON, default=list)
    # admin, support, billing: seeded, never deleted or renamed (admin is not edited either)
    builtin: Mapped[bool] = mapped_column(default=False, server_default=false())


def _builtin_rows(present) -> list[dict]:
    from .accounts import DEFAULT_ROLE_PERMISSIONS

    return [{"name": name, "label": name.capitalize(), "permissions": sorted(perms), "builtin": True}
            for name, perms in DEFAULT_ROLE_PERMISSIONS.items() if name not in present]


def ensure_builtin_roles(connection=None) -> int:
    """Add the built-in roles that are missing, with their default permissions (idempotent: rows present, edited
    or not, stay as they are, and are marked built-in). ``connection``: a Connection (schema creation, the test
    fixtures emptying tables); default the session (flushed, not committed). Returns how many rows were added."""
    from .accounts import DEFAULT_ROLE_PERMISSIONS

    conn = db.session if connection is None else connection
    table = StaffRole.__table__
    present = set(conn.execute(select(table.c.name).where(table.c.name.in_(DEFAULT_ROLE_PERMISSIONS))).scalars())
    if present:
        conn.execute(update(table).where(table.c.name.in_(present), table.c.builtin == false()).values(builtin=True))
    rows = _builtin_rows(present)
    if rows:
        conn.execute(insert(table), rows)
    if connection is None:
        db.session.flush()
    return len(rows)


@event.listens_for(StaffRole.__table__, "after_create")
def _seed_on_create(table, connection, **_kw):
    """Every ``create_all`` (tests, scripts) ends with the built-in roles present, as the migrations do."""
    ensure_builtin_roles(connection)


def permission_names() -> list[str]:
    """Every name a role may hold: the named permissions, and the areas (each stands for all of its own)."""
    from .accounts import PERMISSION_NAMES

    return sorted(PERMISSION_NAMES)


AREA_LABELS = {"money": "Money", "services": "Services", "tickets": "Tickets", "approvals": "Approvals",
               "network": "Network", "plugins": "Plugins, nodes and settings", "customers": "Customers",
               "audit": "Audit trail", "catalogue": "Catalogue", "staff": "Staff accounts and roles",
               "status": "Status page"}


def permission_groups() -> list[dict]:
    """The named permissions grouped by area, for the role editor: ``[{area, label, permissions: [{name,
    description}]}]``, areas in the order of ``accounts.AREAS``."""
    from .accounts import AREAS, NAMED_PERMISSIONS, area_of

    groups = {area: [] for area in AREAS}
    for name, description in NAMED_PERMISSIONS.items():
        groups.setdefault(area_of(name), []).append({"name": name, "description": description})
    return [{"area": area, "label": AREA_LABELS.get(area, area.capitalize()), "permissions": perms}
            for area, perms in groups.items() if perms]


def _row(role: str) -> tuple[frozenset[str], bool] | None:
    """``(permissions, builtin)`` of the row named ``role``, or None. Cached per request (an app context)."""
    from flask import g, has_app_context

    cache = g.setdefault("hostbay_staff_roles", {}) if has_app_context() else {}
    if role not in cache:
        found = db.session.execute(select(StaffRole.permissions, StaffRole.builtin).filter_by(name=role)).first()
        cache[role] = (frozenset(found.permissions or ()), bool(found.builtin)) if found is not None else None
    return cache[role]


def _forget_cached() -> None:
    from flask import g, has_app_context

    if has_app_context():
        g.pop("hostbay_staff_roles", None)


def role_permissions(role: str) -> frozenset[str] | None:
    """The permissions listed by staff role ``role`` (its row), or None if ``role`` is not a staff role. Admin
    holds every permission whatever its row lists; a customer is never staff."""
    from .accounts import ADMIN_ROLE, CUSTOMER_ROLE, PERMISSION_NAMES

    if role == ADMIN_ROLE:
        return frozenset(PERMISSION_NAMES)
    if role == CUSTOMER_ROLE:
        return None
    found = _row(role)
    return found[0] if found is not None else None


def all_roles() -> list[dict]:
    """Every staff role, built-in first (in the order of ``accounts.DEFAULT_ROLE_PERMISSIONS``), then the custom
    ones by name: ``{name, label, permissions, builtin, editable, members}`` (``editable``: in the role editor;
    every role but admin)."""
    from .accounts import ADMIN_ROLE, DEFAULT_ROLE_PERMISSIONS, User

    counts = dict(db.session.execute(select(User.role, func.count()).group_by(User.role)).all())
    order = {name: i for i, name in enumerate(DEFAULT_ROLE_PERMISSIONS)}
    rows = sorted(db.session.scalars(select(StaffRole)),
                  key=lambda r: (not r.builtin, order.get(r.name, len(order)), r.name))
    return [{"name": r.name, "label": r.label or r.name, "builtin": bool(r.builtin), "editable": r.name != ADMIN_ROLE,
             "permissions": sorted(role_grants(r.name) if r.name == ADMIN_ROLE else r.permissions or ()),
             "members": counts.get(r.name, 0)} for r in rows]


def staff_role_names() -> list[str]:
    return [r["name"] for r in all_roles()]


def role_grants(role: str) -> frozenset[str] | None:
    """The named permissions a member of ``role`` holds (an area in a role's list stands for every named
    permission of that area), or None if ``role`` is not a staff role."""
    from .accounts import NAMED_PERMISSIONS, area_of

    held = role_permissions(role)
    if held is None:
        return None
    return frozenset(n for n in NAMED_PERMISSIONS if n in held or area_of(n) in held)


def holds_all(actor, permissions) -> bool:
    """Whether ``actor`` holds every permission of ``permissions`` (areas expanded to their named permissions)."""
    from .accounts import NAMED_PERMISSIONS, area_of

    if actor.role == "admin":
        return True
    wanted = set()
    for p in permissions:
        wanted |= {n for n in NAMED_PERMISSIONS if n == p or area_of(n) == p}
    return all(actor.can(n) for n in wanted)


def can_grant(actor, role: str) -> bool:
    """Staff give only what they hold themselves: ``actor`` may give ``role`` (invite someone with it, set someone
    to it) when they hold every permission of it; only an admin may give the admin role."""
    if actor.role == "admin":
        return True
    if role == "admin":
        return False
    perms = role_grants(role)
    return perms is not None and holds_all(actor, perms)


def can_manage(actor, member) -> bool:
    """Whether ``actor`` may change ``member``'s role or reset their two-factor: only an admin may alter an admin;
    anyone else only members whose current role they could give."""
    return can_grant(actor, member.role)


def save_role(name: str, label: str, permissions: list[str], actor) -> StaffRole:
    """Add a custom role, or change the permissions (and label) of a custom role or of a built-in one other than
    admin; the actor must hold every old and new permission. Audited with before and after."""
    from .accounts import ADMIN_ROLE, CUSTOMER_ROLE

    name = (name or "").strip().lower()
    if not _NAME.match(name):
        raise UserError("A role name is 2 to 32 lower-case letters, digits or dashes, starting with a letter.")
    if name == ADMIN_ROLE:
        raise UserError("The admin role always holds every permission; it cannot be changed.")
    if name == CUSTOMER_ROLE:
        raise UserError("customer is the role of customers, not a staff role.")
    unknown = set(permissions) - set(permission_names())
    if unknown:
        raise UserError(f"Unknown permission {sorted(unknown)[0]}.")
    if not permissions:
        raise UserError("Give the role at least one permission.")
    role = db.session.scalar(select(StaffRole).filter_by(name=name))
    if actor is not None and not holds_all(actor, permissions):
        raise UserError("You can only give a role permissions you hold yourself.")
    if actor is not None and role is not None and not holds_all(actor, role.permissions or ()):
        raise UserError(f"Role {name} holds permissions you do not hold; only staff who hold them all can change it.")
    before = {"label": role.label, "permissions": sorted(role.permissions)} if role else None
    if role is None:
        role = StaffRole(name=name)
        db.session.add(role)
    role.label, role.permissions = (label or "").strip()[:80], sorted(set(permissions))
    if role.builtin and not role.label:
        role.label = before["label"] if before and before["label"] else name.capitalize()
    db.session.flush()
    _forget_cached()
    audit("staff_role.create" if before is None else "staff_role.update", "staff_role", name, actor=actor,
          before=before, after={"label": role.label, "permissions": role.permissions})
    return role


def delete_role(name: str, actor) -> None:
    from .accounts import User

    role = db.session.scalar(select(StaffRole).filter_by(name=name))
    if role is None:
        raise UserError("No such role.")
    if role.builtin:
        raise UserError(f"{name} is a built-in role; it cannot be deleted (change its permissions instead).")
    if actor is not None and not holds_all(actor, role.permissions or ()):
        raise UserError(f"Role {name} holds permissions you do not hold; only staff who hold them all can delete it.")
    if db.session.scalar(select(func.count(User.id)).where(User.role == name)):
        raise UserError("Move the staff who hold this role to another role first.")
    audit("staff_role.delete", "staff_role", name, actor=actor,
          before={"label": role.label, "permissions": sorted(role.permissions)})
    db.session.delete(role)
    db.session.flush()
    _forget_cached()
