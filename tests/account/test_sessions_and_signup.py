"""Login sessions end on the server side (logout, password change, two-factor change, staff lock, "sign out of all
sessions", the session lifetime); registration answers the same for new and existing addresses and tells the
address's owner; staff sign in with two-factor authentication where it is required."""

from __future__ import annotations

import re
from datetime import timedelta

import pyotp

from hostbay.core import credentials
from hostbay.core.accounts import User
from hostbay.core.db import db
from hostbay.testing.pytest_plugin import login

PW = "correct horse battery"


def _copy_of(client, app):
    """A second browser holding a copy of ``client``'s session cookie (as an attacker who copied it would)."""
    other = app.test_client()
    other.set_cookie("session", client.get_cookie("session").value)
    return other


def _in(client) -> bool:
    return client.get("/panel/").status_code == 200


def test_a_copied_cookie_stops_working_after_logout(app, client, make_user):
    user = make_user()
    login(client, user)
    copy = _copy_of(client, app)
    assert _in(copy)
    client.post("/logout")
    assert not _in(client)
    assert not _in(copy)  # the copy made before the logout is refused too
    login(client, user)  # a fresh login works
    assert _in(client)


def test_password_change_ends_the_other_sessions_and_keeps_this_one(app, client, make_user):
    user = make_user()
    login(client, user)
    copy = _copy_of(client, app)
    resp = client.post("/panel/account/password", data={"current_password": PW, "new_password": "a new password 1",
                                                        "confirm_password": "a new password 1"})
    assert resp.status_code == 302
    assert _in(client) and not _in(copy)


def test_password_reset_ends_every_session(app, client, make_user):
    user = make_user()
    login(client, user)
    token = credentials.make_reset_token(user)
    fresh = app.test_client()
    assert fresh.post(f"/password-reset/{token}", data={"new_password": "a new password 1",
                                                        "confirm_password": "a new password 1"}).status_code == 302
    assert not _in(client)


def test_two_factor_changes_end_the_other_sessions(app, client, make_user):
    user = make_user()
    login(client, user)
    copy = _copy_of(client, app)
    client.get("/panel/account/two-factor")
    with client.session_transaction() as s:
        secret = s["totp_setup"]
    assert client.post("/panel/account/two-factor", data={"code": pyotp.TOTP(secret).now()}).status_code == 200
    assert _in(client) and not _in(copy)
    copy2 = _copy_of(client, app)
    code = client.post("/panel/account/two-factor/recovery-codes", data={"password": PW, "code": "x"})
    assert code.status_code == 400  # wrong code: nothing changes
    assert _in(copy2)


def test_turning_two_factor_off_ends_the_other_sessions_and_keeps_this_one(app, client, make_user):
    user = make_user()
    login(client, user)
    client.get("/panel/account/two-factor")
    with client.session_transaction() as s:
        secret = s["totp_setup"]
    page = client.post("/panel/account/two-factor", data={"code": pyotp.TOTP(secret).now()})
    assert page.status_code == 200
    codes = re.findall(r"<li><code>([a-z0-9]{5}-[a-z0-9]{5})</code></li>", page.get_data(as_text=True))
    assert codes
    copy = _copy_of(client, app)  # a copy made while two-factor is on
    assert _in(copy)
    wrong = client.post("/panel/account/two-factor/disable", data={"password": "not the password", "code": codes[0]})
    assert wrong.status_code == 400 and _in(copy)  # a refused attempt changes nothing
    resp = client.post("/panel/account/two-factor/disable", data={"password": PW, "code": codes[0]})
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/panel/account/")
    assert db.session.get(User, user.id).totp_secret is None
    assert not _in(copy)  # the other browser is signed out
    assert _in(client)  # the browser that turned it off stays signed in (renew_current)


def test_staff_lock_ends_every_session(app, client, make_user):
    user, admin = make_user(), make_user(role="admin", password="admin password 1")
    login(client, user)
    assert _in(client)
    staff = app.test_client()
    login(staff, admin, "admin password 1")
    assert staff.post(f"/staff/accounts/{user.uuid}/lock", data={"reason": "fraud"}).status_code == 302
    assert not _in(client)
    assert client.post("/login", data={"email": user.email, "password": PW}).status_code == 401
    staff.post(f"/staff/accounts/{user.uuid}/lock", data={"lock": "0"})
    login(client, user)
    assert _in(client)


def test_sign_out_of_all_sessions(app, client, make_user):
    user = make_user()
    login(client, user)
    copy = _copy_of(client, app)
    page = client.get("/panel/account/").get_data(as_text=True)
    assert "Sign out of all sessions" in page
    resp = client.post("/panel/account/sessions/end")
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/login")
    assert not _in(client) and not _in(copy)


def test_sessions_end_after_their_lifetime(app, client, make_user, clock):
    app.config["HOSTBAY_SESSION_HOURS"] = 2
    user = make_user()
    login(client, user)
    clock.advance(hours=1, minutes=59)
    assert _in(client)
    clock.advance(minutes=2)
    assert not _in(client)


def test_registration_answers_the_same_for_an_existing_address(app, client, make_user, smtp_server):
    existing = make_user(email="taken@example.test")
    before = existing.password_hash
    answers = {}
    for address in ("taken@example.test", "fresh@example.test"):
        c = app.test_client()
        resp = c.post("/register", data={"email": address, "password": "long enough pw", "name": "X"})
        answers[address] = (resp.status_code, resp.get_data(as_text=True).replace(address, "ADDRESS"))
        assert not _in(c)  # nobody is logged in by signing up: the answer is the same
    assert answers["taken@example.test"] == answers["fresh@example.test"]
    assert answers["fresh@example.test"][0] == 200 and "We have sent the next step to ADDRESS" in \
        answers["fresh@example.test"][1]
    db.session.expire_all()
    assert db.session.get(User, existing.id).password_hash == before  # nothing changed in the existing account
    [taken] = smtp_server.to("taken@example.test")
    assert "No second account was created" in smtp_server.body(taken) and "password-reset" in smtp_server.body(taken)
    [welcome] = smtp_server.to("fresh@example.test")
    assert "your hostbay account is ready" in smtp_server.body(welcome)
    fresh = db.session.scalar(db.select(User).filter_by(email="fresh@example.test"))
    login(client, fresh, "long enough pw")
    assert _in(client)


def test_staff_need_two_factor_when_required(app, client, make_user):
    app.config["HOSTBAY_STAFF_2FA"] = "required"
    admin = make_user(role="admin", password="admin password 1")
    login(client, admin, "admin password 1")
    resp = client.get("/staff/")
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/panel/account/two-factor")
    assert client.get("/panel/").status_code == 302  # nothing but the set-up until two-factor is on
    client.get("/panel/account/two-factor")
    with client.session_transaction() as s:
        secret = s["totp_setup"]
    assert client.post("/panel/account/two-factor", data={"code": pyotp.TOTP(secret).now()}).status_code == 200
    assert client.get("/staff/").status_code == 200
    # the next sign-in asks for the code, then lands on the staff home
    client.post("/logout")
    resp = client.post("/login", data={"email": admin.email, "password": "admin password 1"})
    assert resp.headers["Location"].endswith("/login/two-factor")


def test_staff_two_factor_default_follows_the_mode(app):
    from hostbay.web.auth import staff_two_factor_required

    with app.test_request_context():
        app.config.update(HOSTBAY_STAFF_2FA=None, HOSTBAY_EMBEDDED=False)
        assert staff_two_factor_required()
        app.config.update(HOSTBAY_EMBEDDED=True)
        assert not staff_two_factor_required()
        app.config.update(HOSTBAY_STAFF_2FA="required")
        assert staff_two_factor_required()


def test_staff_land_on_the_staff_home_with_a_staff_link(client, make_user):
    admin = make_user(role="admin", password="admin password 1")
    resp = client.post("/login", data={"email": admin.email, "password": "admin password 1"})
    assert resp.headers["Location"].endswith("/staff/")
    page = client.get("/panel/").get_data(as_text=True)
    nav = re.search(r'<nav aria-label="Main">(.*?)</nav>', page, re.S).group(1)
    assert '<a href="/staff/">Staff</a>' in nav
    customer = make_user()
    c2 = client.application.test_client()
    assert c2.post("/login", data={"email": customer.email, "password": PW}).headers["Location"].endswith("/panel/")
    assert '<a href="/staff/">Staff</a>' not in c2.get("/panel/").get_data(as_text=True)
