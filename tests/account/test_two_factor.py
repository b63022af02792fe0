"""TOTP two-factor authentication with pyotp codes, and one-time recovery codes."""

import re

import pyotp
import pytest

from hostbay.core import credentials
from hostbay.core.accounts import User
from hostbay.testing.pytest_plugin import login

PW = "correct horse battery"


class TotpClock:
    """The device time TOTP codes are checked against, moved by the test in 30-second steps."""

    def __init__(self):
        self.t = 1_800_000_000.0

    def code(self, secret, steps=0):
        return pyotp.TOTP(secret).at(self.t + steps * 30)

    def advance(self, steps=1):
        self.t += steps * 30


@pytest.fixture
def totp(monkeypatch):
    c = TotpClock()
    monkeypatch.setattr(credentials, "_totp_now", lambda: c.t)
    return c


def _enable(client, db, user, totp):
    login(client, user)
    page = client.get("/panel/account/two-factor")
    assert page.status_code == 200
    secret = re.search(rb'id="totp-secret">([A-Z2-7]+)<', page.data).group(1).decode()
    resp = client.post("/panel/account/two-factor", data={"code": totp.code(secret)})
    assert resp.status_code == 200, resp.data
    codes = re.findall(rb"<li><code>([a-z0-9]{5}-[a-z0-9]{5})</code></li>", resp.data)
    assert len(codes) == credentials.RECOVERY_CODE_COUNT
    client.post("/logout")
    db.session.expire_all()
    totp.advance()
    return secret, [c.decode() for c in codes]


def _password_step(client, user, password=PW):
    resp = client.post("/login", data={"email": user.email, "password": password})
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/login/two-factor")
    return resp


def test_enable_then_login_needs_a_code(client, db, make_user, totp):
    user = make_user()
    secret, _codes = _enable(client, db, user, totp)
    stored = db.session.get(User, user.id)
    assert stored.totp_secret == secret

    _password_step(client, user)
    # Not logged in yet.
    assert client.get("/panel/").status_code == 302
    resp = client.post("/login/two-factor", data={"code": totp.code(secret, steps=5)})
    assert resp.status_code == 401
    assert client.get("/panel/").status_code == 302
    resp = client.post("/login/two-factor", data={"code": totp.code(secret)})
    assert resp.status_code == 302
    assert client.get("/panel/").status_code == 200


def test_setup_with_the_real_time_code(client, db, make_user):
    user = make_user()
    login(client, user)
    page = client.get("/panel/account/two-factor")
    secret = re.search(rb'id="totp-secret">([A-Z2-7]+)<', page.data).group(1).decode()
    assert client.post("/panel/account/two-factor", data={"code": pyotp.TOTP(secret).now()}).status_code == 200
    db.session.expire_all()
    assert db.session.get(User, user.id).totp_secret == secret


def test_a_code_is_accepted_once_and_only_newer_ones_after_it(client, db, make_user, totp):
    user = make_user()
    secret, _ = _enable(client, db, user, totp)
    code = totp.code(secret)
    _password_step(client, user)
    assert client.post("/login/two-factor", data={"code": code}).status_code == 302
    client.post("/logout")
    # Replaying the same code (an observer's copy) fails, and so does an older one still in the drift window.
    _password_step(client, user)
    assert client.post("/login/two-factor", data={"code": code}).status_code == 401
    assert client.post("/login/two-factor", data={"code": totp.code(secret, steps=-1)}).status_code == 401
    assert client.get("/panel/").status_code == 302
    # The next code (one step of drift ahead) is fine.
    assert client.post("/login/two-factor", data={"code": totp.code(secret, steps=1)}).status_code == 302
    assert client.get("/panel/").status_code == 200


def test_wrong_setup_code_does_not_enable(client, db, make_user):
    user = make_user()
    login(client, user)
    client.get("/panel/account/two-factor")
    resp = client.post("/panel/account/two-factor", data={"code": "12345"})
    assert resp.status_code == 400
    db.session.expire_all()
    assert db.session.get(User, user.id).totp_secret is None


def test_recovery_code_works_once(client, db, make_user, totp):
    user = make_user()
    _secret, codes = _enable(client, db, user, totp)
    _password_step(client, user)
    resp = client.post("/login/two-factor", data={"code": codes[0].upper()})
    assert resp.status_code == 302
    assert client.get("/panel/").status_code == 200
    assert credentials.remaining_recovery_codes(db.session.get(User, user.id)) == len(codes) - 1
    client.post("/logout")

    _password_step(client, user)
    assert client.post("/login/two-factor", data={"code": codes[0]}).status_code == 401
    assert client.get("/panel/").status_code == 302
    assert client.post("/login/two-factor", data={"code": codes[1]}).status_code == 302
    assert client.get("/panel/").status_code == 200


def test_second_step_expires_and_limits_tries(client, clock, db, make_user, totp):
    user = make_user()
    secret, _ = _enable(client, db, user, totp)
    _password_step(client, user)
    clock.advance(minutes=6)
    resp = client.post("/login/two-factor", data={"code": totp.code(secret)})
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/login")
    assert client.get("/panel/").status_code == 302

    _password_step(client, user)
    for _ in range(4):
        assert client.post("/login/two-factor", data={"code": "abcdef"}).status_code == 401
    resp = client.post("/login/two-factor", data={"code": "abcdef"})
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/login")
    # The pending login is gone: even a right code needs the password again.
    assert client.post("/login/two-factor", data={"code": totp.code(secret)}).status_code == 302
    assert client.get("/panel/").status_code == 302


def test_second_step_without_password_step_is_refused(client):
    resp = client.post("/login/two-factor", data={"code": "123456"})
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/login")


def test_regenerate_and_disable(client, db, make_user, totp):
    user = make_user()
    secret, old_codes = _enable(client, db, user, totp)
    _password_step(client, user)
    client.post("/login/two-factor", data={"code": totp.code(secret)})
    totp.advance()

    assert client.post("/panel/account/two-factor/recovery-codes",
                       data={"password": "wrong password", "code": totp.code(secret)}).status_code == 400
    resp = client.post("/panel/account/two-factor/recovery-codes",
                       data={"password": PW, "code": totp.code(secret)})
    assert resp.status_code == 200
    new_codes = [c.decode() for c in re.findall(rb"<code>([a-z0-9]{5}-[a-z0-9]{5})</code>", resp.data)]
    assert len(new_codes) == credentials.RECOVERY_CODE_COUNT and not set(new_codes) & set(old_codes)
    fresh = db.session.get(User, user.id)
    assert not credentials.use_recovery_code(fresh, old_codes[3])

    assert client.post("/panel/account/two-factor/disable",
                       data={"password": PW, "code": "999999x"}).status_code == 400
    assert client.post("/panel/account/two-factor/disable",
                       data={"password": PW, "code": new_codes[0]}).status_code == 302
    db.session.expire_all()
    assert db.session.get(User, user.id).totp_secret is None
    assert credentials.remaining_recovery_codes(db.session.get(User, user.id)) == 0
    client.post("/logout")
    login(client, user)  # one step again


def test_recovery_codes_are_stored_hashed(client, db, make_user, totp):
    user = make_user()
    _secret, codes = _enable(client, db, user, totp)
    stored = db.session.scalars(db.select(credentials.RecoveryCode.code_hash)
                                .filter_by(user_id=user.id)).all()
    assert len(stored) == len(codes)
    for code in codes:
        assert code not in stored and code.replace("-", "") not in stored
