"""SSH keys, API tokens and the profile page."""

from hostbay.core import credentials
from hostbay.core.accounts import SSHKey, User
from hostbay.core.activity import ActivityEntry
from hostbay.testing.pytest_plugin import login

PW = "correct horse battery"


def _events(db, user, event):
    return db.session.scalars(db.select(ActivityEntry.message).filter_by(user_id=user.id, event=event)
                              .order_by(ActivityEntry.id)).all()


def test_ssh_keys_add_validate_delete(client, db, make_user, ssh_key_line):
    user = make_user()
    login(client, user)
    assert client.get("/panel/account/ssh-keys").status_code == 200
    line = ssh_key_line()
    resp = client.post("/panel/account/ssh-keys", data={"name": "laptop", "public_key": line})
    assert resp.status_code == 302
    key = db.session.scalar(db.select(SSHKey).filter_by(user_id=user.id))
    assert key.name == "laptop" and key.fingerprint.startswith("SHA256:")
    page = client.get("/panel/account/ssh-keys").data.decode()
    assert "laptop" in page and key.fingerprint in page

    # Validation: garbage, damaged data, duplicates, missing name.
    for data, words in ((({"name": "x", "public_key": "hello world"}), "not an OpenSSH public key"),
                        ({"name": "x", "public_key": "ssh-ed25519 AAAA!!!"}, "damaged"),
                        ({"name": "again", "public_key": line}, "already"),
                        ({"name": "", "public_key": ssh_key_line()}, "name")):
        resp = client.post("/panel/account/ssh-keys", data=data)
        assert resp.status_code == 400 and words in resp.data.decode(), data
    assert len(db.session.scalars(db.select(SSHKey).filter_by(user_id=user.id)).all()) == 1

    resp = client.post(f"/panel/account/ssh-keys/{key.uuid}/delete")
    assert resp.status_code == 302
    assert db.session.scalar(db.select(SSHKey).filter_by(user_id=user.id)) is None
    assert _events(db, user, "ssh_key") == [f"SSH key “laptop” added ({key.fingerprint}).",
                                            "SSH key “laptop” deleted."]


def test_api_token_shown_once_hashed_and_revocable(client, clock, db, make_user):
    user = make_user()
    login(client, user)
    resp = client.post("/panel/account/api-tokens", data={"name": "deploy script"})
    assert resp.status_code == 200
    import re
    raw = re.search(rb'id="new-token" class="secret" readonly size="50" value="(hb_[A-Za-z0-9_-]+)"',
                    resp.data).group(1).decode()
    token = db.session.scalar(db.select(credentials.ApiToken).filter_by(user_id=user.id))
    assert token.name == "deploy script" and raw not in (token.token_hash, token.hint)
    assert raw not in client.get("/panel/account/api-tokens").data.decode()  # shown once

    clock.advance(hours=1)
    assert credentials.user_for_api_token(raw).id == user.id
    db.session.commit()
    db.session.refresh(token)
    assert token.last_used_at == clock.now()
    assert credentials.user_for_api_token(raw + "x") is None
    assert credentials.user_for_api_token("") is None

    assert client.post(f"/panel/account/api-tokens/{token.uuid}/revoke").status_code == 302
    db.session.expire_all()
    assert credentials.user_for_api_token(raw) is None
    assert "Revoked" in client.get("/panel/account/api-tokens").data.decode()
    assert _events(db, user, "account")[-2:] == ["API token “deploy script” created.",
                                                 "API token “deploy script” revoked."]
    assert client.post("/panel/account/api-tokens", data={"name": ""}).status_code == 400


def test_profile_and_password_change(client, db, make_user, smtp_server):
    user = make_user("me@example.test")
    other = make_user("taken@example.test")
    login(client, user)
    assert client.get("/panel/account/").status_code == 200
    assert client.post("/panel/account/profile", data={"name": "Ada  Lovelace", "email": user.email}).status_code == 302
    # Changing the address needs the password, and a free address.
    assert client.post("/panel/account/profile", data={"name": "Ada", "email": "new@example.test"}).status_code == 400
    assert client.post("/panel/account/profile", data={"name": "Ada", "email": other.email,
                                                       "password": PW}).status_code == 400
    assert client.post("/panel/account/profile", data={"name": "Ada", "email": "New@example.test",
                                                       "password": PW}).status_code == 302
    db.session.expire_all()
    fresh = db.session.get(User, user.id)
    assert (fresh.name, fresh.email) == ("Ada", "new@example.test")

    bad = client.post("/panel/account/password", data={"current_password": "nope", "new_password": "x" * 12,
                                                        "confirm_password": "x" * 12})
    assert bad.status_code == 400
    ok = client.post("/panel/account/password", data={"current_password": PW, "new_password": "y" * 12,
                                                       "confirm_password": "y" * 12})
    assert ok.status_code == 302
    client.post("/logout")
    assert client.post("/login", data={"email": "new@example.test", "password": PW}).status_code == 401
    assert client.post("/login", data={"email": "new@example.test", "password": "y" * 12}).status_code == 302
    assert "Password changed." in _events(db, user, "account")
    # The owner is told by e-mail: the old address about the address change, the new one about the password.
    [moved] = smtp_server.to("me@example.test")
    assert "changed to new@example.test" in smtp_server.body(moved)
    [pw] = smtp_server.to("new@example.test")
    assert "password of your hostbay account was changed" in smtp_server.body(pw)
