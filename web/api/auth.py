"""Bearer-token authentication, scopes, staff permissions and per-token rate limits for /api/.

- Only ``Authorization: Bearer <token>`` is read; a session cookie is never looked at on /api/ (so the API has no
  CSRF surface, and the CSRF exemption covers the API blueprints only).
- A ``read`` token may only use GET/HEAD/OPTIONS; every other method is 403 ``insufficient-scope``.
- Staff endpoints need a staff member's token and the permission of the endpoint (``accounts.NAMED_PERMISSIONS``).
- Each token has its own fixed-window limit (``HOSTBAY_API_RATE_LIMIT``); every answer carries ``RateLimit-Limit``,
  ``RateLimit-Remaining``, ``RateLimit-Reset`` and ``RateLimit-Policy`` (IETF draft httpapi-ratelimit-headers).
"""

from __future__ import annotations

import functools
import time

from flask import g, request
from limits import parse
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter

from hostbay.core import credentials
from hostbay.core.db import db

from .common import ApiProblem, is_api_request

PUBLIC_PATHS = {"/api/v1/openapi.json", "/api/v1/docs", "/api/v1/docs/"}
READ_METHODS = {"GET", "HEAD", "OPTIONS"}


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def _limiter(app):
    lim = app.extensions.get("hostbay.api_limiter")
    if lim is None:
        uri = app.config.get("HOSTBAY_REDIS_URL") or "memory://"
        lim = app.extensions["hostbay.api_limiter"] = FixedWindowRateLimiter(storage_from_string(uri))
    return lim


def _rate_limit(app, token_uuid: str) -> None:
    spec = app.config.get("HOSTBAY_API_RATE_LIMIT") or "600 per minute"
    item = parse(spec)
    lim = _limiter(app)
    ok = lim.hit(item, "hostbay-api", token_uuid)
    stats = lim.get_window_stats(item, "hostbay-api", token_uuid)
    reset = max(0, int(stats.reset_time - time.time()))
    g.api_ratelimit = {"RateLimit-Limit": str(item.amount), "RateLimit-Remaining": str(max(0, stats.remaining)),
                       "RateLimit-Reset": str(reset),
                       "RateLimit-Policy": f"{item.amount};w={item.get_expiry()}"}
    if not ok:
        raise ApiProblem(429, "rate-limited", f"This token may make {item.amount} requests per "
                         f"{item.get_expiry()} seconds; retry after {reset} seconds.",
                         headers={"Retry-After": str(reset)})


def install(app) -> None:
    from hostbay.web.extensions import csrf

    @app.before_request
    def _api_auth():
        if not is_api_request() or request.path in PUBLIC_PATHS:
            return None
        db.session.rollback()  # a request starts with a clean session (nothing of a previous one is pending)
        if "\x00" in request.path or b"%00" in request.query_string or b"\x00" in request.query_string:
            raise ApiProblem(400, "invalid-request", "The URL may not contain NUL characters.")
        raw = _bearer()
        if raw is None:
            raise ApiProblem(401, "unauthorized", "Send an API token: Authorization: Bearer <token>.",
                             headers={"WWW-Authenticate": 'Bearer realm="hostbay"'})
        found = credentials.authenticate_api_token(raw, request.remote_addr)
        if found is None:
            db.session.rollback()
            raise ApiProblem(401, "unauthorized", "This API token is not valid (unknown or revoked).",
                             headers={"WWW-Authenticate": 'Bearer realm="hostbay", error="invalid_token"'})
        if found == "expired":
            db.session.rollback()
            raise ApiProblem(401, "token-expired", "This API token has expired; create a new one.",
                             headers={"WWW-Authenticate": 'Bearer realm="hostbay", error="invalid_token"'})
        if found == "network":
            db.session.rollback()
            raise ApiProblem(403, "network-not-allowed", "This API token may not be used from this address.")
        token, user = found
        db.session.commit()  # last use is recorded even when the request fails later
        g.api_token, g.api_user = token, user
        _rate_limit(app, token.uuid)
        if request.method not in READ_METHODS and token.scope != "write":
            raise ApiProblem(403, "insufficient-scope", "This token has the read scope; this request needs a "
                             "token with the write scope.")
        return None

    @app.after_request
    def _api_headers(resp):
        if is_api_request():
            for k, v in (getattr(g, "api_ratelimit", None) or {}).items():
                resp.headers[k] = v
            resp.headers["Cache-Control"] = "no-store"
            resp.headers.pop("Set-Cookie", None)  # the API never sets or needs a session
        return resp

    app.extensions["hostbay.api_csrf_exempt"] = csrf


def staff_required(permission: str | tuple[str, ...] | None):
    """A staff endpoint: the token's user must be staff and hold ``permission`` (any of a tuple; None: any
    staff member)."""
    perms = (permission,) if isinstance(permission, str) else tuple(permission or ())

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            user = g.api_user
            if not user.is_staff:
                raise ApiProblem(403, "staff-only", "This endpoint is for staff tokens.")
            if perms and not any(user.can(p) for p in perms):
                raise ApiProblem(403, "permission-denied", "Your role does not have the permission for this "
                                 f"endpoint ({' or '.join(perms)}).")
            return fn(*args, **kwargs)

        wrapper._apidoc = getattr(fn, "_apidoc", {})  # noqa: SLF001
        wrapper._hostbay_permission = perms  # noqa: SLF001 - read by the role test
        return wrapper
    return deco


def current_api_user():
    return g.api_user
