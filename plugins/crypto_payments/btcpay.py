"""BTCPay Server through its Greenfield API (self-hosted).

- Create: ``POST /api/v1/stores/{storeId}/invoices`` with ``Authorization: token <api key>``; the amount is a
  decimal string, the currency USD, ``checkout.redirectURL`` brings the customer back, ``metadata.orderId`` holds
  hostbay's payment id.
- Re-fetch: ``GET /api/v1/stores/{storeId}/invoices/{invoiceId}`` (status New/Processing/Settled/Expired/Invalid,
  additionalStatus None/PaidLate/PaidPartial/Marked/Invalid/PaidOver) and, when partly or over-paid,
  ``GET .../payment-methods`` for what was actually received (``paymentMethodPaid`` x ``rate``).
- Webhooks are registered per store in BTCPay (URL ``<panel>/payments/webhook/btcpay``) and signed with
  ``BTCPay-Sig: sha256=<hex HMAC-SHA256(webhook secret, raw body)>``.

The API key needs the store permissions "View invoices" and "Create invoice" only. ``validate()`` ("Test
connection") asks ``GET /api/v1/api-keys/current`` (the key is accepted; its ``permissions`` list), then
``GET /api/v1/stores/{storeId}/invoices?take=1`` (the store exists and the key may read its invoices).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from decimal import Decimal, InvalidOperation
from urllib.parse import quote

from hostbay.core.drivers import (Checkout, PaymentGateway, PaymentState, PaymentStatus, Setting, SignatureError,
                                  WebhookEvent)
from hostbay.core.errors import FatalDriverError, TransientDriverError

from . import _http

# webhook type -> status it announces (None: says nothing about the invoice as a whole; re-fetched)
EVENT_STATUS = {
    "InvoiceCreated": PaymentStatus.PENDING,
    "InvoiceReceivedPayment": PaymentStatus.CONFIRMING,
    "InvoiceProcessing": PaymentStatus.CONFIRMING,
    "InvoicePaymentSettled": None,
    "InvoiceSettled": PaymentStatus.SETTLED,
    "InvoiceExpired": PaymentStatus.EXPIRED,
    "InvoiceInvalid": PaymentStatus.INVALID,
}


def map_invoice_status(status: str, additional: str) -> PaymentStatus:
    """Greenfield invoice status (+ additionalStatus) to a gateway-neutral status."""
    if status == "Settled":
        return PaymentStatus.SETTLED
    if status == "Processing":
        return PaymentStatus.CONFIRMING
    if status == "Expired":
        # partly paid, or paid in full after expiry: money arrived but the invoice is not settled
        return PaymentStatus.UNDERPAID if additional in ("PaidPartial", "PaidLate") else PaymentStatus.EXPIRED
    if status == "Invalid":
        return PaymentStatus.INVALID
    if status == "New":
        return PaymentStatus.PENDING
    raise FatalDriverError(f"btcpay: unknown invoice status {status!r}")


# what hostbay calls -> the Greenfield permissions that grant it (a broader permission includes the narrower one)
NEEDED_PERMISSIONS = {
    "View invoices": ("btcpay.store.canviewinvoices", "btcpay.store.canmodifyinvoices",
                      "btcpay.store.canviewstoresettings", "btcpay.store.canmodifystoresettings", "unrestricted"),
    "Create invoice": ("btcpay.store.cancreateinvoice", "btcpay.store.canmodifyinvoices",
                       "btcpay.store.canmodifystoresettings", "unrestricted"),
}


def missing_permissions(granted, store_id: str) -> list[str]:
    """The names of NEEDED_PERMISSIONS that ``granted`` (the key's ``permissions``: ``policy`` for every store or
    ``policy:storeId`` for one) does not give on ``store_id``."""
    held = set()
    for item in granted or []:
        policy, _, scope = str(item).partition(":")
        if not scope or scope == store_id:
            held.add(policy.lower())
    return [name for name, grants in NEEDED_PERMISSIONS.items() if not held.intersection(grants)]


class BTCPayGateway(PaymentGateway):
    name = "btcpay"
    label = "Bitcoin and more (BTCPay Server)"
    settings = [
        Setting("base_url", "BTCPay Server URL", type="url", help="e.g. https://pay.example.com"),
        Setting("store_id", "Store ID"),
        Setting("api_key", "API key", type="secret",
                help="Greenfield API key with 'View invoices' and 'Create invoice' on this store."),
        Setting("webhook_secret", "Webhook secret", type="secret",
                help="The secret of the store webhook pointing to /payments/webhook/btcpay."),
        Setting("expiration_minutes", "Invoice expiry (minutes)", type="int", required=False, default=30),
        Setting("timeout", "Request timeout (seconds)", type="int", required=False, default=10),
    ]
    capabilities = frozenset({"refetch"})

    # -- provider calls --------------------------------------------------------------------------------------
    def _url(self, path: str) -> str:
        return f"{self.config['base_url'].rstrip('/')}/api/v1/stores/{quote(self.config['store_id'], safe='')}{path}"

    def _call(self, method: str, path: str, body: dict | None = None):
        return _http.call("btcpay", method, self._url(path), body=body, timeout=self.config["timeout"],
                          headers={"Authorization": f"token {self.config['api_key']}"})

    def validate(self) -> None:
        """"Test connection": the server answers, the API key is accepted, the store exists and the key holds the
        permissions hostbay uses on it. One message per failure; no secret in it."""
        base = self.config["base_url"].rstrip("/")
        auth = {"Authorization": f"token {self.config['api_key']}"}
        store = self.config["store_id"]
        status, data = _http.probe("BTCPay Server", "GET", f"{base}/api/v1/api-keys/current", headers=auth,
                                   timeout=self.config["timeout"])
        if status in (401, 403):
            raise FatalDriverError("BTCPay Server refused the API key (it is wrong or was revoked).")
        if status == 404:
            raise FatalDriverError(f"{base} does not answer as a BTCPay Server (no Greenfield API at /api/v1).")
        if status != 200 or not isinstance(data, dict):
            raise TransientDriverError(f"BTCPay Server answered HTTP {status} when asked about the API key.")
        status, _ = _http.probe("BTCPay Server", "GET", f"{self._url('/invoices')}?take=1", headers=auth,
                                timeout=self.config["timeout"])
        if status == 404:
            raise FatalDriverError(f"BTCPay Server has no store with the ID {store}.")
        missing = missing_permissions(data.get("permissions"), store)
        if status == 403 and not missing:
            missing = ["View invoices"]
        if missing:
            raise FatalDriverError(f"The API key lacks the permission {' and '.join(repr(m) for m in missing)} "
                                   f"on store {store}; give it 'View invoices' and 'Create invoice'.")
        if status != 200:
            raise TransientDriverError(f"BTCPay Server answered HTTP {status} when asked for the store's invoices.")

    def create_checkout(self, amount: Decimal, reference: str, return_url: str, notify_url: str) -> Checkout:
        body = {
            "amount": format(Decimal(amount).quantize(Decimal("0.01")), "f"),
            "currency": "USD",
            "metadata": {"orderId": reference, "itemDesc": "Wallet top-up"},
            "checkout": {"redirectURL": return_url, "redirectAutomatically": True,
                         "expirationMinutes": self.config["expiration_minutes"]},
        }
        data = self._call("POST", "/invoices", body)
        try:
            return Checkout(str(data["id"]), str(data["checkoutLink"]), PaymentStatus.PENDING)
        except (KeyError, TypeError):
            raise FatalDriverError("btcpay: invoice answer lacks id or checkoutLink") from None

    def fetch(self, provider_ref: str) -> PaymentState:
        inv = self._call("GET", f"/invoices/{quote(str(provider_ref), safe='')}")
        try:
            status, additional = str(inv["status"]), str(inv.get("additionalStatus") or "None")
            currency = str(inv.get("currency") or "USD")
            amount = Decimal(str(inv["amount"]))
        except (KeyError, TypeError, InvalidOperation):
            raise FatalDriverError("btcpay: invoice answer is missing status or amount") from None
        if currency.upper() != "USD":
            raise FatalDriverError(f"btcpay: invoice {provider_ref} is in {currency}, not USD")
        mapped = map_invoice_status(status, additional)
        received = None
        if additional in ("PaidPartial", "PaidOver", "PaidLate"):
            received = self._received(provider_ref)
        elif mapped == PaymentStatus.SETTLED:
            received = amount
        raw = status if additional in ("None", "") else f"{status}/{additional}"
        return PaymentState(str(inv.get("id", provider_ref)), mapped, received, raw)

    def _received(self, provider_ref: str) -> Decimal:
        methods = self._call("GET", f"/invoices/{quote(str(provider_ref), safe='')}/payment-methods")
        total = Decimal(0)
        for m in methods or []:
            try:
                total += Decimal(str(m.get("paymentMethodPaid") or "0")) * Decimal(str(m.get("rate") or "0"))
            except InvalidOperation:
                raise FatalDriverError("btcpay: payment method amounts are not numbers") from None
        return total

    # -- webhooks --------------------------------------------------------------------------------------------
    def signature(self, raw_body: bytes) -> str:
        return "sha256=" + hmac.new(self.config["webhook_secret"].encode(), raw_body, hashlib.sha256).hexdigest()

    def parse_webhook(self, headers, raw_body: bytes) -> WebhookEvent:
        given = {str(k).lower(): v for k, v in headers.items()}.get("btcpay-sig", "")
        if not isinstance(given, str) or not hmac.compare_digest(given.strip().lower().encode(),
                                                                  self.signature(raw_body).encode()):
            raise SignatureError("BTCPay-Sig does not match")
        data = json.loads(raw_body)
        if not isinstance(data, dict):
            raise ValueError("webhook body is not an object")
        if str(data.get("storeId", "")) != self.config["store_id"]:
            raise ValueError("webhook is for another store")
        kind = str(data["type"])
        status = EVENT_STATUS.get(kind)
        if kind == "InvoiceExpired" and data.get("partiallyPaid"):
            status = PaymentStatus.UNDERPAID
        event_id = str(data.get("originalDeliveryId") or data["deliveryId"])
        return WebhookEvent(event_id=f"{event_id}", provider_ref=str(data["invoiceId"]), status=status,
                            raw_type=kind)
