"""Staff: OS images per virtualization driver (register, enable/disable, mark whether the image reports readiness).
A minimal form; the image's ``source`` is the driver's template reference (e.g. a qcow2 file name in the KVM node's
template pool) and is shown to staff only."""

from __future__ import annotations

import re

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select

from hostbay.core.activity import audit
from hostbay.core.catalog import Image
from hostbay.core.db import db

from .staff import staff_required

bp = Blueprint("staff_images", __name__, url_prefix="/staff/images")

OS_FAMILIES = ("debian", "ubuntu", "rhel", "alpine", "linux", "windows", "other")



def _drivers() -> list[str]:
    return sorted(current_app.extensions["hostbay"].drivers.get("virt", {}))


@bp.get("/")
@staff_required("plugins.images")
def index():
    images = db.session.scalars(select(Image).order_by(Image.driver, Image.name, Image.id)).all()
    return render_template("staff/images.html", images=images, drivers=_drivers(), os_families=OS_FAMILIES)


@bp.post("/")
@staff_required("plugins.images")
def create():
    f = request.form
    driver, slug, name, source = (f.get(k, "").strip() for k in ("driver", "slug", "name", "source"))
    errors = []
    if driver not in _drivers():
        errors.append("Choose a loaded virtualization driver.")
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,63}", slug):
        errors.append("The slug is lower-case letters, digits and dashes.")
    if not name or len(name) > 120:
        errors.append("Give the image a name (at most 120 characters).")
    if not source or len(source) > 500:
        errors.append("Give the driver's template reference (at most 500 characters).")
    os_family = f.get("os_family", "linux")
    if os_family not in OS_FAMILIES:
        errors.append("Choose an OS family.")
    try:
        min_disk = int(f.get("min_disk_gib") or 1)
        if min_disk < 1:
            raise ValueError
    except ValueError:
        errors.append("The minimum disk is a whole number of GiB.")
        min_disk = 1
    if not errors and db.session.scalar(select(Image.id).filter_by(driver=driver, slug=slug)):
        errors.append(f"{driver} already has an image {slug}.")
    if errors:
        for e in errors:
            flash(e, "error")
        return redirect(url_for(".index"), 303)
    image = Image(driver=driver, slug=slug, name=name, source=source, os_family=os_family, min_disk_gib=min_disk,
                  reports_readiness=f.get("reports_readiness") == "on", enabled=True)
    db.session.add(image)
    db.session.flush()
    audit("image.created", "image", image.uuid, actor=current_user,
          after={"driver": driver, "slug": slug, "source": source, "os_family": os_family,
                 "reports_readiness": image.reports_readiness})
    db.session.commit()
    flash(f"Image “{name}” registered for {driver}.", "info")
    return redirect(url_for(".index"), 303)


@bp.post("/<uuid>")
@staff_required("plugins.images")
def update(uuid):
    image = db.session.scalar(select(Image).filter_by(uuid=uuid))
    if image is None:
        abort(404)
    before = {"enabled": image.enabled, "reports_readiness": image.reports_readiness}
    image.enabled = request.form.get("enabled") == "on"
    image.reports_readiness = request.form.get("reports_readiness") == "on"
    audit("image.updated", "image", image.uuid, actor=current_user, before=before,
          after={"enabled": image.enabled, "reports_readiness": image.reports_readiness})
    db.session.commit()
    flash(f"Image “{image.name}” saved.", "info")
    return redirect(url_for(".index"), 303)
