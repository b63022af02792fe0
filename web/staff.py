"""Staff pages: the shared decorator, menu and landing page. Each area adds its own staff blueprint module and
appends ``(label, endpoint, permission)`` to ``STAFF_MENU``; plugins add entries through ``hostbay_admin_menu``."""

from __future__ import annotations

from functools import wraps

from flask import Blueprint, abort, current_app, render_template
from flask_login import current_user, login_required

bp = Blueprint("staff", __name__, url_prefix="/staff")

STAFF_MENU: list[tuple[str, str, str | None]] = []


def staff_required(permission: str | None = None):
    """Allow signed-in staff (with ``permission``, see accounts.PERMISSIONS); everyone else gets a 404."""
    def deco(view):
        @wraps(view)
        @login_required
        def wrapper(*args, **kwargs):
            if not current_user.is_staff or (permission and not current_user.can(permission)):
                abort(404)
            return view(*args, **kwargs)
        return wrapper
    return deco


def staff_menu() -> list[tuple[str, str]]:
    items = [(label, ep) for label, ep, perm in STAFF_MENU if perm is None or current_user.can(perm)]
    for extra in current_app.extensions["hostbay"].collect("hostbay_admin_menu"):
        items.append(tuple(extra))
    return items


@bp.app_context_processor
def _menu():
    if current_user and getattr(current_user, "is_staff", False):
        return {"staff_menu": staff_menu}
    return {}


@bp.get("/")
@staff_required()
def home():
    return render_template("staff/home.html", plugins=current_app.extensions["hostbay"].plugins)
