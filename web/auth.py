"""Register, log in, log out. Passwords are hashed with scrypt; login attempts are rate limited per address.
Accounts with two-factor authentication pass a second step (a TOTP code or a one-time recovery code) before they
are logged in."""

from __future__ import annotations

from datetime import datetime, timedelta
from urllib.parse import urlsplit

from flask import Blueprint, current_app, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user

from hostbay.core import clock, credentials
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


@bp.route("/register", methods=["GET", "POST"])
@limiter.limit(lambda: current_app.config["HOSTBAY_LOGIN_RATE_LIMIT"], methods=["POST"])
def register():
    if current_user.is_authenticated:
        return redirect(url_for("panel.dashboard"))
    form = request.form
    if request.method == "POST":
        try:
            user = create_user(form.get("email", ""), form.get("password", ""), name=form.get("name", "")[:120])
            log_activity(user.id, "account", "Account created.")
            db.session.commit()
        except UserError as exc:
            db.session.rollback()
            flash(str(exc), "error")
            return render_template("auth/register.html", form=form), 400
        login_user(user)
        flash("Welcome! Your account is ready.", "info")
        return redirect(url_for("panel.dashboard"))
    return render_template("auth/register.html", form=form)


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(lambda: current_app.config["HOSTBAY_LOGIN_RATE_LIMIT"], methods=["POST"])
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
        login_user(user)
        return redirect(_safe_next(request.args.get("next")))
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
        login_user(user)
        if how == "recovery":
            left = credentials.remaining_recovery_codes(user)
            flash(f"You used a recovery code; {left} remain. Create new ones in your account if you run low.", "info")
        return redirect(_safe_next(pending.get("next")))
    return render_template("auth/two_factor.html")


@bp.post("/logout")
@login_required
def logout():
    logout_user()
    flash("You are logged out.", "info")
    return redirect(url_for("public.index"))
