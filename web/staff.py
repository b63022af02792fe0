"""Staff pages: the shared decorator, menu and landing page. Each area adds its own staff blueprint module; the
menu is what ``hostbay_admin_menu`` returns, core's entries included (``hostbay.core.builtin.STAFF_MENU``)."""

from __future__ import annotations

from functools import wraps

from flask import Blueprint, abort, current_app, render_template
from flask_login import current_user, login_required

bp = Blueprint("staff", __name__, url_prefix="/staff")

def staff_required(permission: str | None = None):
    """Allow signed-in staff (with ``permission``, see accounts.NAMED_PERMISSIONS); everyone else gets a 404."""
    def deco(view):
        @wraps(view)
        def wrapper(*args, **kwargs):
            # anonymous visitors too get a 404, not a login redirect: a staff URL does not reveal that it exists
            if not current_user.is_authenticated or not current_user.is_staff \
                    or (permission and not current_user.can(permission)):
                abort(404)
            return view(*args, **kwargs)
        wrapper.hostbay_permission = permission  # read by the permission sweep test
        return wrapper
    return deco


def staff_menu() -> list[tuple[str, str]]:
    """``(label, endpoint)`` entries of ``hostbay_admin_menu`` (core's first); an entry may carry a third item, the
    permission it needs."""
    items = []
    for entry in current_app.extensions["hostbay"].collect("hostbay_admin_menu"):
        entry = tuple(entry)
        label, endpoint, perm = (entry + (None,))[:3]
        if perm is None or current_user.can(perm):
            items.append((label, endpoint))
    return items


@bp.app_context_processor
def _menu():
    if current_user and getattr(current_user, "is_staff", False):
        return {"staff_menu": staff_menu}
    return {}


@bp.get("/")
@staff_required()
def home():
    from hostbay.core import admin
    from hostbay.core.db import db

    waiting = [w for w in admin.waiting_counts() if current_user.can(w["permission"])]
    recent = None
    if current_user.can("audit.view"):
        recent = db.session.scalars(admin.audit_query().limit(15)).all()
    return render_template("staff/home.html", plugins=current_app.extensions["hostbay"].plugins, waiting=waiting,
                           recent=recent, emails=admin.actor_emails(recent or []), diff=admin.readable_diff)


@bp.post("/accounts/<user_uuid>/lock")
@staff_required("customers.lock")
def lock_account(user_uuid):
    """Lock an account: it can no longer log in, and every session it has ends at once. Unlock reverses it."""
    from flask import flash, redirect, request, url_for

    from hostbay.core import sessions
    from hostbay.core.accounts import User
    from hostbay.core.activity import audit
    from hostbay.core.db import db

    user = db.session.scalar(db.select(User).filter_by(uuid=user_uuid))
    if user is None or user.id == current_user.id or (user.is_staff and current_user.role != "admin"):
        abort(404)
    lock = request.form.get("lock", "1") != "0"
    user.active = not lock
    if lock:
        sessions.end_all_sessions(user)
    audit("account.locked" if lock else "account.unlocked", "user", user.uuid, actor=current_user,
          detail=(request.form.get("reason") or "")[:500])
    db.session.commit()
    flash(f"{user.email} is {'locked; every session of it ended' if lock else 'unlocked'}.", "info")
    return redirect(request.referrer if request.referrer and request.referrer.startswith(request.host_url)
                    else url_for("staff.home"))
