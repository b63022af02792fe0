"""Tokens: the CLI prints one once (only its hash is stored); scopes, expiry, allowed client networks, revocation,
last-used time and address; per-token rate limits with RateLimit headers; problem+json with stable types."""

import hashlib
from datetime import timedelta

from click.testing import CliRunner

from hostbay.core import credentials
from hostbay.core.db import db

from .conftest import bearer


def test_cli_creates_a_token_printed_once_and_stored_hashed(app, make_user):
    from hostbay.web.cli import api_token_create

    user = make_user(email="cli@example.test")
    res = CliRunner().invoke(api_token_create, ["--email", "cli@example.test", "--scope", "read", "--name", "ci",
                                                "--expires", "30"], obj=_script_info(app))
    assert res.exit_code == 0, res.output
    raw = res.output.strip()
    assert raw.startswith("hb_")
    tok = db.session.scalar(db.select(credentials.ApiToken).filter_by(user_id=user.id))
    assert tok.token_hash == hashlib.sha256(raw.encode()).hexdigest() and raw not in (tok.hint + tok.name)
    assert tok.scope == "read" and tok.expires_at is not None
    bad = CliRunner().invoke(api_token_create, ["--email", "nobody@example.test", "--scope", "read"],
                             obj=_script_info(app))
    assert bad.exit_code != 0 and "No active account" in bad.output


def _script_info(app):
    from flask.cli import ScriptInfo

    return ScriptInfo(create_app=lambda: app)


def test_expiry_networks_revocation_and_last_use(app, client, clock, make_user, make_token):
    user = make_user()
    raw = make_token(user, "read", expires_days=1, networks="10.9.0.0/16")
    # from another network: refused
    resp = client.get("/api/v1/wallet", headers=bearer(raw), environ_base={"REMOTE_ADDR": "127.0.0.1"})
    assert resp.status_code == 403 and resp.get_json()["type"] == "/api/v1/problems/network-not-allowed"
    resp = client.get("/api/v1/wallet", headers=bearer(raw), environ_base={"REMOTE_ADDR": "10.9.3.4"})
    assert resp.status_code == 200, resp.data
    tok = db.session.scalar(db.select(credentials.ApiToken).filter_by(user_id=user.id))
    db.session.refresh(tok)
    assert tok.last_used_ip == "10.9.3.4" and tok.last_used_at == clock.now()
    clock.advance(days=1, seconds=1)
    resp = client.get("/api/v1/wallet", headers=bearer(raw), environ_base={"REMOTE_ADDR": "10.9.3.4"})
    assert resp.status_code == 401 and resp.get_json()["type"] == "/api/v1/problems/token-expired"
    other = make_token(user, "write")
    assert client.get("/api/v1/wallet", headers=bearer(other)).status_code == 200
    t2 = db.session.scalars(db.select(credentials.ApiToken).filter_by(user_id=user.id, scope="write")).one()
    credentials.revoke_api_token(t2)
    db.session.commit()
    resp = client.get("/api/v1/wallet", headers=bearer(other))
    assert resp.status_code == 401 and resp.get_json()["type"] == "/api/v1/problems/unauthorized"
    assert client.get("/api/v1/wallet", headers={"Authorization": "Basic abc"}).status_code == 401


def test_account_page_creates_scoped_token_and_shows_last_use(app, client, make_user):
    from hostbay.testing.pytest_plugin import login

    user = make_user()
    login(client, user)
    resp = client.post("/panel/account/api-tokens", data={"name": "deploy", "scope": "write", "expires_days": "7",
                                                          "networks": "203.0.113.0/24"})
    assert resp.status_code == 200
    tok = db.session.scalar(db.select(credentials.ApiToken).filter_by(user_id=user.id))
    assert (tok.scope, tok.allowed_networks) == ("write", ["203.0.113.0/24"])
    page = client.get("/panel/account/api-tokens").get_data(as_text=True)
    assert "203.0.113.0/24" in page and "write" in page
    bad = client.post("/panel/account/api-tokens", data={"name": "x", "networks": "not-a-net"})
    assert bad.status_code == 400


def test_rate_limit_per_token_with_headers(app, client, make_user, make_token):
    app.config["HOSTBAY_API_RATE_LIMIT"] = "3 per minute"
    app.extensions.pop("hostbay.api_limiter", None)
    user = make_user()
    a, b = make_token(user, "read"), make_token(user, "read")
    seen = [client.get("/api/v1/wallet", headers=bearer(a)) for _ in range(4)]
    assert [r.status_code for r in seen] == [200, 200, 200, 429]
    assert [r.headers["RateLimit-Remaining"] for r in seen[:3]] == ["2", "1", "0"]
    assert seen[0].headers["RateLimit-Limit"] == "3" and seen[0].headers["RateLimit-Policy"] == "3;w=60"
    assert seen[3].get_json()["type"] == "/api/v1/problems/rate-limited" and "Retry-After" in seen[3].headers
    assert client.get("/api/v1/wallet", headers=bearer(b)).status_code == 200  # per token, not per user


def test_pagination_maximum_and_problem_types(app, client, make_user, make_token):
    raw = make_token(make_user(), "read")
    resp = client.get("/api/v1/wallet/ledger?per_page=101", headers=bearer(raw))
    assert resp.status_code == 422 and resp.mimetype == "application/problem+json"
    body = resp.get_json()
    assert body["type"] == "/api/v1/problems/validation-error" and "per_page" in str(body["errors"])
    ok = client.get("/api/v1/wallet/ledger?per_page=100", headers=bearer(raw)).get_json()
    assert ok["per_page"] == 100 and ok["next_page"] is None
    spec = client.get("/api/v1/openapi.json").get_json()
    assert spec["openapi"] == "3.1.0"
    per_page = next(p for p in spec["paths"]["/api/v1/wallet/ledger"]["get"]["parameters"] if p["name"] == "per_page")
    assert per_page["schema"]["maximum"] == 100
    assert "application/problem+json" in spec["components"]["responses"]["DEFAULT_ERROR"]["content"]
    docs = client.get("/api/v1/docs")
    assert docs.status_code == 200 and "script-src 'self'" in docs.headers["Content-Security-Policy"]
    assert b"<script>" not in docs.data  # no inline script: the CSP stays strict


def test_unknown_routes_and_methods_are_problems_and_the_panel_keeps_its_pages(app, client, make_user, make_token):
    h = bearer(make_token(make_user(), "write"))
    resp = client.delete("/api/v1/wallet", headers=h)
    assert resp.status_code == 405 and resp.get_json()["type"] == "/api/v1/problems/method-not-allowed"
    assert "GET" in resp.headers["Allow"]
    resp = client.get("/api/v1/no-such-thing", headers=h)
    assert resp.status_code == 404 and resp.mimetype == "application/problem+json"
    page = client.get("/panel/no-such-page")
    assert page.status_code == 404 and page.mimetype == "text/html"
