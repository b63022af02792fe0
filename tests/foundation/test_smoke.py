from hostbay.core import ledger
from hostbay.core.accounts import User
from hostbay.testing.pytest_plugin import login


def test_health(client):
    resp = client.get("/healthz")
    assert resp.status_code == 200 and resp.json["status"] == "ok"


def test_register_login_dashboard(client, db):
    resp = client.post("/register", data={"email": "New@Example.test", "password": "long enough pw", "name": "N"})
    assert resp.status_code == 200 and b"We have sent the next step" in resp.data
    user = db.session.scalar(db.select(User).filter_by(email="new@example.test"))
    assert user is not None and user.password_hash.startswith("scrypt:")
    login(client, user, "long enough pw")
    page = client.get("/panel/")
    assert page.status_code == 200 and b"$0.00" in page.data


def test_login_wrong_password(client, make_user):
    user = make_user(balance_cents=1234)
    resp = client.post("/login", data={"email": user.email, "password": "wrong password!"})
    assert resp.status_code == 401
    login(client, user)
    assert b"$12.34" in client.get("/panel/").data
    assert ledger.balance_cents(user.id) == ledger.ledger_sum_cents(user.id) == 1234
