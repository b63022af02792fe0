"""Error pages in the panel's style, each with a way back. Requests under /api/ keep RFC 9457 problem+json."""

from __future__ import annotations

from flask import render_template, request
from flask_wtf.csrf import CSRFError

PAGES = {
    403: ("Not allowed", "Your account may not open this page. If you think it should, contact support."),
    405: ("Not allowed", "This address does not take that kind of request."),
    500: ("Something went wrong on our side",
          "The request could not be completed. Nothing was charged twice; try again in a moment, and contact "
          "support if it keeps happening."),
}


def _api():
    from .api.common import is_api_request

    return is_api_request()


def _safe_back(*, same_page: bool = False) -> str | None:
    """The page the visitor came from, if it is on this panel (never an outside address); the failing address
    itself only when ``same_page`` (an expired form is sent again from a freshly opened page)."""
    ref = request.referrer or ""
    if not ref.startswith(request.host_url):
        return None
    return ref if same_page or ref != request.url else None


def install_error_pages(app) -> None:
    @app.errorhandler(CSRFError)
    def csrf_expired(exc):
        if _api():
            from .api.common import problem_for_http_exception

            return problem_for_http_exception(exc)
        return render_template("error.html", code=400, title="This form has expired",
                               message="For your security the form was open too long, or was sent from another "
                                       "page. Nothing was changed: open the page again and resend it.",
                               back_url=_safe_back(same_page=True), back_label="Open the page again",
                               hint="The form's security token (CSRF) was missing or expired."), 400

    for code, (title, message) in PAGES.items():
        def handler(exc, code=code, title=title, message=message):
            if _api():
                from werkzeug.exceptions import InternalServerError

                from .api.common import problem_for_http_exception

                return problem_for_http_exception(exc if hasattr(exc, "code") else InternalServerError())
            return render_template("error.html", code=code, title=title, message=message,
                                   back_url=_safe_back()), code
        app.register_error_handler(code, handler)
