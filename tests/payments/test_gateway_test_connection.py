"""The staff "Test connection" button of the BTCPay and NOWPayments gateways runs their validate() against the
providers' stand-ins: it passes with the working settings, and says what is wrong (never a secret) otherwise."""

from __future__ import annotations

import html
import re

import pytest

from hostbay.core import payments
from hostbay.core.db import db
from hostbay.testing.pytest_plugin import login


@pytest.fixture
def admin(app, client, make_user, gateways):
    user = make_user(role="admin")
    db.session.commit()
    login(client, user)
    return user


def _flash(client, resp) -> str:
    assert resp.status_code == 303
    page = client.get(resp.headers["Location"]).get_data(as_text=True)
    return " ".join(re.findall(r'class="flash[^"]*"[^>]*>(.*?)<', page, re.S)) or page


def _test(client, name) -> str:
    return _flash(client, client.post(f"/staff/payments/gateways/{name}/test"))


def _reconfigure(name, settings, admin):
    payments.save_gateway_config(name, settings, True, admin)
    db.session.commit()


def test_btcpay_test_connection_page(admin, client, gateways, caplog):
    srv = gateways["btcpay"]
    assert "The connection test passed." in _test(client, "btcpay")
    _reconfigure("btcpay", srv.settings(api_key="revoked-key-42"), admin)
    assert "BTCPay Server refused the API key (it is wrong or was revoked)." in _test(client, "btcpay")
    _reconfigure("btcpay", srv.settings(store_id="GoneStore"), admin)
    assert "BTCPay Server has no store with the ID GoneStore." in _test(client, "btcpay")
    _reconfigure("btcpay", srv.settings(), admin)
    saved = list(srv.permissions)
    try:
        srv.permissions = [f"btcpay.store.canviewinvoices:{srv.store_id}"]
        text = html.unescape(_test(client, "btcpay"))
        assert f"The API key lacks the permission 'Create invoice' on store {srv.store_id}" in text
    finally:
        srv.permissions = saved
    _reconfigure("btcpay", srv.settings(base_url="http://127.0.0.1:9"), admin)
    assert "BTCPay Server at http://127.0.0.1:9 is not reachable" in _test(client, "btcpay")
    for secret in (srv.api_key, srv.webhook_secret, "revoked-key-42"):
        assert secret not in caplog.text


def test_nowpayments_test_connection_page(admin, client, gateways, caplog):
    srv = gateways["nowpayments"]
    assert "The connection test passed." in _test(client, "nowpayments")
    _reconfigure("nowpayments", srv.settings(api_key="old-np-key"), admin)
    assert "NOWPayments refused the API key (it is wrong or was deleted)." in _test(client, "nowpayments")
    _reconfigure("nowpayments", srv.settings(base_url="http://127.0.0.1:9"), admin)
    assert "The NOWPayments API at http://127.0.0.1:9 is not reachable" in _test(client, "nowpayments")
    _reconfigure("nowpayments", srv.settings(), admin)
    srv.fail_next.append(503)
    assert "is not available (GET /v1/status answered HTTP 503)" in _test(client, "nowpayments")
    for secret in (srv.api_key, srv.ipn_secret, "old-np-key"):
        assert secret not in caplog.text
