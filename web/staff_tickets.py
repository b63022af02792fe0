"""Staff side of support: the ticket queue, replies (mailed to the customer or visitor) and closing."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select

from hostbay.core import tickets as tk
from hostbay.core.db import db
from hostbay.core.errors import UserError
from hostbay.core.mailer import send_mail

from .staff import staff_required

bp = Blueprint("staff_tickets", __name__, url_prefix="/staff/tickets")

QUEUE_LIMIT = 200


def _ticket_or_404(uuid: str) -> tk.Ticket:
    ticket = db.session.scalar(select(tk.Ticket).filter_by(uuid=uuid))
    if ticket is None:
        abort(404)
    return ticket


@bp.get("/")
@staff_required("tickets.view")
def queue():
    status = request.args.get("status", "open")
    if status not in tk.STATUSES and status != "all":
        abort(404)
    stmt = select(tk.Ticket)
    if status != "all":
        stmt = stmt.where(tk.Ticket.status == status)
    # Oldest waiting first for the open queue; most recent first otherwise.
    order = tk.Ticket.updated_at.asc() if status == "open" else tk.Ticket.updated_at.desc()
    tickets = db.session.scalars(stmt.order_by(order, tk.Ticket.id).limit(QUEUE_LIMIT)).all()
    return render_template("staff_tickets/queue.html", tickets=tickets, status=status, counts=tk.status_counts(),
                           statuses=tk.STATUSES)


@bp.get("/<uuid>")
@staff_required("tickets.view")
def show(uuid: str):
    return render_template("staff_tickets/show.html", ticket=_ticket_or_404(uuid))


@bp.post("/<uuid>/reply")
@staff_required("tickets.reply")
def reply(uuid: str):
    ticket = _ticket_or_404(uuid)
    body = request.form.get("body", "")
    try:
        tk.reply(ticket, current_user, body, staff=True)
        if request.form.get("close"):
            tk.close(ticket, current_user, staff=True)
        db.session.commit()
    except UserError as exc:
        db.session.rollback()
        flash(str(exc), "error")
        return render_template("staff_tickets/show.html", ticket=_ticket_or_404(uuid)), 400
    _mail_reply(ticket, body.strip())
    flash("Reply sent.", "info")
    return redirect(url_for("staff_tickets.show", uuid=uuid))


@bp.post("/<uuid>/close")
@staff_required("tickets.reply")
def close(uuid: str):
    ticket = _ticket_or_404(uuid)
    tk.close(ticket, current_user, staff=True)
    db.session.commit()
    flash("Ticket closed.", "info")
    return redirect(url_for("staff_tickets.queue"))


def _mail_reply(ticket: tk.Ticket, body: str) -> None:
    to = ticket.reply_to
    if not to:
        return
    base = current_app.config["HOSTBAY_BASE_URL"]
    link = f"\n\nSee the whole conversation: {base}/panel/tickets/{ticket.uuid}\n" if ticket.user_id else "\n"
    try:
        send_mail(to, f"Re: {ticket.subject}", body + link)
    except OSError:
        current_app.logger.exception("ticket reply mail could not be sent")
