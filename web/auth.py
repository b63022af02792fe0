"""Register, log in, log out. Passwords are hashed with scrypt; login attempts are rate limited per address.
Accounts with two-factor authentication pass a second step (a TOTP code or a one-time recovery code) before they
are logged in."""

from __future__ import annotations

from datetime import datetime, timedelta
from urllib.parse import urlsplit

from flask import Blueprint, current_app, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user

from hostbay.core import clock, credentials, sessions
from hostbay.core.accounts import User, create_user, normalise_email
from hostbay.core.activity import audit, log_activity
from hostbay.core.db import db
from hostbay.core.errors import UserError

from .extensions import limiter

bp = Blueprint("auth", __name__)


def _safe_next(target: str | None) -> str:
    # browsers read "\\" as "/" (so "/\\evil.example" is another site) and drop tabs and newlines
    if (target and not urlsplit(target).netloc and target.startswith("/") and not target.startswith("//")
            and "\\" not in target and not any(ord(c) < 32 for c in target)):
        return target
    return url_for("panel.dashboard")


REGISTER_SENT = ("Thank you. We have sent the next step to {email}. If you have just created your account, "
                 "you can log in now with your password.")
WELCOME_MAIL = """Hello {name},

your {brand} account is ready. Log in at {base}/login with this e-mail address and the password you chose.

If you did not sign up, ignore this message or contact support.
"""
EXISTING_MAIL = """Hello,

someone (hopefully you) tried to create a new {brand} account with this e-mail address, which has an account
already. No second account was created and nothing changed in yours.

If it was you: log in at {base}/login, or choose a new password at {base}/password-reset.
If it was not you, there is nothing to do.
"""


def _brand() -> str:
    from hostbay.core import branding

    return branding.current().name


def _mail(address: str, subject: str, body: str) -> None:
    from hostbay.core.mailer import send_mail

    try:
        send_mail(address, subject, body)
    except OSError:
        current_app.logger.exception("registration mail could not be sent")


@bp.route("/register", methods=["GET", "POST"])
@limiter.limit(lambda: current_app.config["HOSTBAY_LOGIN_RATE_LIMIT"], methods=["POST"])
def register():
    """The same answer whether or not the address has an account (no account enumeration): a new address gets
    its account and a welcome mail; an existing one gets a mail telling its owner, and nothing changes."""
    if current_user.is_authenticated:
        return redirect(url_for("panel.dashboard"))
    form = request.form
    if request.method == "POST":
        base = current_app.config["HOSTBAY_BASE_URL"]
        try:
            email = normalise_email(form.get("email", ""))
            password = form.get("password", "")
            existing = db.session.scalar(db.select(User).filter_by(email=email))
            if existing is None:
                user = create_user(email, password, name=form.get("name", "")[:120])
                log_activity(user.id, "account", "Account created.")
                db.session.commit()
                _mail(email, f"Your {_brand()} account",
                      WELCOME_MAIL.format(name=user.name or email, base=base, brand=_brand()))
            else:
                User(email=email).set_password(password)  # the same checks and the same hashing time
                audit("auth.register_existing", "user", existing.id, actor_type="customer",
                      detail=f"address {request.remote_addr}")
                db.session.commit()
                _mail(email, f"Sign-up attempt with your {_brand()} address", EXISTING_MAIL.format(base=base, brand=_brand()))
        except UserError as exc:
            db.session.rollback()
            flash(str(exc), "error")
            return render_template("auth/register.html", form=form), 400
        return render_template("auth/register.html", form={}, sent=REGISTER_SENT.format(email=email))
    return render_template("auth/register.html", form=form)


def sign_in(user: User) -> None:
    """Log ``user`` in and tie the session to the account's current session generation."""
    login_user(user)
    sessions.start(user)


def landing(user: User, target: str | None) -> str:
    """Where a login ends: the ``next`` page if it is safe, else the staff home for staff, the dashboard else."""
    if target:
        return _safe_next(target)
    return url_for("staff.home") if user.is_staff else url_for("panel.dashboard")


def _login_account_key() -> str:
    try:
        return "account:" + normalise_email(request.form.get("email", ""))
    except UserError:
        return "account:-"


def _failed(resp) -> bool:
    return resp.status_code == 401


@bp.route("/login", methods=["GET", "POST"])
# Failed attempts count, per client address and per account; a successful login never locks anyone out.
@limiter.limit(lambda: current_app.config["HOSTBAY_LOGIN_RATE_LIMIT"], methods=["POST"], deduct_when=_failed)
@limiter.limit(lambda: current_app.config["HOSTBAY_LOGIN_ACCOUNT_RATE_LIMIT"], methods=["POST"],
               key_func=_login_account_key, deduct_when=_failed)
def login():
    if current_user.is_authenticated:
        return redirect(url_for("panel.dashboard"))
    email = request.form.get("email", "")
    if request.method == "POST":
        try:
            user = db.session.scalar(db.select(User).filter_by(email=normalise_email(email)))
        except UserError:
            user = None
        if user is None or not user.active or not user.check_password(request.form.get("password", "")):
            audit("auth.login_failed", "user", getattr(user, "id", None), actor_type="customer",
                  detail=f"address {request.remote_addr}")
            db.session.commit()
            flash("Wrong e-mail address or password.", "error")
            return render_template("auth/login.html", email=email), 401
        if user.totp_secret:
            session["login_2fa"] = {"user": user.uuid, "at": clock.now().isoformat(), "fails": 0,
                                    "next": request.args.get("next")}
            return redirect(url_for("auth.login_second_step"))
        sign_in(user)
        return redirect(landing(user, request.args.get("next")))
    return render_template("auth/login.html", email=email)


SECOND_STEP_SECONDS = 300
SECOND_STEP_TRIES = 5


@bp.route("/login/two-factor", methods=["GET", "POST"])
@limiter.limit(lambda: current_app.config["HOSTBAY_LOGIN_RATE_LIMIT"], methods=["POST"])
def login_second_step():
    pending = session.get("login_2fa")
    user = None
    if pending and clock.now() - datetime.fromisoformat(pending["at"]) <= timedelta(seconds=SECOND_STEP_SECONDS):
        user = db.session.scalar(db.select(User).filter_by(uuid=pending["user"], active=True))
    if user is None or not user.totp_secret:
        session.pop("login_2fa", None)
        flash("Log in with your e-mail address and password first.", "info")
        return redirect(url_for("auth.login"))
    if request.method == "POST":
        how = credentials.check_second_factor(user, request.form.get("code", ""))
        if how is None:
            pending["fails"] += 1
            audit("auth.second_factor_failed", "user", user.id, actor_type="customer",
                  detail=f"address {request.remote_addr}")
            db.session.commit()
            if pending["fails"] >= SECOND_STEP_TRIES:
                session.pop("login_2fa", None)
                flash("Too many wrong codes. Log in again.", "error")
                return redirect(url_for("auth.login"))
            session["login_2fa"] = pending
            flash("That code is not right.", "error")
            return render_template("auth/two_factor.html"), 401
        if how == "recovery":
            log_activity(user.id, "account", "Logged in with a recovery code.")
        db.session.commit()
        session.pop("login_2fa", None)
        sign_in(user)
        if how == "recovery":
            left = credentials.remaining_recovery_codes(user)
            flash(f"You used a recovery code; {left} remain. Create new ones in your account if you run low.", "info")
        return redirect(landing(user, pending.get("next")))
    return render_template("auth/two_factor.html")


@bp.post("/logout")
@login_required
def logout():
    """Logging out ends every session of the account, also copies of this session's cookie."""
    sessions.end_all_sessions(current_user)
    db.session.commit()
    logout_user()
    session.clear()
    flash("You are logged out.", "info")
    return redirect(url_for("public.index"))


def staff_two_factor_required() -> bool:
    """``HOSTBAY_STAFF_2FA``: ``required`` (the default) or ``optional`` (the default in embedded mode)."""
    value = (current_app.config.get("HOSTBAY_STAFF_2FA") or "").strip().lower()
    if value not in ("required", "optional"):
        value = "optional" if current_app.config.get("HOSTBAY_EMBEDDED") else "required"
    return value == "required"


# What a staff member without two-factor may still open while it is required: its set-up, and logging out.
_SECOND_FACTOR_SETUP = {"account.two_factor_setup", "auth.logout", "static"}


@bp.before_app_request
def _staff_need_second_factor():
    if (request.endpoint in _SECOND_FACTOR_SETUP or not current_user.is_authenticated
            or not current_user.is_staff or current_user.totp_secret or not staff_two_factor_required()):
        return None
    flash("Staff accounts sign in with two-factor authentication: set it up to continue.", "info")
    return redirect(url_for("account.two_factor_setup"))
