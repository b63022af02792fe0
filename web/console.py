"""The customer web console: a noVNC page whose WebSocket goes to ``hostbay console-proxy`` with a single-use token.

``GET /panel/services/<uuid>/console`` shows the page with an "Open console" button; the button POSTs (CSRF-checked)
and the answer is the noVNC page carrying a fresh token (not in any URL the browser keeps, and ``no-store``).
Ownership and the service's state are checked here before a token is issued, and again by the proxy when it is
spent."""

from __future__ import annotations

from urllib.parse import urlencode

from flask import Blueprint, abort, current_app, make_response, render_template
from flask_login import current_user, login_required

from hostbay.core import console as console_mod
from hostbay.core.db import db
from hostbay.core.errors import NotFound, UserError
from hostbay.web.common import own_service_or_404

bp = Blueprint("console", __name__, url_prefix="/panel/services")


_service_or_404 = own_service_or_404


def websocket_url(token: str) -> str:
    base = current_app.config["HOSTBAY_CONSOLE_URL"]
    return f"{base}{'&' if '?' in base else '?'}{urlencode({'token': token})}"


@bp.app_context_processor
def _console_partial():
    def console_available(service) -> bool:
        return "console" in service.actions_for() and service.node_id is not None and bool(service.infra_ref)
    return {"console_available": console_available}


def _no_store(resp):
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["Pragma"] = "no-cache"
    return resp


@bp.get("/<uuid>/console")
@login_required
def page(uuid):
    service = _service_or_404(uuid)
    return _no_store(make_response(render_template("console/page.html", service=service, ws_url=None)))


@bp.post("/<uuid>/console")
@login_required
def open_console(uuid):
    service = _service_or_404(uuid)
    try:
        token = console_mod.issue(current_user, service)
        db.session.commit()
    except NotFound:
        db.session.rollback()
        abort(404)
    except UserError as exc:
        db.session.rollback()
        return _no_store(make_response(render_template("console/page.html", service=service, ws_url=None,
                                                       refusal=str(exc)), 409))
    return _no_store(make_response(render_template("console/page.html", service=service,
                                                   ws_url=websocket_url(token))))
