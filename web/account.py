"""The customer's account: profile, password change, password reset by e-mail, TOTP two-factor with recovery codes,
SSH keys and API tokens."""

from __future__ import annotations

from flask import (Blueprint, abort, current_app, flash, redirect, render_template, request, session,
                   url_for)
from flask_login import current_user, login_required
from sqlalchemy import select

from hostbay.core import branding, credentials, sessions
from hostbay.core.accounts import SSHKey, User, add_ssh_key, normalise_email
from hostbay.core.activity import audit, log_activity
from hostbay.core.db import db
from hostbay.core.errors import UserError
from hostbay.core.mailer import send_mail

from .extensions import limiter

bp = Blueprint("account", __name__)

RESET_RATE_LIMIT = "5 per minute;20 per hour"


def _login_limit():
    return current_app.config["HOSTBAY_LOGIN_RATE_LIMIT"]


def _fail(message: str, template: str, status: int = 400, **ctx):
    db.session.rollback()
    flash(message, "error")
    return render_template(template, **ctx), status


def _brand() -> str:
    """The installation's brand name (Staff › Branding), used in the e-mails instead of the product's name."""
    return branding.current().name


def _security_notice(address: str, what: str) -> None:
    """Tell the account owner by e-mail that something security-relevant changed (when mail is configured)."""
    body = (f"Hello,\n\n{what}\n\nIf this was you, there is nothing to do. If it was not, reset your password at "
            f"{current_app.config['HOSTBAY_BASE_URL']}/password-reset and contact support.\n")
    try:
        send_mail(address, f"Security notice for your {_brand()} account", body)
    except OSError:
        current_app.logger.exception("security notice mail could not be sent")


# --------------------------------------------------------------------------------------------------------------
# Profile and password
# --------------------------------------------------------------------------------------------------------------

def _overview_ctx():
    return {"recovery_left": credentials.remaining_recovery_codes(current_user) if current_user.totp_secret else 0}


@bp.get("/panel/account/")
@login_required
def overview():
    return render_template("account/overview.html", **_overview_ctx())


@bp.post("/panel/account/profile")
@login_required
def profile():
    user: User = current_user
    name = " ".join(request.form.get("name", "").split())
    if len(name) > 120:
        return _fail("Your name can have at most 120 characters.", "account/overview.html", **_overview_ctx())
    email = request.form.get("email", "").strip()
    try:
        if email and email.lower() != user.email:
            email = normalise_email(email)
            if not user.check_password(request.form.get("password", "")):
                raise UserError("Enter your current password to change your e-mail address.")
            if db.session.scalar(select(User.id).filter_by(email=email)):
                raise UserError("Another account uses this e-mail address.")
            old = user.email
            user.email = email
            log_activity(user.id, "account", "E-mail address changed.")
        else:
            old = None
        user.name = name
        db.session.commit()
    except UserError as exc:
        return _fail(str(exc), "account/overview.html", **_overview_ctx())
    if old:
        _security_notice(old, f"The e-mail address of your {_brand()} account was changed to {user.email}.")
    flash("Your profile is saved.", "info")
    return redirect(url_for("account.overview"))


@bp.post("/panel/account/password")
@login_required
@limiter.limit(_login_limit)
def change_password():
    user: User = current_user
    new = request.form.get("new_password", "")
    try:
        if not user.check_password(request.form.get("current_password", "")):
            raise UserError("Your current password is not right.")
        if new != request.form.get("confirm_password", ""):
            raise UserError("The two new passwords differ.")
        user.set_password(new)
        sessions.end_all_sessions(user)
        log_activity(user.id, "account", "Password changed.")
        db.session.commit()
    except UserError as exc:
        return _fail(str(exc), "account/overview.html", **_overview_ctx())
    sessions.renew_current(user)
    _security_notice(user.email, f"The password of your {_brand()} account was changed.")
    flash("Your password is changed.", "info")
    return redirect(url_for("account.overview"))


@bp.post("/panel/account/sessions/end")
@login_required
def end_sessions():
    """Sign out of every session of the account, on every device, this one included."""
    from flask_login import logout_user

    user: User = current_user
    sessions.end_all_sessions(user)
    log_activity(user.id, "account", "Signed out of every session.")
    db.session.commit()
    logout_user()
    session.clear()
    flash("You are signed out of every session. Log in again to continue.", "info")
    return redirect(url_for("auth.login"))


# --------------------------------------------------------------------------------------------------------------
# Password reset by e-mail
# --------------------------------------------------------------------------------------------------------------

RESET_MAIL = """Hello {name},

someone (hopefully you) asked to choose a new password for your {brand} account.
Open this link to do so; it works once, within {minutes} minutes:

{link}

If you did not ask for this, ignore this message: your password stays as it is.
"""
RESET_SENT = ("If an account uses this address, we have sent it a link to choose a new password. "
              "The link works once, for one hour.")


@bp.route("/password-reset", methods=["GET", "POST"])
@limiter.limit(RESET_RATE_LIMIT, methods=["POST"])
def reset_request():
    if request.method == "GET":
        return render_template("account/reset_request.html")
    try:
        email = normalise_email(request.form.get("email", ""))
    except UserError as exc:
        return _fail(str(exc), "account/reset_request.html")
    user = db.session.scalar(select(User).filter_by(email=email, active=True))
    if user is not None:
        link = f"{current_app.config['HOSTBAY_BASE_URL']}/password-reset/{credentials.make_reset_token(user)}"
        body = RESET_MAIL.format(name=user.name or user.email, link=link, minutes=credentials.RESET_MAX_AGE // 60,
                                brand=_brand())
        try:
            send_mail(user.email, f"Choose a new {_brand()} password", body)
        except OSError:
            current_app.logger.exception("password reset mail could not be sent")
        audit("auth.reset_requested", "user", user.uuid, actor_type="customer",
              detail=f"address {request.remote_addr}")
        db.session.commit()
    # The same answer whether or not the address has an account.
    return render_template("account/reset_request.html", sent=True, message=RESET_SENT)


@bp.route("/password-reset/<token>", methods=["GET", "POST"])
@limiter.limit(RESET_RATE_LIMIT, methods=["POST"])
def reset_confirm(token: str):
    user = credentials.user_for_reset_token(token)
    if user is None:
        return render_template("account/reset_confirm.html", invalid=True), 404
    if request.method == "GET":
        return render_template("account/reset_confirm.html")
    new = request.form.get("new_password", "")
    try:
        if new != request.form.get("confirm_password", ""):
            raise UserError("The two passwords differ.")
        user.set_password(new)
        sessions.end_all_sessions(user)
        log_activity(user.id, "account", "Password reset through an e-mailed link.")
        audit("auth.reset_done", "user", user.uuid, actor_type="customer")
        db.session.commit()
    except UserError as exc:
        return _fail(str(exc), "account/reset_confirm.html")
    _security_notice(user.email, f"The password of your {_brand()} account was reset through an e-mailed link.")
    flash("Your new password is set. Log in with it.", "info")
    return redirect(url_for("auth.login"))


# --------------------------------------------------------------------------------------------------------------
# Two-factor authentication
# --------------------------------------------------------------------------------------------------------------

@bp.route("/panel/account/two-factor", methods=["GET", "POST"])
@login_required
@limiter.limit(_login_limit, methods=["POST"])
def two_factor_setup():
    user: User = current_user
    if user.totp_secret:
        return redirect(url_for("account.overview"))
    secret = session.get("totp_setup")
    if request.method == "GET" or not secret:
        secret = session["totp_setup"] = credentials.new_totp_secret()
        return render_template("account/two_factor_setup.html", secret=secret,
                               uri=credentials.provisioning_uri(user, secret))
    try:
        codes = credentials.enable_two_factor(user, secret, request.form.get("code", ""))
        sessions.end_all_sessions(user)
        log_activity(user.id, "account", "Two-factor authentication turned on.")
        db.session.commit()
    except UserError as exc:
        return _fail(str(exc), "account/two_factor_setup.html", secret=secret,
                     uri=credentials.provisioning_uri(user, secret))
    sessions.renew_current(user)
    session.pop("totp_setup", None)
    _security_notice(user.email, f"Two-factor authentication was turned on for your {_brand()} account.")
    return render_template("account/recovery_codes.html", codes=codes, fresh=True)


def _confirm_identity(user: User) -> None:
    if not user.check_password(request.form.get("password", "")):
        raise UserError("Your password is not right.")
    if credentials.check_second_factor(user, request.form.get("code", "")) is None:
        raise UserError("That code is not right.")


@bp.post("/panel/account/two-factor/disable")
@login_required
@limiter.limit(_login_limit)
def two_factor_disable():
    user: User = current_user
    if not user.totp_secret:
        return redirect(url_for("account.overview"))
    try:
        _confirm_identity(user)
        credentials.disable_two_factor(user)
        sessions.end_all_sessions(user)
        log_activity(user.id, "account", "Two-factor authentication turned off.")
        db.session.commit()
    except UserError as exc:
        return _fail(str(exc), "account/overview.html", **_overview_ctx())
    sessions.renew_current(user)
    _security_notice(user.email, f"Two-factor authentication was turned off for your {_brand()} account.")
    flash("Two-factor authentication is off.", "info")
    return redirect(url_for("account.overview"))


@bp.post("/panel/account/two-factor/recovery-codes")
@login_required
@limiter.limit(_login_limit)
def recovery_codes():
    user: User = current_user
    if not user.totp_secret:
        return redirect(url_for("account.overview"))
    try:
        _confirm_identity(user)
        codes = credentials.regenerate_recovery_codes(user)
        log_activity(user.id, "account", "New recovery codes created; the old ones no longer work.")
        db.session.commit()
    except UserError as exc:
        return _fail(str(exc), "account/overview.html", **_overview_ctx())
    return render_template("account/recovery_codes.html", codes=codes)


# --------------------------------------------------------------------------------------------------------------
# SSH keys
# --------------------------------------------------------------------------------------------------------------

def _keys():
    return db.session.scalars(select(SSHKey).filter_by(user_id=current_user.id).order_by(SSHKey.created_at,
                                                                                          SSHKey.id)).all()


@bp.route("/panel/account/ssh-keys", methods=["GET", "POST"])
@login_required
def ssh_keys():
    if request.method == "POST":
        name = request.form.get("name", "")
        try:
            key = add_ssh_key(current_user, name, request.form.get("public_key", ""))
            log_activity(current_user.id, "ssh_key", f"SSH key “{key.name}” added ({key.fingerprint}).")
            db.session.commit()
        except UserError as exc:
            db.session.rollback()
            flash(str(exc), "error")
            return render_template("account/ssh_keys.html", keys=_keys(), form=request.form, error=str(exc),
                                   field=getattr(exc, "field", None)), 400
        flash(f"SSH key “{key.name}” added.", "info")
        return redirect(url_for("account.ssh_keys"))
    return render_template("account/ssh_keys.html", keys=_keys(), form={})


@bp.post("/panel/account/ssh-keys/<uuid>/delete")
@login_required
def ssh_key_delete(uuid: str):
    key = db.session.scalar(select(SSHKey).filter_by(uuid=uuid, user_id=current_user.id))
    if key is None:
        abort(404)
    name = key.name
    db.session.delete(key)
    log_activity(current_user.id, "ssh_key", f"SSH key “{name}” deleted.")
    db.session.commit()
    flash(f"SSH key “{name}” deleted.", "info")
    return redirect(url_for("account.ssh_keys"))


# --------------------------------------------------------------------------------------------------------------
# API tokens
# --------------------------------------------------------------------------------------------------------------

def _tokens():
    return db.session.scalars(select(credentials.ApiToken).filter_by(user_id=current_user.id)
                              .order_by(credentials.ApiToken.created_at.desc(),
                                        credentials.ApiToken.id.desc())).all()


@bp.route("/panel/account/api-tokens", methods=["GET", "POST"])
@login_required
def api_tokens():
    if request.method == "POST":
        try:
            token, raw = credentials.create_api_token(
                current_user, request.form.get("name", ""), scope=request.form.get("scope", "read"),
                expires_days=request.form.get("expires_days") or None, networks=request.form.get("networks", ""))
            log_activity(current_user.id, "account", f"API token “{token.name}” created.")
            db.session.commit()
        except UserError as exc:
            db.session.rollback()
            flash(str(exc), "error")
            return render_template("account/api_tokens.html", tokens=_tokens()), 400
        return render_template("account/api_tokens.html", tokens=_tokens(), new_token=raw, new_name=token.name)
    return render_template("account/api_tokens.html", tokens=_tokens())


@bp.post("/panel/account/api-tokens/<uuid>/revoke")
@login_required
def api_token_revoke(uuid: str):
    token = db.session.scalar(select(credentials.ApiToken).filter_by(uuid=uuid, user_id=current_user.id))
    if token is None:
        abort(404)
    if token.revoked_at is None:
        credentials.revoke_api_token(token)
        log_activity(current_user.id, "account", f"API token “{token.name}” revoked.")
        db.session.commit()
    flash(f"API token “{token.name}” is revoked.", "info")
    return redirect(url_for("account.api_tokens"))
