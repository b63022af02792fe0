"""The installation's brand (Staff › Branding), not the product's name, in the account e-mails (sign-up, password
reset, security notices, staff invitation), in the two-factor issuer name the authenticator app shows and on the
two-factor pages. Read from a real SMTP server on loopback."""

from __future__ import annotations

import html
import re
from email.header import decode_header, make_header
from urllib.parse import parse_qs, unquote, urlsplit

import pyotp
import pytest

from hostbay.core import branding
from hostbay.testing.pytest_plugin import login

BRAND = "Example Co Hosting"
PW = "correct horse battery"


@pytest.fixture
def brand(db):
    branding.save(name=BRAND, logo_url=None, favicon_url=None, color="#7b2d8e", support_email="help@example.test",
                  footer_links=None)
    db.session.commit()
    return BRAND


def _subject(msg) -> str:
    return str(make_header(decode_header(msg["Subject"])))


def _assert_branded(msg, subject: str) -> None:
    """The subject is ``subject``; both parts name the brand and never the product."""
    assert _subject(msg) == subject
    parts = {p.get_content_type(): p.get_payload(decode=True).decode() for p in msg.walk() if not p.is_multipart()}
    assert set(parts) == {"text/plain", "text/html"}
    for kind, text in parts.items():
        assert BRAND in text, (kind, text)
        assert "hostbay" not in text.lower(), (kind, text)


def _one(smtp_server, address, subject_part):
    found = [m for m in smtp_server.to(address) if subject_part in _subject(m)]
    assert len(found) == 1, [_subject(m) for m in smtp_server.to(address)]
    return found[0]


def test_signup_mails_carry_the_brand(client, brand, make_user, smtp_server):
    make_user(email="taken@example.test")
    for address in ("fresh@example.test", "taken@example.test"):
        resp = client.post("/register", data={"email": address, "password": "long enough pw", "name": "X"})
        assert resp.status_code == 200
        client.post("/logout")
    _assert_branded(_one(smtp_server, "fresh@example.test", "account"), f"Your {BRAND} account")
    _assert_branded(_one(smtp_server, "taken@example.test", "Sign-up"), f"Sign-up attempt with your {BRAND} address")
    body = smtp_server.body(_one(smtp_server, "fresh@example.test", "account"))
    assert f"your {BRAND} account is ready" in body


def test_password_mails_and_security_notices_carry_the_brand(client, brand, make_user, smtp_server):
    user = make_user("reset@example.test")
    client.post("/password-reset", data={"email": user.email})
    msg = _one(smtp_server, user.email, "password")
    _assert_branded(msg, f"Choose a new {BRAND} password")
    path = urlsplit(smtp_server.link(msg, r"http://panel\.example\.test/password-reset/\S+")).path
    new = "a brand new password"
    assert client.post(path, data={"new_password": new, "confirm_password": new}).status_code == 302
    notice = _one(smtp_server, user.email, "Security notice")
    _assert_branded(notice, f"Security notice for your {BRAND} account")
    assert f"The password of your {BRAND} account was reset" in smtp_server.body(notice)

    login(client, user, new)
    client.post("/panel/account/password", data={"current_password": new, "new_password": PW,
                                                 "confirm_password": PW})
    notices = [m for m in smtp_server.to(user.email) if "Security notice" in _subject(m)]
    assert len(notices) == 2
    _assert_branded(notices[-1], f"Security notice for your {BRAND} account")
    assert f"The password of your {BRAND} account was changed." in smtp_server.body(notices[-1])


def test_two_factor_issuer_pages_and_notices_carry_the_brand(client, db, brand, make_user, smtp_server):
    user = make_user("otp@example.test")
    login(client, user)
    page = client.get("/panel/account/two-factor").get_data(as_text=True)
    assert re.search(r"data-totp-issuer>([^<]+)<", page).group(1) == BRAND
    uri = html.unescape(re.search(r'href="(otpauth://[^"]+)"', page).group(1))
    assert parse_qs(urlsplit(uri).query)["issuer"] == [BRAND]  # the name the authenticator app lists
    assert unquote(urlsplit(uri).path).startswith(f"/{BRAND}:")
    assert "hostbay" not in uri.lower()
    secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', page).group(1)
    assert client.post("/panel/account/two-factor", data={"code": pyotp.TOTP(secret).now()}).status_code == 200
    _assert_branded(_one(smtp_server, user.email, "Security notice"), f"Security notice for your {BRAND} account")
    assert f"turned on for your {BRAND} account" in smtp_server.body(smtp_server.to(user.email)[-1])

    client.post("/logout")
    resp = client.post("/login", data={"email": user.email, "password": PW})
    assert resp.headers["Location"].endswith("/login/two-factor")
    step = client.get("/login/two-factor").get_data(as_text=True)
    assert f"the 6-digit code for {BRAND}." in step and "code for hostbay" not in step


def test_staff_invitation_carries_the_brand(app, brand, make_user, smtp_server):
    admin = make_user(role="admin")
    client = app.test_client()
    login(client, admin)
    resp = client.post("/staff/team/invite", data={"email": "new.staff@example.test", "role": "admin"},
                       follow_redirects=True)
    assert b"was invited as admin" in resp.data
    msg = _one(smtp_server, "new.staff@example.test", "staff account")
    _assert_branded(msg, f"Your {BRAND} staff account")
    assert f"on the {BRAND} panel" in smtp_server.body(msg)


def test_staff_ticket_reply_is_signed_with_the_brand(app, client, db, brand, make_user, smtp_server):
    from hostbay.core import tickets as tk

    customer, support = make_user("cust@example.test"), make_user("help@example.test", role="support")
    login(client, customer)
    client.post("/panel/tickets/new", data={"subject": "Server slow", "body": "Since this morning."})
    ticket = db.session.scalar(db.select(tk.Ticket).filter_by(user_id=customer.id))
    staff = app.test_client()
    login(staff, support)
    assert staff.post(f"/staff/tickets/{ticket.uuid}/reply", data={"body": "Moved you."}).status_code == 302
    page = client.get(f"/panel/tickets/{ticket.uuid}").get_data(as_text=True)
    assert f"<strong>{BRAND} support</strong>" in page and "hostbay support" not in page
    [mail] = smtp_server.to("cust@example.test")
    body = smtp_server.body(mail)
    assert BRAND in body and "hostbay" not in body.lower()
