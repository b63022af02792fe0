"""Staff › Branding (company name, logo, favicon, colour, support e-mail, footer links) and Staff › Help pages
(the Markdown entries of the public /help page). Admins only (permission ``plugins``)."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user

from hostbay.core import branding
from hostbay.core.activity import audit
from hostbay.core.db import db
from hostbay.core.errors import UserError

from .staff import staff_required

bp = Blueprint("staff_brand", __name__, url_prefix="/staff")


@bp.route("/branding", methods=["GET", "POST"])
@staff_required("plugins.branding")
def branding_page():
    brand = branding.current()
    form = {"name": brand.name, "logo_url": brand.logo_url or "", "favicon_url": brand.favicon_url or "",
            "color": brand.color, "support_email": brand.support_email or "",
            "footer_links": "\n".join(f"{label} | {url}" for label, url in brand.footer_links)}
    error, field = None, None
    if request.method == "POST":
        form = {k: request.form.get(k, "") for k in form}
        try:
            branding.save(**form)
        except UserError as exc:
            db.session.rollback()
            error, field = str(exc), getattr(exc, "field", None)
        else:
            audit("branding.changed", "brand", "brand", actor=current_user, detail=form["name"][:200])
            db.session.commit()
            flash("Branding saved.", "success")
            return redirect(url_for("staff_brand.branding_page"))
    return render_template("staff/branding.html", form=form, error=error, field=field,
                           contrast=_contrast(form["color"])), (400 if error else 200)


def _contrast(color: str) -> str | None:
    try:
        return f"{branding.contrast_with_white(color):.1f}:1" if branding.COLOR_RE.match(color) else None
    except ValueError:
        return None


@bp.get("/help")
@staff_required("plugins.branding")
def help_list():
    return render_template("staff/help_list.html", entries=branding.help_entries(published_only=False))


@bp.route("/help/new", methods=["GET", "POST"], defaults={"entry_id": None})
@bp.route("/help/<entry_id>", methods=["GET", "POST"])
@staff_required("plugins.branding")
def help_edit(entry_id):
    entry = None
    if entry_id is not None:
        if not str(entry_id).isdigit():
            abort(404)
        entry = db.session.get(branding.HelpEntry, int(entry_id))
        if entry is None:
            abort(404)
    form = {"title": entry.title if entry else "", "body": entry.body if entry else "",
            "position": entry.position if entry else 100, "published": entry.published if entry else True}
    error = None
    if request.method == "POST":
        if request.form.get("delete") and entry is not None:
            db.session.delete(entry)
            audit("help.deleted", "help", entry.slug, actor=current_user)
            db.session.commit()
            flash("Help entry deleted.", "success")
            return redirect(url_for("staff_brand.help_list"))
        form = {"title": request.form.get("title", ""), "body": request.form.get("body", ""),
                "position": request.form.get("position", "100"), "published": bool(request.form.get("published"))}
        try:
            pos = int(form["position"] or 0)
        except ValueError:
            pos, error = 0, "The position must be a whole number."
        if error is None:
            try:
                saved = branding.save_help(entry, title=form["title"], body=form["body"], position=pos,
                                           published=form["published"])
            except UserError as exc:
                db.session.rollback()
                error = str(exc)
            else:
                audit("help.saved", "help", saved.slug, actor=current_user)
                db.session.commit()
                flash("Help entry saved.", "success")
                return redirect(url_for("staff_brand.help_list"))
    preview = branding.render_markdown(form["body"]) if form["body"] else None
    return render_template("staff/help_edit.html", entry=entry, form=form, error=error, preview=preview), \
        (400 if error else 200)
