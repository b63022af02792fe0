"""One CSRF test over every state-changing route of the app (core and bundled plugins' blueprints): with
protection on, as in production, a POST/PUT/PATCH/DELETE without a token is refused with 400 before the view runs,
signed in or not. The only exceptions are listed here with their reason; a new exempt route fails this test until
it is added to the list."""

from __future__ import annotations

import re

import pytest

from hostbay.testing.pytest_plugin import login

# endpoint -> why it takes no CSRF token (it authenticates otherwise)
EXEMPT = {
    "payments.webhook": "provider deliveries, authenticated by the provider's signature over the raw body",
    "guest.ready": "a new server's phone-home, authenticated by its signed single-use token in the URL",
}
# blueprint -> why its routes take no CSRF token: /api/v1 reads Bearer tokens only, never the session cookie
# (tests/api/test_access.py shows a signed-in session is a 401 there), so a forged cross-site request has nothing
# to ride on
EXEMPT_BLUEPRINTS = {
    "api_customer": "the REST API: Bearer tokens only",
    "api_staff": "the REST API: Bearer tokens only",
}
STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}


def _exempt(rule) -> str | None:
    if rule.endpoint in EXEMPT:
        return rule.endpoint
    blueprint = rule.endpoint.rpartition(".")[0]
    return blueprint if blueprint in EXEMPT_BLUEPRINTS else None


@pytest.fixture
def app_config():
    return {"WTF_CSRF_ENABLED": True}


def _url_for_rule(rule) -> str:
    values = {}
    for arg in rule.arguments:
        conv = rule._converters.get(arg)
        values[arg] = 1 if type(conv).__name__ in ("IntegerConverter",) else "00000000-0000-0000-0000-000000000000"
    url = rule.build(values, append_unknown=False)[1]
    return url


def _routes(app):
    out = []
    for rule in app.url_map.iter_rules():
        methods = (rule.methods or set()) & STATE_CHANGING
        if methods and rule.endpoint != "static":
            out.append((rule, sorted(methods)))
    return out


def test_every_state_changing_route_needs_a_csrf_token(app, client, make_user):
    routes = _routes(app)
    assert len(routes) > 40  # the enumeration found the app's forms (core alone has more)
    exempt_seen = set()

    def check(signed_in: str):
        for rule, methods in routes:
            url = _url_for_rule(rule)
            for method in methods:
                resp = client.open(url, method=method, data={"x": "1"})
                if _exempt(rule):
                    exempt_seen.add(_exempt(rule))
                    assert resp.status_code != 400 or b"CSRF" not in resp.data, rule.endpoint
                    continue
                assert resp.status_code == 400 and b"CSRF" in resp.data, \
                    f"{method} {rule.rule} ({rule.endpoint}, {signed_in}) answered {resp.status_code} without a token"

    check("anonymous")
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    admin = make_user(role="admin")
    resp = client.post("/login", data={"email": admin.email, "password": "correct horse battery",
                                       "csrf_token": token})
    assert resp.status_code in (302, 303)
    check("admin")
    assert exempt_seen == set(EXEMPT) | set(EXEMPT_BLUEPRINTS), "an exemption listed here no longer exists: remove it"


def test_a_token_is_accepted(app, client, make_user):
    """The counter-check: with the page's token a post passes the CSRF check (the login above it too)."""
    user = make_user()
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    resp = client.post("/login", data={"email": user.email, "password": "correct horse battery",
                                       "csrf_token": token})
    assert resp.status_code in (302, 303)
