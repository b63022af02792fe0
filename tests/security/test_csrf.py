"""Every state-changing route refuses a request without a CSRF token (except the listed webhook endpoints,
which authenticate by signature)."""

import re

import pytest


# Rules allowed to skip CSRF: machine-to-machine endpoints that verify a signature instead, the REST API, which
# accepts Bearer tokens only and never reads the session cookie (tests/api/test_access.py shows a session is a 401),
# and a new server's signed single-use phone-home ("/guest/").
EXEMPT_PREFIXES = ("/payments/webhook", "/api/v1/", "/guest/")


@pytest.fixture
def app_config():
    return {"WTF_CSRF_ENABLED": True}


def _token(client, path="/panel/account/ssh-keys"):
    return re.search(rb'name="csrf_token" value="([^"]+)"', client.get(path).data).group(1).decode()


STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}


def _state_changing_rules(app):
    return [(rule, method) for rule in app.url_map.iter_rules()
            for method in sorted(rule.methods & STATE_CHANGING)]


def test_every_state_changing_route_requires_a_csrf_token(app, make_user, url_for_rule):
    rules = _state_changing_rules(app)
    assert len(rules) >= 20  # the enumeration works: login, register, account, tickets, staff, ...
    refused, exempt = [], []
    for who in (None, make_user(role="admin", password="admin password 1")):
        client = app.test_client()
        if who is not None:
            client.post("/login", data={"email": who.email, "password": "admin password 1",
                                        "csrf_token": _token(client, "/login")})
            assert client.get("/panel/").status_code == 200
        for rule, method in rules:
            url = url_for_rule(rule)
            if rule.rule.startswith(EXEMPT_PREFIXES):
                exempt.append(rule.rule)
                continue
            resp = client.open(url, method=method, data={"name": "x", "body": "x", "subject": "x"})
            assert resp.status_code == 400 and b"CSRF" in resp.data, (method, rule.rule, resp.status_code)
            refused.append((method, rule.rule))
            # A wrong token is refused too.
            resp = client.open(url, method=method, data={"csrf_token": "forged"})
            assert resp.status_code == 400 and b"CSRF" in resp.data, (method, rule.rule)
    for path in exempt:
        # only webhooks, the token-only API and the guests' readiness report (its token is the credential) skip CSRF
        assert "webhook" in path or path.startswith("/api/v1/") or path == "/guest/<service_uuid>/ready/<token>"


def test_forms_with_the_token_go_through(app, db, make_user):
    """The check above is not vacuous: the same forms work with the page's token."""
    user = make_user()
    client = app.test_client()
    resp = client.post("/login", data={"email": user.email, "password": "correct horse battery",
                                       "csrf_token": _token(client, "/login")})
    assert resp.status_code == 302
    resp = client.post("/panel/tickets/new", data={"subject": "Hello", "body": "there",
                                                   "csrf_token": _token(client, "/panel/tickets/new")})
    assert resp.status_code == 302
    # The token of another session is refused.
    other = app.test_client()
    foreign = _token(other, "/login")
    resp = client.post("/panel/tickets/new", data={"subject": "Hello", "body": "again", "csrf_token": foreign})
    assert resp.status_code == 400


def test_every_page_form_carries_the_token(app, make_user):
    """Each POST form on the pages a customer sees includes the CSRF field."""
    user = make_user()
    client = app.test_client()
    client.post("/login", data={"email": user.email, "password": "correct horse battery",
                                "csrf_token": _token(client, "/login")})
    for path in ("/panel/", "/panel/account/", "/panel/account/ssh-keys", "/panel/account/api-tokens",
                 "/panel/account/two-factor", "/panel/tickets", "/panel/tickets/new", "/contact",
                 "/panel/activity"):
        html = client.get(path).data.decode()
        forms = re.findall(r"<form[^>]*method=\"post\"[^>]*>(.*?)</form>", html, re.S)
        for body in forms:
            assert 'name="csrf_token"' in body, path
