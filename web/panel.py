"""The customer panel."""

from __future__ import annotations

from flask import Blueprint, render_template
from flask_login import current_user, login_required

from hostbay.core import ledger
from hostbay.core.db import db
from hostbay.core.services import Service, customer_services

bp = Blueprint("panel", __name__, url_prefix="/panel")


@bp.get("/")
@login_required
def dashboard():
    services = db.session.scalars(customer_services(current_user.id).order_by(Service.created_at)).unique().all()
    return render_template("panel/dashboard.html", services=services, balance=ledger.balance_cents(current_user.id))
