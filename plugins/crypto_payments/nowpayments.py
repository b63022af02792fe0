"""NOWPayments (hosted processor).

- Create: ``POST /v1/invoice`` with header ``x-api-key``; body ``price_amount`` (a JSON number), ``price_currency``
  "usd", ``order_id`` (hostbay's payment id), ``ipn_callback_url``, ``success_url``, ``cancel_url``; the answer's
  ``id`` is the invoice id and ``invoice_url`` the hosted checkout.
- IPN: a POST of the payment object (``payment_id``, ``invoice_id``, ``payment_status``, ``price_amount``,
  ``pay_amount``, ``actually_paid``, ...) with ``x-nowpayments-sig`` = hex HMAC-SHA512(IPN secret, the body with
  keys sorted recursively, serialised compactly as JavaScript's JSON.stringify does). The check re-serialises the
  raw body's own tokens (numbers are never re-formatted through a float: ``1e-7`` stays ``1e-7``).
- Re-fetch: ``GET /v1/payment/{payment_id}`` with ``x-api-key``.
- Test connection (``validate()``): ``GET /v1/status`` (no key: the API is up, ``{"message": "OK"}``), then
  ``GET /v1/merchant/coins`` with ``x-api-key`` (the key is accepted), and the IPN secret is set.

Statuses: waiting, confirming, confirmed, sending, partially_paid, finished, failed, refunded, expired. Only
``finished`` (funds arrived in the merchant's wallet) settles.
"""

from __future__ import annotations

import hashlib
import hmac
from decimal import Decimal, InvalidOperation
from urllib.parse import quote

from hostbay.core.drivers import (Checkout, PaymentGateway, PaymentState, PaymentStatus, Setting, SignatureError,
                                  WebhookEvent)
from hostbay.core.errors import FatalDriverError, TransientDriverError

from . import _http

STATUS = {
    "waiting": PaymentStatus.PENDING,
    "confirming": PaymentStatus.CONFIRMING,
    "confirmed": PaymentStatus.CONFIRMING,
    "sending": PaymentStatus.CONFIRMING,
    "partially_paid": PaymentStatus.UNDERPAID,
    "finished": PaymentStatus.SETTLED,
    "failed": PaymentStatus.INVALID,
    "refunded": PaymentStatus.INVALID,
    "expired": PaymentStatus.EXPIRED,
}


def canonical(raw_body: bytes) -> bytes:
    """The bytes NOWPayments signs, rebuilt from the raw body: keys sorted recursively, compact, original tokens."""
    return _http.dumps(_http.loads_raw(raw_body), sort_keys=True).encode()


def _dec(value) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def received_usd(payment: dict) -> Decimal | None:
    """USD actually received: price x actually_paid / pay_amount (both in the paid currency)."""
    price, paid, due = _dec(payment.get("price_amount")), _dec(payment.get("actually_paid")), \
        _dec(payment.get("pay_amount"))
    if price is None or paid is None or not due:
        return None
    if str(payment.get("price_currency", "usd")).lower() != "usd":
        raise FatalDriverError("nowpayments: payment is not priced in USD")
    return price * paid / due


class NOWPaymentsGateway(PaymentGateway):
    name = "nowpayments"
    label = "Crypto (NOWPayments)"
    settings = [
        Setting("base_url", "API URL", type="url", required=False, default="https://api.nowpayments.io",
                help="https://api-sandbox.nowpayments.io for the sandbox."),
        Setting("api_key", "API key", type="secret"),
        Setting("ipn_secret", "IPN secret key", type="secret"),
        Setting("timeout", "Request timeout (seconds)", type="int", required=False, default=10),
    ]
    capabilities = frozenset({"refetch"})

    def _call(self, method: str, path: str, body: dict | None = None):
        return _http.call("nowpayments", method, self.config["base_url"].rstrip("/") + path, body=body,
                          timeout=self.config["timeout"], headers={"x-api-key": self.config["api_key"]})

    def validate(self) -> None:
        """"Test connection": the API answers, the API key is accepted, an IPN secret is set. One message per
        failure; no secret in it."""
        base = self.config["base_url"].rstrip("/")
        timeout = self.config["timeout"]
        status, data = _http.probe("The NOWPayments API", "GET", f"{base}/v1/status", headers={}, timeout=timeout)
        if status != 200 or not isinstance(data, dict) or str(data.get("message", "")).upper() != "OK":
            raise TransientDriverError(f"The NOWPayments API at {base} is not available (GET /v1/status answered "
                                       f"HTTP {status}).")
        status, data = _http.probe("The NOWPayments API", "GET", f"{base}/v1/merchant/coins",
                                   headers={"x-api-key": self.config["api_key"]}, timeout=timeout)
        if status in (401, 403):
            raise FatalDriverError("NOWPayments refused the API key (it is wrong or was deleted).")
        if status != 200:
            raise TransientDriverError(f"NOWPayments answered HTTP {status} when the API key was checked.")
        if not (self.config.get("ipn_secret") or "").strip():
            raise FatalDriverError("The IPN secret key is missing: copy it from the NOWPayments dashboard "
                                   "(Store settings, IPN).")

    def create_checkout(self, amount: Decimal, reference: str, return_url: str, notify_url: str) -> Checkout:
        body = {
            "price_amount": Decimal(amount).quantize(Decimal("0.01")),
            "price_currency": "usd",
            "order_id": reference,
            "order_description": "Wallet top-up",
            "ipn_callback_url": notify_url,
            "success_url": return_url,
            "cancel_url": return_url,
        }
        data = self._call("POST", "/v1/invoice", body)
        try:
            return Checkout(str(data["id"]), str(data["invoice_url"]), PaymentStatus.PENDING)
        except (KeyError, TypeError):
            raise FatalDriverError("nowpayments: invoice answer lacks id or invoice_url") from None

    def fetch(self, provider_ref: str) -> PaymentState:
        """``provider_ref`` is a payment id (hostbay passes the one the IPN named)."""
        data = self._call("GET", f"/v1/payment/{quote(str(provider_ref), safe='')}")
        return self._state(data)

    def _state(self, data: dict) -> PaymentState:
        raw = str(data.get("payment_status", ""))
        if raw not in STATUS:
            raise FatalDriverError(f"nowpayments: unknown payment status {raw!r}")
        invoice = data.get("invoice_id")
        return PaymentState(str(invoice) if invoice not in (None, "") else "", STATUS[raw], received_usd(data), raw)

    # -- IPN -------------------------------------------------------------------------------------------------
    def signature(self, raw_body: bytes) -> str:
        return hmac.new(self.config["ipn_secret"].encode(), canonical(raw_body), hashlib.sha512).hexdigest()

    def parse_webhook(self, headers, raw_body: bytes) -> WebhookEvent:
        given = {str(k).lower(): v for k, v in headers.items()}.get("x-nowpayments-sig", "")
        if not isinstance(given, str) or not given:
            raise SignatureError("x-nowpayments-sig missing")
        try:
            expected = self.signature(raw_body)
        except (ValueError, TypeError):
            raise SignatureError("body is not JSON; cannot be verified") from None
        if not hmac.compare_digest(given.strip().lower().encode(), expected.encode()):
            raise SignatureError("x-nowpayments-sig does not match")
        data = _http.loads_raw(raw_body)
        if not isinstance(data, dict):
            raise ValueError("IPN body is not an object")
        state = self._state(data)
        payment_id = str(data["payment_id"])
        event_id = f"{payment_id}:{state.raw_status}:{data.get('actually_paid')}:{data.get('updated_at', '')}"
        return WebhookEvent(event_id=event_id, provider_ref=state.provider_ref, status=state.status,
                            amount_received=state.amount_received, raw_type=state.raw_status,
                            fetch_ref=payment_id)
