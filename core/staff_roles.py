"""Staff roles as data. The built-in roles (admin, support, billing) hold the permissions of
``accounts.PERMISSIONS``; staff with the ``staff.roles`` permission add custom roles, each a name and a set of named
permissions from :data:`accounts.NAMED_PERMISSIONS`, picked per action in the staff roles page (grouped by area,
each with its one-line description). A user whose ``role`` names a custom role is staff with exactly its
permissions (an area name, as roles saved before the named permissions hold, stands for the whole area). Every
staff page and action checks one named permission (``web.staff.staff_required``)."""

from __future__ import annotations

import re

from sqlalchemy import JSON, String, func, select
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


def permission_names() -> list[str]:
    """Every name a custom role may hold: the named permissions, and the areas (each stands for all of its own)."""
    from .accounts import PERMISSIONS

    return sorted(PERMISSIONS)


AREA_LABELS = {"money": "Money", "services": "Services", "tickets": "Tickets", "approvals": "Approvals",
               "network": "Network", "plugins": "Plugins, nodes and settings", "customers": "Customers",
               "audit": "Audit trail", "catalogue": "Catalogue", "staff": "Staff accounts and roles",
               "status": "Status page"}


def permission_groups() -> list[dict]:
    """The named permissions grouped by area, for the role editor: ``[{area, label, permissions: [{name,
    description}]}]``, areas in the order of ``accounts.AREAS``."""
    from .accounts import AREAS, NAMED_PERMISSIONS, area_of

    groups = {area: [] for area in AREAS}
    for name, (_, description) in NAMED_PERMISSIONS.items():
        groups.setdefault(area_of(name), []).append({"name": name, "description": description})
    return [{"area": area, "label": AREA_LABELS.get(area, area.capitalize()), "permissions": perms}
            for area, perms in groups.items() if perms]


def builtin_permissions(role: str) -> set[str]:
    from .accounts import PERMISSIONS

    return {p for p, roles in PERMISSIONS.items() if role == "admin" or role in roles}


def custom_permissions(role: str) -> frozenset[str] | None:
    """The permissions of custom role ``role``, or None if there is no such role. Cached per request."""
    from flask import g, has_app_context

    cache = g.setdefault("hostbay_staff_roles", {}) if has_app_context() else {}
    if role not in cache:
        found = db.session.scalar(select(StaffRole).filter_by(name=role))
        cache[role] = frozenset(found.permissions or ()) if found is not None else None
    return cache[role]


def all_roles() -> list[dict]:
    """Every staff role, built-in first: ``{name, label, permissions, builtin, members}``."""
    from .accounts import STAFF_ROLES, User

    counts = dict(db.session.execute(select(User.role, func.count()).group_by(User.role)).all())
    out = [{"name": r, "label": r.capitalize(), "permissions": sorted(builtin_permissions(r)), "builtin": True,
            "members": counts.get(r, 0)} for r in STAFF_ROLES]
    for role in db.session.scalars(select(StaffRole).order_by(StaffRole.name)):
        out.append({"name": role.name, "label": role.label or role.name, "permissions": sorted(role.permissions),
                    "builtin": False, "members": counts.get(role.name, 0)})
    return out


def staff_role_names() -> list[str]:
    return [r["name"] for r in all_roles()]


def role_grants(role: str) -> frozenset[str] | None:
    """The named permissions a member of ``role`` holds (an area in a custom role stands for every named
    permission of that area), or None if ``role`` is not a staff role."""
    from .accounts import NAMED_PERMISSIONS, STAFF_ROLES, area_of

    if role in STAFF_ROLES:
        held = builtin_permissions(role)
    else:
        held = custom_permissions(role)
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
    from .accounts import ROLES

    name = (name or "").strip().lower()
    if not _NAME.match(name):
        raise UserError("A role name is 2 to 32 lower-case letters, digits or dashes, starting with a letter.")
    if name in ROLES:
        raise UserError(f"{name} is a built-in role.")
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
    db.session.flush()
    audit("staff_role.create" if before is None else "staff_role.update", "staff_role", name, actor=actor,
          before=before, after={"label": role.label, "permissions": role.permissions})
    return role


def delete_role(name: str, actor) -> None:
    from .accounts import User

    role = db.session.scalar(select(StaffRole).filter_by(name=name))
    if role is None:
        raise UserError("No such custom role.")
    if actor is not None and not holds_all(actor, role.permissions or ()):
        raise UserError(f"Role {name} holds permissions you do not hold; only staff who hold them all can delete it.")
    if db.session.scalar(select(func.count(User.id)).where(User.role == name)):
        raise UserError("Move the staff who hold this role to another role first.")
    audit("staff_role.delete", "staff_role", name, actor=actor,
          before={"label": role.label, "permissions": sorted(role.permissions)})
    db.session.delete(role)
