"""Password reset by e-mail, read from a real SMTP server on loopback."""

from urllib.parse import urlsplit

from hostbay.core.accounts import User
from hostbay.core.activity import ActivityEntry
from hostbay.testing.pytest_plugin import login

NEW = "a brand new password"


def _request(client, address):
    return client.post("/password-reset", data={"email": address})


def _link_path(smtp_server, address):
    [msg] = smtp_server.to(address)
    assert msg["Subject"] == "Choose a new hostbay password"
    link = smtp_server.link(msg, r"http://panel\.example\.test/password-reset/\S+")
    return urlsplit(link).path


def test_reset_by_email_end_to_end(client, db, make_user, smtp_server):
    user = make_user("reset@example.test")
    resp = _request(client, "Reset@Example.test")
    assert resp.status_code == 200 and b"If an account uses this address" in resp.data
    path = _link_path(smtp_server, "reset@example.test")

    assert client.get(path).status_code == 200
    resp = client.post(path, data={"new_password": NEW, "confirm_password": NEW})
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/login")

    # The old password no longer works, the new one does.
    assert client.post("/login", data={"email": user.email, "password": "correct horse battery"}).status_code == 401
    login(client, user, NEW)
    assert db.session.scalar(db.select(ActivityEntry).filter_by(user_id=user.id, event="account")
                             .order_by(ActivityEntry.id.desc())).message.startswith("Password reset")

    # Single use: the same link is dead now.
    client.post("/logout")
    assert client.get(path).status_code == 404
    assert client.post(path, data={"new_password": "another password!", "confirm_password":
                                   "another password!"}).status_code == 404
    db.session.expire_all()
    assert db.session.get(User, user.id).check_password(NEW)


def test_same_answer_whether_or_not_the_address_exists(client, make_user, smtp_server):
    make_user("known@example.test")
    known = _request(client, "known@example.test")
    unknown = _request(client, "nobody@example.test")
    assert known.status_code == unknown.status_code == 200
    assert known.data == unknown.data
    assert len(smtp_server.to("known@example.test")) == 1
    assert smtp_server.to("nobody@example.test") == []


def test_link_expires_after_an_hour(client, clock, make_user, smtp_server):
    make_user("late@example.test")
    _request(client, "late@example.test")
    path = _link_path(smtp_server, "late@example.test")
    clock.advance(minutes=59)
    assert client.get(path).status_code == 200
    clock.advance(minutes=2)
    assert client.get(path).status_code == 404
    assert client.post(path, data={"new_password": NEW, "confirm_password": NEW}).status_code == 404


def test_tampered_and_foreign_tokens_are_refused(client, make_user, smtp_server):
    a = make_user("a@example.test")
    make_user("b@example.test")
    _request(client, "b@example.test")
    path = _link_path(smtp_server, "b@example.test")
    token = path.rsplit("/", 1)[1]
    assert client.get(path[:-2] + ("AA" if not path.endswith("AA") else "BB")).status_code == 404
    assert client.get("/password-reset/not-a-token").status_code == 404
    # A token signed for B cannot be replayed with A's id.
    payload, rest = token.split(".", 1)
    import base64
    import json
    forged = base64.urlsafe_b64encode(json.dumps(a.uuid).encode()).decode().rstrip("=") + "." + rest
    assert client.get(f"/password-reset/{forged}").status_code == 404


def test_password_change_invalidates_an_open_link(client, db, make_user, smtp_server):
    user = make_user("change@example.test")
    _request(client, user.email)
    path = _link_path(smtp_server, user.email)
    login(client, user)
    resp = client.post("/panel/account/password", data={"current_password": "correct horse battery",
                                                          "new_password": NEW, "confirm_password": NEW})
    assert resp.status_code == 302
    client.post("/logout")
    assert client.get(path).status_code == 404


def test_mismatched_or_short_password_is_refused(client, make_user, smtp_server):
    make_user("short@example.test")
    _request(client, "short@example.test")
    path = _link_path(smtp_server, "short@example.test")
    resp = client.post(path, data={"new_password": NEW, "confirm_password": NEW + "x"})
    assert resp.status_code == 400 and b"differ" in resp.data
    resp = client.post(path, data={"new_password": "short", "confirm_password": "short"})
    assert resp.status_code == 400 and b"at least 10 characters" in resp.data
    assert client.get(path).status_code == 200  # still usable after failed attempts


def test_no_smtp_configured_still_answers_the_same(app, client, make_user, smtp_server):
    app.config["HOSTBAY_SMTP_URL"] = None
    make_user("quiet@example.test")
    resp = _request(client, "quiet@example.test")
    assert resp.status_code == 200 and b"If an account uses this address" in resp.data
    assert smtp_server.messages == []
