"""Support for customers (tickets in the panel) and visitors (the contact page).

The contact page is rate limited per address and resists spam without third-party services: a hidden honeypot
field that people leave empty, and a signed form token that must be at least ``CONTACT_MIN_SECONDS`` old (bots
post at once) and at most a day old.
"""

from __future__ import annotations

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from itsdangerous import BadSignature, SignatureExpired

from hostbay.core import credentials
from hostbay.core import tickets as tk
from hostbay.core.db import db, new_uuid
from hostbay.core.errors import UserError

from .extensions import limiter
from .panel import dashboard_services

bp = Blueprint("tickets", __name__)

CONTACT_MIN_SECONDS = 3
CONTACT_MAX_SECONDS = 86400
HONEYPOT = "website"
CONTACT_RATE_LIMIT = "5 per hour"  # per client address


def _my_services():
    return dashboard_services(current_user.id)


# --------------------------------------------------------------------------------------------------------------
# Customer tickets
# --------------------------------------------------------------------------------------------------------------

def _ticket_or_404(uuid: str) -> tk.Ticket:
    ticket = tk.get_customer_ticket(current_user.id, uuid)
    if ticket is None:
        abort(404)
    return ticket


@bp.get("/panel/tickets")
@login_required
def index():
    tickets = db.session.scalars(tk.customer_tickets(current_user.id)
                                 .order_by(tk.Ticket.updated_at.desc(), tk.Ticket.id.desc())).all()
    return render_template("tickets/index.html", tickets=tickets)


@bp.route("/panel/tickets/new", methods=["GET", "POST"])
@login_required
def new():
    form = request.form if request.method == "POST" else {"service": request.args.get("service", "")}
    if request.method == "POST":
        try:
            ticket = tk.open_ticket(current_user, form.get("subject", ""), form.get("body", ""),
                                    form.get("service") or None)
            db.session.commit()
        except UserError as exc:
            db.session.rollback()
            flash(str(exc), "error")
            return render_template("tickets/new.html", form=form, services=_my_services()), 400
        flash("Your ticket is open. We answer here and by e-mail.", "info")
        return redirect(url_for("tickets.show", uuid=ticket.uuid))
    return render_template("tickets/new.html", form=form, services=_my_services())


@bp.get("/panel/tickets/<uuid>")
@login_required
def show(uuid: str):
    return render_template("tickets/show.html", ticket=_ticket_or_404(uuid))


@bp.post("/panel/tickets/<uuid>/reply")
@login_required
def reply(uuid: str):
    ticket = _ticket_or_404(uuid)
    try:
        tk.reply(ticket, current_user, request.form.get("body", ""), staff=False)
        db.session.commit()
    except UserError as exc:
        db.session.rollback()
        flash(str(exc), "error")
        return render_template("tickets/show.html", ticket=_ticket_or_404(uuid)), 400
    flash("Your reply is sent.", "info")
    return redirect(url_for("tickets.show", uuid=uuid))


@bp.post("/panel/tickets/<uuid>/close")
@login_required
def close(uuid: str):
    ticket = _ticket_or_404(uuid)
    tk.close(ticket, current_user, staff=False)
    db.session.commit()
    flash("The ticket is closed.", "info")
    return redirect(url_for("tickets.show", uuid=uuid))


# --------------------------------------------------------------------------------------------------------------
# Contact page
# --------------------------------------------------------------------------------------------------------------

def _form_token() -> str:
    return credentials.serializer("contact-form").dumps(new_uuid())


def _check_form_token(token: str) -> str | None:
    """None if the token is fine, else a reason."""
    try:
        _payload, age = credentials.serializer("contact-form").loads(token or "", max_age=CONTACT_MAX_SECONDS,
                                                                     return_timestamp=True)
    except SignatureExpired:
        return "The form was open too long. Please send it again."
    except BadSignature:
        return "The form could not be checked. Please send it again."
    if age < CONTACT_MIN_SECONDS:
        return "That was quick! Please check your message and send it again."
    return None


def _render_contact(form, status=200, sent=False):
    services = _my_services() if current_user.is_authenticated else []
    return render_template("tickets/contact.html", form=form, token=_form_token(), services=services,
                           sent=sent, honeypot=HONEYPOT), status


@bp.route("/contact", methods=["GET", "POST"])
@limiter.limit(CONTACT_RATE_LIMIT, methods=["POST"])
def contact():
    if request.method == "GET":
        return _render_contact({"service": request.args.get("service", "")})
    form = request.form
    if form.get(HONEYPOT):
        # A bot filled the hidden field: answer as if it worked, keep nothing.
        current_app.logger.info("contact form honeypot triggered from %s", request.remote_addr)
        return _render_contact({}, sent=True)
    reason = _check_form_token(form.get("form_token", ""))
    if reason:
        flash(reason, "error")
        return _render_contact(form, 400)
    user = current_user if current_user.is_authenticated else None
    try:
        ticket = tk.submit_contact(form.get("name", ""), form.get("email", ""), form.get("subject", ""),
                                   form.get("body", ""), user=user, service_uuid=form.get("service") or None)
        db.session.commit()
    except UserError as exc:
        db.session.rollback()
        flash(str(exc), "error")
        return _render_contact(form, 400)
    if user is not None:
        flash("Thank you. Your request is in your support tickets.", "info")
        return redirect(url_for("tickets.show", uuid=ticket.uuid))
    return _render_contact({}, sent=True)
