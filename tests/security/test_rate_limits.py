"""Login attempts (and the other credential forms) are rate limited per client address."""

import os
import uuid

import pytest

from hostbay.testing.pytest_plugin import login


@pytest.fixture
def app_config():
    cfg = {"RATELIMIT_ENABLED": True, "HOSTBAY_LOGIN_RATE_LIMIT": "10 per minute",
           "RATELIMIT_KEY_PREFIX": f"test-{uuid.uuid4().hex}"}
    redis_url = os.environ.get("HOSTBAY_TEST_REDIS_URL")
    cfg["RATELIMIT_STORAGE_URI"] = redis_url or "memory://"
    return cfg


def test_login_is_rate_limited_per_address(app, client, make_user):
    user = make_user()
    for _ in range(10):
        resp = client.post("/login", data={"email": user.email, "password": "wrong password"})
        assert resp.status_code == 401
    resp = client.post("/login", data={"email": user.email, "password": "correct horse battery"})
    assert resp.status_code == 429 and b"Too many attempts" in resp.data
    # Another address is not affected.
    other = app.test_client()
    other.environ_base["REMOTE_ADDR"] = "198.51.100.7"
    login(other, user)
    # Pages (GET) stay reachable.
    assert client.get("/login").status_code == 200


def test_two_factor_step_and_reset_are_rate_limited(client, make_user):
    make_user()
    for _ in range(10):
        assert client.post("/login/two-factor", data={"code": "000000"}).status_code == 302
    assert client.post("/login/two-factor", data={"code": "000000"}).status_code == 429
    for _ in range(5):
        assert client.post("/password-reset", data={"email": "x@example.test"}).status_code == 200
    assert client.post("/password-reset", data={"email": "x@example.test"}).status_code == 429


def test_contact_page_is_rate_limited(client):
    for _ in range(5):
        assert client.post("/contact", data={"subject": "x"}).status_code == 400  # no form token
    assert client.post("/contact", data={"subject": "x"}).status_code == 429
