"""What every API view shares: problem+json errors (RFC 9457), the Api subclass that documents them, pagination,
the Idempotency-Key decorator and schema helpers."""

from __future__ import annotations

import functools
import http
import json

import marshmallow as ma
from flask import Response, g, request
from flask_smorest import Api
from flask_smorest.spec import prepare_response  # noqa: F401  (re-exported for tests)
from werkzeug.exceptions import HTTPException

from hostbay.core import idempotency
from hostbay.core.errors import ActionNotAllowed, HostbayError, InsufficientFunds, NotFound, UserError

PROBLEM = "application/problem+json"
PROBLEM_BASE = "/api/v1/problems/"
MAX_PER_PAGE = 100
DEFAULT_PER_PAGE = 25

# status -> (stable type slug, title) for errors that have no more specific type
_STATUS_TYPES = {
    400: ("invalid-request", "Invalid request"), 401: ("unauthorized", "Authentication required"),
    403: ("forbidden", "Forbidden"), 404: ("not-found", "Not found"), 405: ("method-not-allowed",
                                                                          "Method not allowed"),
    409: ("conflict", "Conflict"), 413: ("payload-too-large", "Payload too large"),
    415: ("unsupported-media-type", "Unsupported media type"), 422: ("validation-error", "Validation error"),
    429: ("rate-limited", "Too many requests"), 500: ("server-error", "Internal server error"),
    503: ("unavailable", "Service unavailable"),
}
PROBLEM_TYPES = {
    "invalid-request", "unauthorized", "token-expired", "network-not-allowed", "insufficient-scope",
    "permission-denied", "staff-only", "not-found", "method-not-allowed", "conflict", "action-not-allowed",
    "insufficient-funds", "payload-too-large", "unsupported-media-type", "validation-error",
    "idempotency-key-required", "idempotency-key-reused", "idempotency-in-progress", "rate-limited",
    "server-error", "unavailable", "confirmation-required", "quote-expired",
}


class ApiProblem(HTTPException):
    """Raise to answer with a problem document of a given type."""

    def __init__(self, status: int, slug: str, detail: str, title: str | None = None, headers=None, **extra):
        assert slug in PROBLEM_TYPES, slug
        self.code = status
        self.slug, self.detail, self.extra = slug, detail, extra
        self.title = title or _STATUS_TYPES.get(status, (slug, http.HTTPStatus(status).phrase))[1]
        self.headers = headers or {}
        super().__init__(detail)

    def get_response(self, environ=None, scope=None):
        return problem_response(self.code, self.slug, self.detail, title=self.title, headers=self.headers,
                                **self.extra)


def problem_response(status: int, slug: str, detail: str, *, title: str | None = None, headers=None,
                     **extra) -> Response:
    body = {"type": PROBLEM_BASE + slug, "title": title or _STATUS_TYPES.get(status, (slug, ""))[1] or slug,
            "status": status, "detail": detail}
    if request:
        body["instance"] = request.path
    body.update(extra)
    resp = Response(json.dumps(body), status=status, mimetype=PROBLEM)
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def problem_for_http_exception(exc: HTTPException) -> Response:
    if isinstance(exc, ApiProblem):
        resp = exc.get_response()
    else:
        status = exc.code or 500
        slug, title = _STATUS_TYPES.get(status, ("server-error" if status >= 500 else "invalid-request",
                                                 exc.name))
        detail = exc.description if status < 500 else "The request could not be completed."
        extra = {}
        data = getattr(exc, "data", None)
        if data and isinstance(data.get("messages"), dict):  # webargs validation errors
            extra["errors"] = data["messages"]
            detail = "The request did not validate; see errors."
        if status == 405:
            detail = "This method is not allowed on this resource."
        resp = problem_response(status, slug, detail, title=title, **extra)
        if status == 405 and getattr(exc, "valid_methods", None):
            resp.headers["Allow"] = ", ".join(exc.valid_methods)
    return resp


def problem_for_domain_error(exc: HostbayError) -> Response:
    """Domain errors carry customer-safe messages; map their class to a status and a stable type."""
    msg = exc.customer_message
    if isinstance(exc, NotFound):
        return problem_response(404, "not-found", msg)
    if isinstance(exc, InsufficientFunds):
        return problem_response(402, "insufficient-funds", msg, title="Insufficient funds",
                                needed_cents=exc.needed_cents, balance_cents=exc.balance_cents,
                                shortfall_cents=exc.shortfall_cents)
    from hostbay.core.quotes import QuoteExpired

    if isinstance(exc, QuoteExpired):
        return problem_response(409, "quote-expired", msg, title="Quote no longer valid")
    if isinstance(exc, ActionNotAllowed):
        return problem_response(409, "action-not-allowed", msg, title="Action not allowed")
    if isinstance(exc, UserError):
        return problem_response(400, "invalid-request", msg)
    return problem_response(503, "unavailable", msg)


class ProblemSchema(ma.Schema):
    """RFC 9457 problem details."""

    type = ma.fields.String(required=True, metadata={"description": "Stable URI reference of the problem type"})
    title = ma.fields.String(required=True)
    status = ma.fields.Integer(required=True)
    detail = ma.fields.String(required=True)
    instance = ma.fields.String()
    errors = ma.fields.Dict(metadata={"description": "Validation errors by location and field"})


class HostbayApi(Api):
    """flask-smorest's Api with RFC 9457 errors, documented as application/problem+json."""

    ERROR_SCHEMA = ProblemSchema

    def _register_error_handlers(self):
        from hostbay.web.extensions import csrf  # noqa: F401

        app = self._app

        @app.errorhandler(HTTPException)
        def _http(exc):
            if is_api_request():
                return problem_for_http_exception(exc)
            return exc

    def _register_responses(self):
        for status in http.HTTPStatus:
            response = {"description": status.phrase}
            if not (100 <= status < 200) and status not in (204, 304):
                response["schema"] = self.ERROR_SCHEMA
            prepare_response(response, self.spec, PROBLEM)
            self.spec.components.response(status.name, response, lazy=True)
        response = {"description": "An error (RFC 9457 problem details; `type` names the problem).",
                    "schema": self.ERROR_SCHEMA}
        prepare_response(response, self.spec, PROBLEM)
        self.spec.components.response("DEFAULT_ERROR", response, lazy=True)


def is_api_request() -> bool:
    return request.path == "/api/v1" or request.path.startswith("/api/")


# --------------------------------------------------------------------------------------------------------------
# Schemas
# --------------------------------------------------------------------------------------------------------------

class UtcDateTime(ma.fields.DateTime):
    """Naive UTC datetimes as RFC 3339 with a Z."""

    def _serialize(self, value, attr, obj, **kwargs):
        if value is None:
            return None
        return value.replace(microsecond=0).isoformat() + "Z"


class PageArgs(ma.Schema):
    class Meta:
        ordered = True

    page = ma.fields.Integer(load_default=1, validate=ma.validate.Range(min=1, max=100000))
    per_page = ma.fields.Integer(load_default=DEFAULT_PER_PAGE, validate=ma.validate.Range(min=1, max=MAX_PER_PAGE),
                                 metadata={"description": f"Items per page, at most {MAX_PER_PAGE}."})


def page_schema(item_schema, name: str):
    return type(name, (ma.Schema,), {
        "items": ma.fields.List(ma.fields.Nested(item_schema), required=True),
        "page": ma.fields.Integer(required=True), "per_page": ma.fields.Integer(required=True),
        "total": ma.fields.Integer(required=True),
        "next_page": ma.fields.Integer(allow_none=True, required=True),
        "Meta": type("Meta", (), {"ordered": True}),
    })


def paginate(query, args) -> dict:
    """Page of a select (``args`` from PageArgs)."""
    from sqlalchemy import func, select

    from hostbay.core.db import db

    page, per = args["page"], args["per_page"]
    total = db.session.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0
    items = db.session.scalars(query.limit(per).offset((page - 1) * per)).unique().all()
    return {"items": items, "page": page, "per_page": per, "total": total,
            "next_page": page + 1 if page * per < total else None}


def paginate_list(items: list, args) -> dict:
    page, per = args["page"], args["per_page"]
    return {"items": items[(page - 1) * per: page * per], "page": page, "per_page": per, "total": len(items),
            "next_page": page + 1 if page * per < len(items) else None}


# --------------------------------------------------------------------------------------------------------------
# Idempotency-Key
# --------------------------------------------------------------------------------------------------------------

IDEMPOTENCY_PARAM = {
    "in": "header", "name": "Idempotency-Key", "schema": {"type": "string", "minLength": 1, "maxLength": 200},
    "description": "Makes the request safe to retry: the same key with the same body returns the first "
                   "response (with `Idempotent-Replayed: true`); the same key with another body is a 422.",
}


IDEMPOTENCY_REQUIRED_PARAM = {**IDEMPOTENCY_PARAM, "required": True}

# Actions of the actions endpoints that move money: the Idempotency-Key is required for them.
MONEY_ACTIONS = frozenset({"renew"})
ACTION_IDEMPOTENCY_PARAM = {**IDEMPOTENCY_PARAM, "description": IDEMPOTENCY_PARAM["description"] + (
    " **Required for `renew`**, which charges the wallet: without it the answer is 400 "
    "`idempotency-key-required` and nothing is charged. Optional for the other actions.")}


def action_moves_money(view_args) -> bool:
    return view_args.get("action") in MONEY_ACTIONS


def idempotent(required=True):
    """Decorator for POST views that move money or create servers (place it under ``@blp.route``).

    ``required`` is a bool, or a function of the view's URL arguments that says whether this request needs a key
    (the actions endpoints: only actions that move money). Without a needed key the answer is 400
    ``idempotency-key-required`` and the view does not run."""
    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            key = request.headers.get("Idempotency-Key", "").strip()
            if not key:
                if required(kwargs) if callable(required) else required:
                    raise ApiProblem(400, "idempotency-key-required",
                                     "This request moves money or creates a server: send an Idempotency-Key header "
                                     "(e.g. a fresh UUID) so that a retry cannot do it twice.")
                return fn(*args, **kwargs)
            if len(key) > idempotency.MAX_KEY_LEN or not key.isprintable():
                raise ApiProblem(400, "invalid-request", "The Idempotency-Key has at most 200 printable characters.")
            user = g.api_user
            fp = idempotency.fingerprint(request.method, request.path, request.get_data())
            try:
                replay = idempotency.begin(user.id, key, fp)
            except idempotency.KeyReused:
                raise ApiProblem(422, "idempotency-key-reused", "This Idempotency-Key was used with another "
                                 "request; use a new key for a new request.") from None
            except idempotency.StillRunning:
                raise ApiProblem(409, "idempotency-in-progress", "A request with this Idempotency-Key is still "
                                 "being processed; retry in a moment.") from None
            if replay is not None:
                status, body = replay
                resp = Response(body, status=status, mimetype="application/json")
                resp.headers["Idempotent-Replayed"] = "true"
                return resp
            g.idempotency_key = key
            try:
                resp = fn(*args, **kwargs)
            except BaseException:
                idempotency.finish(user.id, key, 500, "")
                raise
            if not isinstance(resp, Response):
                from flask import make_response

                resp = make_response(resp)
            idempotency.finish(user.id, key, resp.status_code, resp.get_data(as_text=True))
            return resp

        wrapper._apidoc = getattr(fn, "_apidoc", {})  # noqa: SLF001 - share flask-smorest's doc dict
        return wrapper
    return deco


def request_key(default: str | None = None) -> str:
    """The key a domain function gets for this request (the client's Idempotency-Key, else a fresh one)."""
    from hostbay.core.db import new_uuid

    return "api:" + (getattr(g, "idempotency_key", None) or default or new_uuid())
