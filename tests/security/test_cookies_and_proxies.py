"""The session cookie's flags as they go out in the Set-Cookie header; client addresses behind trusted proxies
(HOSTBAY_TRUSTED_PROXIES); the login limit counts failures, per client address and per account."""

from __future__ import annotations

import os
import uuid

import pytest

from hostbay.core.activity import AuditEntry
from hostbay.core.db import db

PW = "correct horse battery"


def _login_cookie(client, email: str) -> str:
    resp = client.post("/login", data={"email": email, "password": PW})
    assert resp.status_code == 302
    [cookie] = [v for v in resp.headers.getlist("Set-Cookie") if v.startswith("session=")]
    return cookie


def test_session_cookie_is_httponly_and_samesite_lax(client, make_user):
    cookie = _login_cookie(client, make_user().email)
    flags = [part.strip().lower() for part in cookie.split(";")]
    assert "httponly" in flags and "samesite=lax" in flags
    assert "secure" not in flags  # the panel's base URL is plain http here
    assert any(f.startswith("expires=") for f in flags)  # a lifetime, not a browser-session cookie forever


def test_session_cookie_is_secure_when_the_panel_is_https(app, database_url, tmp_path, make_user):
    from hostbay.web import create_app

    https_app = create_app({"SQLALCHEMY_DATABASE_URI": database_url, "TESTING": True, "HOSTBAY_JOBS": "sync",
                            "WTF_CSRF_ENABLED": False, "INSTANCE_PATH": str(tmp_path / "https"),
                            "SECRET_KEY": "x", "RATELIMIT_ENABLED": False, "HOSTBAY_REDIS_URL": None,
                            "HOSTBAY_BASE_URL": "https://panel.example.com"})
    email = make_user().email
    db.session.commit()  # hold no transaction (SQLite: the write lock) while the other app serves the login
    cookie = _login_cookie(https_app.test_client(), email)
    flags = [part.strip().lower() for part in cookie.split(";")]
    assert "secure" in flags and "httponly" in flags and "samesite=lax" in flags


def _limited(extra=None):
    cfg = {"RATELIMIT_ENABLED": True, "HOSTBAY_LOGIN_RATE_LIMIT": "10 per minute",
           "HOSTBAY_LOGIN_ACCOUNT_RATE_LIMIT": "30 per hour", "RATELIMIT_KEY_PREFIX": f"t-{uuid.uuid4().hex}",
           "RATELIMIT_STORAGE_URI": os.environ.get("HOSTBAY_TEST_REDIS_URL") or "memory://",
           "HOSTBAY_TRUSTED_PROXIES": 1}
    cfg.update(extra or {})
    return cfg


@pytest.fixture
def app_config(request):
    return _limited(getattr(request, "param", None))


def _via_proxy(app, client_address: str):
    c = app.test_client()
    c.environ_base.update(REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR=client_address,
                          HTTP_X_FORWARDED_PROTO="https")
    return c


def test_behind_a_trusted_proxy_each_client_has_its_own_limit_and_audit_address(app, make_user):
    user, other = make_user(), make_user()
    attacker = _via_proxy(app, "203.0.113.9")
    for _ in range(10):
        assert attacker.post("/login", data={"email": user.email, "password": "wrong"}).status_code == 401
    assert attacker.post("/login", data={"email": user.email, "password": "wrong"}).status_code == 429
    # everyone else comes through the same proxy and is not affected
    customer = _via_proxy(app, "198.51.100.20")
    assert customer.post("/login", data={"email": other.email, "password": PW}).status_code == 302
    details = db.session.scalars(db.select(AuditEntry.detail).filter_by(action="auth.login_failed")).all()
    assert details and all(d == "address 203.0.113.9" for d in details)


def test_successful_logins_do_not_count(app, make_user):
    user = make_user()
    c = _via_proxy(app, "198.51.100.30")
    for _ in range(15):
        assert c.post("/login", data={"email": user.email, "password": PW}).status_code == 302
        c.post("/logout")


@pytest.mark.parametrize("app_config", [{"HOSTBAY_LOGIN_ACCOUNT_RATE_LIMIT": "5 per hour"}], indirect=True)
def test_failures_count_per_account_from_any_address(app, make_user):
    user, bystander = make_user(), make_user()
    for i in range(5):
        c = _via_proxy(app, f"203.0.113.{i + 1}")
        assert c.post("/login", data={"email": user.email, "password": "wrong"}).status_code == 401
    late = _via_proxy(app, "203.0.113.99")
    assert late.post("/login", data={"email": user.email.upper(), "password": PW}).status_code == 429
    assert late.post("/login", data={"email": bystander.email, "password": PW}).status_code == 302


@pytest.mark.parametrize("app_config", [{"HOSTBAY_TRUSTED_PROXIES": 0}], indirect=True)
def test_without_trusted_proxies_the_forwarded_header_is_ignored(app, make_user):
    user = make_user()
    c = _via_proxy(app, "203.0.113.50")
    c.post("/login", data={"email": user.email, "password": "wrong"})
    assert db.session.scalar(db.select(AuditEntry.detail).filter_by(action="auth.login_failed")) == \
        "address 127.0.0.1"
