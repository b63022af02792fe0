"""Staff ISO approvals: the pending queue and recent decisions; approve, or reject with a note (audited)."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select

from hostbay.core import iso as iso_mod
from hostbay.core.db import db
from hostbay.core.errors import UserError

from .staff import staff_required

bp = Blueprint("staff_iso", __name__, url_prefix="/staff/isos")



@bp.get("/")
@staff_required("approvals.iso")
def queue():
    recent = db.session.scalars(select(iso_mod.IsoImage).where(iso_mod.IsoImage.state != iso_mod.PENDING)
                                .order_by(iso_mod.IsoImage.decided_at.desc()).limit(50)).all()
    return render_template("staff/isos.html", pending=iso_mod.pending_queue(), recent=recent)


def _decide(uuid: str, approve: bool):
    image = db.session.scalar(select(iso_mod.IsoImage).filter_by(uuid=uuid))
    if image is None:
        abort(404)
    try:
        iso_mod.decide(image, approve, current_user, request.form.get("note", ""))
        db.session.commit()
        flash(f"“{image.name}” {'approved' if approve else 'rejected'}.", "info")
    except UserError as exc:
        db.session.rollback()
        flash(str(exc), "error")
    return redirect(url_for("staff_iso.queue"), 303)


@bp.post("/<uuid>/approve")
@staff_required("approvals.iso")
def approve(uuid):
    return _decide(uuid, True)


@bp.post("/<uuid>/reject")
@staff_required("approvals.iso")
def reject(uuid):
    return _decide(uuid, False)
