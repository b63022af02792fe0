"""With CSRF protection on (as in production): the provider webhook endpoint is exempt, every form is not."""

from __future__ import annotations

import re

import pytest

from hostbay.core import ledger
from hostbay.core.payments import Payment


@pytest.fixture
def app_config():
    return {"WTF_CSRF_ENABLED": True}


def _login(client, user):
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    resp = client.post("/login", data={"email": user.email, "password": "correct horse battery",
                                       "csrf_token": token})
    assert resp.status_code in (302, 303)


def _token(client, url):
    return re.search(r'name="csrf_token" value="([^"]+)"', client.get(url).get_data(as_text=True)).group(1)


def test_forms_need_token_webhook_does_not(client, gateways, make_user, db):
    api = gateways["btcpay"]
    user = make_user()
    _login(client, user)
    assert client.post("/panel/topup", data={"amount": "25", "gateway": "btcpay"}).status_code == 400
    assert db.session.scalar(db.select(db.func.count()).select_from(Payment)) == 0
    token = _token(client, "/panel/topup")
    resp = client.post("/panel/topup", data={"amount": "25", "gateway": "btcpay", "csrf_token": token})
    assert resp.status_code == 303
    p = db.session.scalar(db.select(Payment))
    api.set_state(p.provider_ref, "Settled")
    headers, body = api.webhook(p.provider_ref, "InvoiceSettled")
    assert client.post("/payments/webhook/btcpay", data=body, headers=headers).status_code == 200
    assert ledger.balance_cents(user.id) == 2500
    client.post("/logout", data={"csrf_token": _token(client, "/panel/")})
    _login(client, make_user(role="admin"))
    assert client.post(f"/staff/payments/{p.uuid}/reconcile").status_code == 400
    assert client.post("/staff/payments/gateways/btcpay", data={"enabled": "1"}).status_code == 400

