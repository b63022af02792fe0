"""Public pages (no login): home, pricing, help, the favicon and the brand stylesheet."""

from flask import Blueprint, Response, abort, redirect, render_template, url_for

bp = Blueprint("public", __name__)


@bp.get("/")
def index():
    return render_template("index.html")


@bp.get("/pricing")
def pricing():
    """Every orderable package with its price per cycle (what /order offers after sign-in)."""
    from hostbay.core.catalog import CYCLE_LABELS, orderable_packages

    pkgs = orderable_packages()
    return render_template("public/pricing.html", cycle_labels=CYCLE_LABELS,
                           groups=[("Virtual servers", [p for p in pkgs if p.kind == "vps"]),
                                   ("Dedicated servers", [p for p in pkgs if p.kind == "dedicated"])])


@bp.get("/help")
def help_index():
    from hostbay.core import branding
    from hostbay.core.db import db

    if branding.seed_help():  # hostbay's own answers on first use (unpublish an entry to hide it)
        db.session.commit()
    entries = [(e, branding.render_markdown(e.body)) for e in branding.help_entries()]
    return render_template("public/help.html", entries=entries)


@bp.get("/favicon.ico")
def favicon():
    """The staff's favicon, else the logo, else hostbay's own mark in the brand colour (never a 404)."""
    from hostbay.core import branding

    brand = branding.current()
    if brand.favicon_url or brand.logo_url:
        return redirect(brand.favicon_url or brand.logo_url)
    letter = (brand.name[:1] or "h").upper()
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect width="32" height="32" rx="6" '
           f'fill="{brand.color}"/><text x="16" y="23" font-family="sans-serif" font-size="20" font-weight="700" '
           f'text-anchor="middle" fill="#fff">{_xml(letter)}</text></svg>')
    return Response(svg, mimetype="image/svg+xml", headers={"Cache-Control": "public, max-age=300"})


@bp.get("/brand.css")
def brand_css():
    """The brand colour as CSS variables (a stylesheet, so the Content-Security-Policy needs no inline style)."""
    from hostbay.core import branding

    brand = branding.current()
    css = f":root {{ --accent: {brand.color}; --accent-hover: {brand.color_hover}; }}\n"
    return Response(css, mimetype="text/css", headers={"Cache-Control": "no-cache"})


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
