"""The REST API, ``/api/v1``: flask-smorest blueprints with marshmallow schemas; the OpenAPI 3.1 document is
generated from them and served at ``/api/v1/openapi.json`` with a viewer at ``/api/v1/docs``.

Every view calls the same domain functions as the panel (``services.allowed``/``actions.request_action``,
``billing``, ``ledger``, ``iso``, ``rdns``, ``tickets``, ``payments``) and finds a customer's objects through the
same ownership lookups (``services.get_customer_service`` and friends). Authentication is a Bearer token only
(no session cookie is read on /api/, so there is no CSRF surface; CSRF is exempted for the API blueprints only).
"""

from __future__ import annotations

from flask_smorest import Api

from .common import HostbayApi

API_PREFIX = "/api/v1"


def init_api(app) -> Api:
    app.config.setdefault("API_TITLE", "hostbay API")
    app.config.setdefault("API_VERSION", "v1")
    app.config.setdefault("OPENAPI_VERSION", "3.1.0")
    app.config.setdefault("OPENAPI_URL_PREFIX", API_PREFIX)
    app.config.setdefault("OPENAPI_JSON_PATH", "openapi.json")
    from . import auth, customer, staff, viewer

    api = HostbayApi(app, spec_kwargs={
        "info": {"description": "hostbay's REST API. See docs/api.md: authentication, scopes, errors, pagination, "
                                "idempotency and webhooks."},
        "servers": [{"url": "/"}],
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                                      "description": "An API token: Authorization: Bearer hb_..."}}},
        "security": [{"bearer": []}],
    })
    app.extensions["hostbay.api"] = api
    auth.install(app)
    from hostbay.web.extensions import csrf

    for blp in (customer.blp, staff.blp):
        api.register_blueprint(blp)
        csrf.exempt(blp)  # Bearer tokens only on these blueprints: no cookie is read, so no CSRF surface
    app.register_blueprint(viewer.bp)
    from hostbay.core.webhooks import register_hooks

    register_hooks(app.extensions["hostbay"])
    return api
