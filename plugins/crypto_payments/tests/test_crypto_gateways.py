"""The two gateways against stand-ins of their providers' APIs (loopback HTTP servers following the docs)."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from hostbay.core.drivers import PaymentStatus, SignatureError
from hostbay.core.errors import FatalDriverError, SettingsError, TransientDriverError
from hostbay.plugins.crypto_payments import BTCPayGateway, NOWPaymentsGateway
from hostbay.plugins.crypto_payments.nowpayments import canonical
from hostbay.plugins.crypto_payments.tests.crypto_standins import (BTCPayStandIn, NOWPaymentsStandIn, js_number,
                                                                   js_stringify)
from hostbay.testing import PaymentGatewayConformance


def closed_port_url() -> str:
    """A loopback URL where nothing listens."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def btcpay_server():
    srv = BTCPayStandIn()
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def np_server():
    srv = NOWPaymentsStandIn()
    yield srv
    srv.close()


class TestBTCPayConformance(PaymentGatewayConformance):
    @pytest.fixture(autouse=True)
    def _server(self, btcpay_server):
        self.srv = btcpay_server

    def make_driver(self):
        return BTCPayGateway(self.srv.settings())

    def make_unreachable_driver(self):
        return BTCPayGateway(self.srv.settings(base_url=closed_port_url()))

    def signed_delivery(self, drv, provider_ref, settled):
        self.srv.set_state(provider_ref, "Settled" if settled else "New")
        return self.srv.webhook(provider_ref, "InvoiceSettled" if settled else "InvoiceCreated")


class TestNOWPaymentsConformance(PaymentGatewayConformance):
    @pytest.fixture(autouse=True)
    def _server(self, np_server):
        self.srv = np_server

    def make_driver(self):
        return NOWPaymentsGateway(self.srv.settings())

    def make_unreachable_driver(self):
        return NOWPaymentsGateway(self.srv.settings(base_url=closed_port_url()))

    def signed_delivery(self, drv, provider_ref, settled):
        pid = self.srv.pay(provider_ref, "finished" if settled else "waiting")
        return self.srv.ipn(pid)


# ---------------------------------------------------------------------------------------------------------------
# BTCPay
# ---------------------------------------------------------------------------------------------------------------

def test_btcpay_create_sends_documented_request(btcpay_server):
    drv = BTCPayGateway(btcpay_server.settings())
    co = drv.create_checkout(Decimal("25"), "pay-uuid-1", "http://127.0.0.1/back", "http://127.0.0.1/hook")
    req = btcpay_server.requests[-1]
    assert req["method"] == "POST" and req["path"] == f"/api/v1/stores/{btcpay_server.store_id}/invoices"
    assert req["headers"]["Authorization"] == f"token {btcpay_server.api_key}"
    body = json.loads(req["body"])
    assert body["amount"] == "25.00" and body["currency"] == "USD"
    assert body["checkout"]["redirectURL"] == "http://127.0.0.1/back"
    assert body["metadata"]["orderId"] == "pay-uuid-1"
    assert co.checkout_url == btcpay_server.invoices[co.provider_ref]["checkoutLink"]


def test_btcpay_fetch_maps_statuses_and_amounts(btcpay_server):
    drv = BTCPayGateway(btcpay_server.settings())
    ref = drv.create_checkout(Decimal("40.00"), "p2", "http://x/r", "http://x/n").provider_ref
    assert drv.fetch(ref).status == PaymentStatus.PENDING
    btcpay_server.set_state(ref, "Processing")
    assert drv.fetch(ref).status == PaymentStatus.CONFIRMING
    btcpay_server.set_state(ref, "Settled")
    st = drv.fetch(ref)
    assert st.status == PaymentStatus.SETTLED and st.amount_received == Decimal("40.00")
    btcpay_server.set_state(ref, "Expired", "PaidPartial", paid_usd=Decimal("10"))
    st = drv.fetch(ref)
    assert st.status == PaymentStatus.UNDERPAID and abs(st.amount_received - Decimal(10)) < Decimal("0.01")
    btcpay_server.set_state(ref, "Settled", "PaidOver", paid_usd=Decimal("50"))
    st = drv.fetch(ref)
    assert st.status == PaymentStatus.SETTLED and st.amount_received > Decimal("49.99")
    btcpay_server.set_state(ref, "Expired")
    assert drv.fetch(ref).status == PaymentStatus.EXPIRED
    btcpay_server.set_state(ref, "Invalid")
    assert drv.fetch(ref).status == PaymentStatus.INVALID


def test_btcpay_provider_errors_are_typed(btcpay_server):
    bad = BTCPayGateway(btcpay_server.settings(api_key="wrong-key"))
    with pytest.raises(FatalDriverError):
        bad.create_checkout(Decimal("5"), "x", "http://x/r", "http://x/n")
    drv = BTCPayGateway(btcpay_server.settings())
    with pytest.raises(FatalDriverError):
        drv.fetch("no-such-invoice")
    btcpay_server.fail_next.append(503)
    with pytest.raises(TransientDriverError):
        drv.create_checkout(Decimal("5"), "x", "http://x/r", "http://x/n")
    down = BTCPayGateway(btcpay_server.settings(base_url="http://127.0.0.1:9"))
    with pytest.raises(TransientDriverError):
        down.fetch("abc")


def test_btcpay_webhook_verification(btcpay_server):
    drv = BTCPayGateway(btcpay_server.settings())
    headers, body = btcpay_server.webhook("inv1", "InvoiceSettled")
    ev = drv.parse_webhook(headers, body)
    assert ev.provider_ref == "inv1" and ev.status == PaymentStatus.SETTLED and ev.raw_type == "InvoiceSettled"
    for h, b in [(headers, body + b"\n"), ({"BTCPay-Sig": "sha256=" + "0" * 64}, body), ({}, body),
                 (btcpay_server.webhook("inv1", "InvoiceSettled", secret="other")[0], body),
                 ({"BTCPay-Sig": headers["BTCPay-Sig"].replace("sha256=", "sha1=")}, body)]:
        with pytest.raises(SignatureError):
            drv.parse_webhook(h, b)
    # a redelivery names the original delivery: same event id
    _h2, b2 = btcpay_server.webhook("inv1", "InvoiceSettled", redelivery_of=json.loads(body)["deliveryId"])
    assert drv.parse_webhook(_h2, b2).event_id == ev.event_id
    _h3, b3 = btcpay_server.webhook("inv1", "InvoiceExpired", partiallyPaid=True)
    assert drv.parse_webhook(_h3, b3).status == PaymentStatus.UNDERPAID


def test_btcpay_settings_are_declarative():
    with pytest.raises(SettingsError) as err:
        BTCPayGateway({"base_url": "not a url"})
    assert set(err.value.errors) == {"base_url", "store_id", "api_key", "webhook_secret"}
    assert {s.key for s in BTCPayGateway.settings if s.type == "secret"} == {"api_key", "webhook_secret"}


# ---------------------------------------------------------------------------------------------------------------
# NOWPayments
# ---------------------------------------------------------------------------------------------------------------

def test_js_number_formatting_matches_javascript():
    assert js_number(1.0) == "1" and js_number(1e-7) == "1e-7" and js_number(0.00001) == "0.00001"
    assert js_number(25.5) == "25.5" and js_number(1.5e-8) == "1.5e-8" and js_number(1e21) == "1e+21"


def test_nowpayments_signature_over_raw_tokens():
    """Python's own json round trip would write 1e-07 and 1.0 and fail; the gateway keeps the body's tokens."""
    secret = "np-ipn-secret"
    drv = NOWPaymentsGateway({"api_key": "k", "ipn_secret": secret})
    payload = {"payment_status": "finished", "payment_id": 1, "invoice_id": 2, "pay_amount": 1e-07,
               "actually_paid": 1e-07, "price_amount": 1.0, "nested": {"b": 1, "a": [1.5, {"z": 1, "y": "é"}]}}
    body = js_stringify(payload).encode()
    assert b"1e-7" in body
    import hashlib
    import hmac

    sig = hmac.new(secret.encode(), js_stringify(payload, sort=True).encode(), hashlib.sha512).hexdigest()
    ev = drv.parse_webhook({"x-nowpayments-sig": sig}, body)
    assert ev.provider_ref == "2" and ev.fetch_ref == "1" and ev.status == PaymentStatus.SETTLED
    naive = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    assert naive != canonical(body)  # the trap the notes warn about
    with pytest.raises(SignatureError):
        drv.parse_webhook({"x-nowpayments-sig": sig}, body.replace(b"1e-7", b"2e-7"))
    with pytest.raises(SignatureError):
        drv.parse_webhook({"x-nowpayments-sig": sig.upper()[:-1] + "0"}, body)
    with pytest.raises(SignatureError):
        drv.parse_webhook({}, body)
    with pytest.raises(SignatureError):
        drv.parse_webhook({"x-nowpayments-sig": sig}, b"not json")


def test_nowpayments_create_and_fetch(np_server):
    drv = NOWPaymentsGateway(np_server.settings())
    co = drv.create_checkout(Decimal("12.50"), "pay-2", "http://x/back", "http://x/ipn")
    req = np_server.requests[-1]
    assert req["path"] == "/v1/invoice" and req["headers"]["X-Api-Key"] == np_server.api_key
    body = json.loads(req["body"], parse_float=Decimal)
    assert body["price_amount"] == Decimal("12.50") and body["price_currency"] == "usd"
    assert body["order_id"] == "pay-2" and body["ipn_callback_url"] == "http://x/ipn"
    assert co.checkout_url.endswith(f"iid={co.provider_ref}")
    pid = np_server.pay(co.provider_ref, "partially_paid", Decimal("0.5"))
    st = drv.fetch(pid)
    assert st.provider_ref == co.provider_ref and st.status == PaymentStatus.UNDERPAID
    assert abs(st.amount_received - Decimal("6.25")) < Decimal("0.01")
    np_server.pay(co.provider_ref, "finished")
    st = drv.fetch(pid)
    assert st.status == PaymentStatus.SETTLED and abs(st.amount_received - Decimal("12.50")) < Decimal("0.01")
    with pytest.raises(FatalDriverError):
        NOWPaymentsGateway(np_server.settings(api_key="nope")).fetch(pid)
    np_server.fail_next.append(502)
    with pytest.raises(TransientDriverError):
        drv.fetch(pid)


def test_plugin_is_registered(registry):
    info = {p.name: p for p in registry.plugins}["crypto_payments"]
    assert info.state == "loaded", info.error
    assert registry.drivers["payment"]["btcpay"] is BTCPayGateway
    assert registry.drivers["payment"]["nowpayments"] is NOWPaymentsGateway


def test_plugin_loads_without_requests():
    """``requests`` is needed to talk to a provider, not to load the plugin (hostbay stays up without it)."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['requests'] = None\n"
            "from decimal import Decimal\n"
            "from hostbay.core.errors import FatalDriverError\n"
            "import hostbay.plugins.crypto_payments as m\n"
            "drv = m.BTCPayGateway({'base_url': 'http://127.0.0.1:9', 'store_id': 's', 'api_key': 'k',"
            " 'webhook_secret': 'w'})\n"
            "try:\n"
            "    drv.create_checkout(Decimal('5'), 'r', 'http://x/r', 'http://x/n')\n"
            "except FatalDriverError as exc:\n"
            "    print('fatal:', exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "requests" in out.stdout and "fatal:" in out.stdout


# ---------------------------------------------------------------------------------------------------------------
# "Test connection" (validate): one message per failure, no secret in it
# ---------------------------------------------------------------------------------------------------------------

def _refusal(drv) -> str:
    with pytest.raises((FatalDriverError, TransientDriverError)) as err:
        drv.validate()
    return str(err.value)


def _no_secret(text, *secrets):
    for secret in secrets:
        assert secret not in text


def test_btcpay_validate_passes_and_asks_the_documented_endpoints(btcpay_server):
    before = len(btcpay_server.requests)
    BTCPayGateway(btcpay_server.settings()).validate()
    asked = [(r["method"], r["path"], r["headers"].get("Authorization")) for r in btcpay_server.requests[before:]]
    auth = f"token {btcpay_server.api_key}"
    assert asked == [("GET", "/api/v1/api-keys/current", auth),
                     ("GET", f"/api/v1/stores/{btcpay_server.store_id}/invoices", auth)]


def test_btcpay_validate_says_what_is_wrong(btcpay_server, caplog):
    key, secret, store = btcpay_server.api_key, btcpay_server.webhook_secret, btcpay_server.store_id
    unreachable = _refusal(BTCPayGateway(btcpay_server.settings(base_url=closed_port_url())))
    assert "not reachable" in unreachable
    bad_key = _refusal(BTCPayGateway(btcpay_server.settings(api_key="wrong-key-123")))
    assert bad_key == "BTCPay Server refused the API key (it is wrong or was revoked)."
    no_store = _refusal(BTCPayGateway(btcpay_server.settings(store_id="NoSuchStore")))
    assert no_store == "BTCPay Server has no store with the ID NoSuchStore."
    saved = list(btcpay_server.permissions)
    try:
        btcpay_server.permissions = [f"btcpay.store.canviewinvoices:{store}"]
        no_create = _refusal(BTCPayGateway(btcpay_server.settings()))
        assert "lacks the permission 'Create invoice' on store" in no_create
        btcpay_server.permissions = [f"btcpay.store.cancreateinvoice:{store}"]
        no_view = _refusal(BTCPayGateway(btcpay_server.settings()))
        assert "lacks the permission 'View invoices' on store" in no_view
        btcpay_server.permissions = ["btcpay.store.canviewinvoices:OtherStore", "btcpay.store.cancreateinvoice:OtherStore"]
        other = _refusal(BTCPayGateway(btcpay_server.settings()))
        assert "lacks the permission 'View invoices' and 'Create invoice'" in other
        btcpay_server.permissions = [f"btcpay.store.canmodifystoresettings:{store}"]  # the broader one includes both
        BTCPayGateway(btcpay_server.settings()).validate()
    finally:
        btcpay_server.permissions = saved
    for text in (unreachable, bad_key, no_store, no_create, no_view, other, caplog.text):
        _no_secret(text, key, secret, "wrong-key-123")


def test_nowpayments_validate_passes_and_asks_the_documented_endpoints(np_server):
    before = len(np_server.requests)
    NOWPaymentsGateway(np_server.settings()).validate()
    asked = [(r["method"], r["path"], r["headers"].get("X-Api-Key")) for r in np_server.requests[before:]]
    assert asked == [("GET", "/v1/status", None), ("GET", "/v1/merchant/coins", np_server.api_key)]


def test_nowpayments_validate_says_what_is_wrong(np_server, caplog):
    unreachable = _refusal(NOWPaymentsGateway(np_server.settings(base_url=closed_port_url())))
    assert "not reachable" in unreachable
    np_server.fail_next.append(503)
    down = _refusal(NOWPaymentsGateway(np_server.settings()))
    assert "is not available (GET /v1/status answered HTTP 503)" in down
    bad_key = _refusal(NOWPaymentsGateway(np_server.settings(api_key="wrong-np-key")))
    assert bad_key == "NOWPayments refused the API key (it is wrong or was deleted)."
    drv = NOWPaymentsGateway(np_server.settings())
    drv.config["ipn_secret"] = " "  # a stored configuration from before the field was required
    no_secret = _refusal(drv)
    assert no_secret.startswith("The IPN secret key is missing")
    for text in (unreachable, down, bad_key, no_secret, caplog.text):
        _no_secret(text, np_server.api_key, np_server.ipn_secret, "wrong-np-key")
