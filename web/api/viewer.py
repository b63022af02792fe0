"""The interactive API viewer at /api/v1/docs: Swagger UI from the npm package swagger-ui-dist, installed into
web/static/vendor/swagger-ui by scripts/assets and served by hostbay (no CDN; the page has no inline script, so
the Content-Security-Policy stays as strict as the panel's)."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, current_app, render_template

bp = Blueprint("api_docs", __name__)

VENDOR = Path(__file__).resolve().parent.parent / "static" / "vendor" / "swagger-ui"


@bp.get("/api/v1/docs")
def docs():
    installed = (VENDOR / "swagger-ui-bundle.js").exists()
    return render_template("api/docs.html", installed=installed,
                           spec_url=current_app.config["OPENAPI_URL_PREFIX"] + "/openapi.json")
