"""Stand-in provider APIs on loopback for tests and benchmarks: BTCPay Server Greenfield and NOWPayments.

Each is a small threaded werkzeug server that follows the provider's documented request and response shapes: it
checks the auth header and the body it receives (answering 401/403/400 as the provider does), keeps invoices in
memory, and lets a test move an invoice along (pay it, settle it, expire it) and build the webhook the provider
would send, signed per its documentation. The signing code here is written from the providers' docs, separately
from the gateways' verification code.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import threading
import time
import uuid
from decimal import Decimal

from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response


class _Server:
    def __init__(self):
        self.requests: list[dict] = []
        self.fail_next: list[int] = []  # HTTP statuses to answer with before behaving again
        self.lock = threading.Lock()
        self._srv = make_server("127.0.0.1", 0, self._wsgi, threaded=True)
        self.url = f"http://127.0.0.1:{self._srv.server_port}"
        self._thread = threading.Thread(target=self._srv.serve_forever, daemon=True)
        self._thread.start()

    def close(self):
        self._srv.shutdown()
        self._srv.server_close()

    def _wsgi(self, environ, start_response):
        req = Request(environ)
        body = req.get_data()
        with self.lock:
            self.requests.append({"method": req.method, "path": req.path, "headers": dict(req.headers),
                                  "body": body})
            failing = self.fail_next.pop(0) if self.fail_next else None
        if failing:
            resp = Response(json.dumps({"message": "stand-in failure"}), status=failing,
                            content_type="application/json")
        else:
            status, payload = self.route(req, body)
            resp = Response(payload if isinstance(payload, (bytes, str)) else json.dumps(payload), status=status,
                            content_type="application/json")
        return resp(environ, start_response)

    def route(self, req, body):  # pragma: no cover - overridden
        raise NotImplementedError


# ==============================================================================================================
# BTCPay Server Greenfield
# ==============================================================================================================

class BTCPayStandIn(_Server):
    INVOICE_STATUSES = ("New", "Processing", "Expired", "Invalid", "Settled")
    ADDITIONAL = ("None", "PaidLate", "PaidPartial", "Marked", "Invalid", "PaidOver")

    def __init__(self, store_id="7Qk3StoreId", api_key="greenfield-api-key-0123456789",
                 webhook_secret="btcpay-webhook-secret", rate=Decimal("64392.23")):
        self.store_id, self.api_key, self.webhook_secret, self.rate = store_id, api_key, webhook_secret, rate
        # the key's permissions as Greenfield lists them (``policy:storeId``); a test may change them
        self.permissions = [f"btcpay.store.canviewinvoices:{store_id}", f"btcpay.store.cancreateinvoice:{store_id}"]
        self.invoices: dict[str, dict] = {}
        self.paid_btc: dict[str, Decimal] = {}
        self.webhook_id = "Whk" + uuid.uuid4().hex[:16]
        super().__init__()

    def settings(self, **overrides) -> dict:
        values = {"base_url": self.url, "store_id": self.store_id, "api_key": self.api_key,
                  "webhook_secret": self.webhook_secret, "timeout": 5}
        values.update(overrides)
        return values

    @staticmethod
    def _problem(status, code, message):
        return status, {"code": code, "message": message}

    # Greenfield's policy tree (a broader store permission contains the narrower ones)
    CONTAINS = {"btcpay.store.canmodifystoresettings": {"btcpay.store.canviewstoresettings",
                                                        "btcpay.store.canmodifyinvoices",
                                                        "btcpay.store.canviewinvoices",
                                                        "btcpay.store.cancreateinvoice"},
                "btcpay.store.canviewstoresettings": {"btcpay.store.canviewinvoices"},
                "btcpay.store.canmodifyinvoices": {"btcpay.store.canviewinvoices", "btcpay.store.cancreateinvoice"}}

    def _holds(self, policy: str, store: str) -> bool:
        for item in self.permissions:
            granted, _, scope = item.partition(":")
            if (granted in (policy, "unrestricted") or policy in self.CONTAINS.get(granted, ())) \
                    and scope in ("", store):
                return True
        return False

    def _missing(self, policy: str):
        return self._problem(403, "missing-permission",
                             f"Insufficient API Permissions. Please use an API key with permission: {policy}")

    def route(self, req, body):
        parts = req.path.strip("/").split("/")
        if parts == ["api", "v1", "api-keys", "current"] and req.method == "GET":
            if req.headers.get("Authorization") != f"token {self.api_key}":
                return self._problem(401, "unauthenticated", "Authentication is required for accessing this endpoint")
            return 200, {"apiKey": self.api_key, "label": "hostbay", "permissions": list(self.permissions)}
        if parts[:3] != ["api", "v1", "stores"] or len(parts) < 5 or parts[4] != "invoices":
            return 404, {"code": "not-found", "message": "not found"}
        if req.headers.get("Authorization") != f"token {self.api_key}":
            return self._problem(401, "unauthenticated", "Authentication is required for accessing this endpoint")
        if parts[3] != self.store_id:
            return self._problem(404, "store-not-found", "The store was not found")
        if len(parts) == 5 and req.method == "GET":  # list invoices (``take`` limits the page)
            if not self._holds("btcpay.store.canviewinvoices", parts[3]):
                return self._missing("btcpay.store.canviewinvoices")
            take = int(req.args.get("take", "50") or 50)
            return 200, list(self.invoices.values())[:take]
        if len(parts) == 5 and req.method == "POST":
            if not self._holds("btcpay.store.cancreateinvoice", parts[3]):
                return self._missing("btcpay.store.cancreateinvoice")
            return self._create(req, body)
        if len(parts) >= 6 and req.method == "GET":
            inv = self.invoices.get(parts[5])
            if inv is None:
                return self._problem(404, "invoice-not-found", "The invoice was not found")
            if len(parts) == 6:
                return 200, inv
            if len(parts) == 7 and parts[6] == "payment-methods":
                return 200, self._payment_methods(inv)
        return 405, {"code": "method-not-allowed", "message": "not allowed"}

    def _create(self, req, body):
        if not (req.content_type or "").startswith("application/json"):
            return 415, {"code": "unsupported-media-type", "message": "expected application/json"}
        try:
            data = json.loads(body)
        except ValueError:
            return 400, [{"path": "", "message": "Invalid JSON"}]
        errors = []
        if not isinstance(data, dict):
            return 400, [{"path": "", "message": "Expected an object"}]
        extra = set(data) - {"amount", "currency", "metadata", "checkout", "receipt", "additionalSearchTerms"}
        if extra:
            errors.append({"path": sorted(extra)[0], "message": "Unknown property"})
        amount = data.get("amount")
        if not isinstance(amount, str):
            errors.append({"path": "amount", "message": "amount must be a decimal string"})
        else:
            try:
                if Decimal(amount) <= 0:
                    errors.append({"path": "amount", "message": "amount should be more than 0"})
            except Exception:  # noqa: BLE001
                errors.append({"path": "amount", "message": "invalid amount"})
        if data.get("currency") != "USD":
            errors.append({"path": "currency", "message": "currency must be USD for this store"})
        checkout = data.get("checkout") or {}
        if not isinstance(checkout, dict) or not isinstance(checkout.get("redirectURL", ""), str):
            errors.append({"path": "checkout.redirectURL", "message": "must be a string"})
        if errors:
            return 400, errors
        inv_id = uuid.uuid4().hex[:22]
        now = int(time.time())
        inv = {
            "id": inv_id, "storeId": self.store_id, "amount": amount, "currency": "USD", "type": "Standard",
            "checkoutLink": f"{self.url}/i/{inv_id}", "createdTime": now,
            "expirationTime": now + 60 * int(checkout.get("expirationMinutes") or 15),
            "monitoringExpiration": now + 86400, "status": "New", "additionalStatus": "None",
            "availableStatusesForManualMarking": ["Settled", "Invalid"], "archived": False,
            "metadata": data.get("metadata") or {}, "checkout": checkout,
        }
        with self.lock:
            self.invoices[inv_id] = inv
            self.paid_btc[inv_id] = Decimal(0)
        return 200, inv

    def _payment_methods(self, inv):
        amount_btc = (Decimal(inv["amount"]) / self.rate).quantize(Decimal("0.00000001"))
        paid = self.paid_btc.get(inv["id"], Decimal(0))
        return [{
            "paymentMethodId": "BTC-CHAIN", "currency": "BTC", "destination": "bc1qstandin",
            "paymentLink": f"bitcoin:bc1qstandin?amount={amount_btc}", "rate": str(self.rate),
            "paymentMethodPaid": str(paid), "totalPaid": str(paid), "due": str(amount_btc - paid),
            "amount": str(amount_btc), "paymentMethodFee": "0", "activated": True,
            "payments": [] if not paid else [{"id": "tx1-0", "receivedDate": int(time.time()), "value": str(paid),
                                              "fee": "0", "status": "Settled", "destination": "bc1qstandin"}],
            "additionalData": {},
        }]

    # -- test controls ----------------------------------------------------------------------------------------
    def set_state(self, invoice_id: str, status: str, additional: str = "None", paid_usd: Decimal | None = None):
        assert status in self.INVOICE_STATUSES and additional in self.ADDITIONAL
        with self.lock:
            inv = self.invoices[invoice_id]
            inv["status"], inv["additionalStatus"] = status, additional
            if paid_usd is not None:
                self.paid_btc[invoice_id] = (Decimal(paid_usd) / self.rate).quantize(Decimal("0.00000001"))

    _delivery_counter = itertools.count(1)

    def webhook(self, invoice_id: str, event_type: str, *, delivery_id: str | None = None,
                redelivery_of: str | None = None, secret: str | None = None, **fields) -> tuple[dict, bytes]:
        """(headers, raw body) of the delivery BTCPay sends for ``event_type``."""
        delivery_id = delivery_id or f"Dlv{next(self._delivery_counter):06d}{uuid.uuid4().hex[:8]}"
        payload = {
            "deliveryId": delivery_id, "webhookId": self.webhook_id,
            "originalDeliveryId": redelivery_of or delivery_id, "isRedelivery": bool(redelivery_of),
            "type": event_type, "timestamp": int(time.time()), "storeId": self.store_id,
            "invoiceId": invoice_id,
            "metadata": (self.invoices.get(invoice_id) or {}).get("metadata", {}),
        }
        defaults = {"InvoiceSettled": {"manuallyMarked": False, "overPaid": False},
                    "InvoiceInvalid": {"manuallyMarked": False},
                    "InvoiceExpired": {"partiallyPaid": False},
                    "InvoiceProcessing": {"overPaid": False},
                    "InvoiceReceivedPayment": {"afterExpiration": False, "paymentMethodId": "BTC-CHAIN",
                                               "payment": {"id": "tx1-0", "value": "0.0004", "status": "Processing",
                                                           "destination": "bc1qstandin"}},
                    "InvoicePaymentSettled": {"afterExpiration": False, "paymentMethodId": "BTC-CHAIN"}}
        payload.update(defaults.get(event_type, {}))
        payload.update(fields)
        body = json.dumps(payload, indent=2).encode()  # BTCPay pretty-prints; the signature is over these bytes
        sig = hmac.new((secret or self.webhook_secret).encode(), body, hashlib.sha256).hexdigest()
        return {"BTCPay-Sig": f"sha256={sig}", "Content-Type": "application/json"}, body


# ==============================================================================================================
# NOWPayments
# ==============================================================================================================

def js_number(value) -> str:
    """A number as JavaScript's Number#toString writes it (1 not 1.0, 1e-7 not 1e-07, 0.00001 not 1e-05)."""
    if isinstance(value, int):
        return str(value)
    d = Decimal(repr(float(value))) if not isinstance(value, Decimal) else value
    if d == d.to_integral_value() and abs(d) < Decimal("1e21"):
        return str(int(d))
    if Decimal("1e-6") <= abs(d) < Decimal("1e21"):
        return format(d.normalize(), "f")
    sign, digits, exp = d.normalize().as_tuple()
    mant = "".join(map(str, digits))
    e = exp + len(mant) - 1
    text = mant[0] + ("." + mant[1:] if len(mant) > 1 else "")
    return ("-" if sign else "") + f"{text}e{'+' if e >= 0 else '-'}{abs(e)}"


def js_stringify(value, sort: bool = False) -> str:
    """JSON.stringify(value) for plain data; ``sort`` sorts object keys recursively first (the NOWPayments docs'
    ``sortObject``)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, (int, float, Decimal)):
        return js_number(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        keys = sorted(value) if sort else list(value)
        return "{" + ",".join(json.dumps(k, ensure_ascii=False) + ":" + js_stringify(value[k], sort) for k in keys) \
            + "}"
    if isinstance(value, list):
        return "[" + ",".join(js_stringify(v, sort) for v in value) + "]"
    raise TypeError(type(value))


def nowpayments_signature(secret: str, payload: dict) -> str:
    return hmac.new(secret.encode(), js_stringify(payload, sort=True).encode(), hashlib.sha512).hexdigest()


class NOWPaymentsStandIn(_Server):
    def __init__(self, api_key="NP-API-KEY-0123456789", ipn_secret="np-ipn-secret-abcdef",
                 rate=Decimal("64392.23")):
        self.api_key, self.ipn_secret, self.rate = api_key, ipn_secret, rate
        self.invoices: dict[str, dict] = {}
        self.payments: dict[str, dict] = {}
        self._ids = itertools.count(4522625843)
        self._pids = itertools.count(5077125051)
        super().__init__()

    def settings(self, **overrides) -> dict:
        values = {"base_url": self.url, "api_key": self.api_key, "ipn_secret": self.ipn_secret, "timeout": 5}
        values.update(overrides)
        return values

    def route(self, req, body):
        if req.path == "/v1/status" and req.method == "GET":  # the one call without a key
            return 200, {"message": "OK"}
        if req.headers.get("x-api-key") != self.api_key:
            return 403, {"status": False, "statusCode": 403, "code": "INVALID_API_KEY", "message": "Invalid api key"}
        if req.path == "/v1/invoice" and req.method == "POST":
            return self._create(body)
        if req.path.startswith("/v1/payment/") and req.method == "GET":
            pay = self.payments.get(req.path.rsplit("/", 1)[1])
            if pay is None:
                return 404, {"status": False, "statusCode": 404, "code": "PAYMENT_NOT_FOUND",
                             "message": "Payment not found"}
            return 200, js_stringify(pay)
        if req.path == "/v1/merchant/coins" and req.method == "GET":
            return 200, {"selectedCurrencies": ["BTC", "ETH", "USDTTRC20"]}
        return 404, {"status": False, "statusCode": 404, "code": "NOT_FOUND", "message": "Not found"}

    def _create(self, body):
        try:
            data = json.loads(body, parse_float=Decimal)
        except ValueError:
            return 400, {"status": False, "statusCode": 400, "code": "INVALID_REQUEST_PARAMS",
                         "message": "body is not JSON"}
        problems = []
        if not isinstance(data, dict):
            problems.append("body must be an object")
        else:
            if isinstance(data.get("price_amount"), bool) or not isinstance(data.get("price_amount"),
                                                                             (int, Decimal)):
                problems.append('"price_amount" must be a number')
            if not isinstance(data.get("price_currency"), str):
                problems.append('"price_currency" is required')
            for k in ("order_id", "order_description", "ipn_callback_url", "success_url", "cancel_url"):
                if k in data and not isinstance(data[k], str):
                    problems.append(f'"{k}" must be a string')
        if problems:
            return 400, {"status": False, "statusCode": 400, "code": "INVALID_REQUEST_PARAMS",
                         "message": "; ".join(problems)}
        inv_id = str(next(self._ids))
        now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        inv = {"id": inv_id, "token_id": uuid.uuid4().hex[:10], "order_id": data.get("order_id"),
               "order_description": data.get("order_description"), "price_amount": str(data["price_amount"]),
               "price_currency": data["price_currency"], "pay_currency": None,
               "ipn_callback_url": data.get("ipn_callback_url"),
               "invoice_url": f"{self.url}/payment/?iid={inv_id}", "success_url": data.get("success_url"),
               "cancel_url": data.get("cancel_url"), "created_at": now, "updated_at": now}
        with self.lock:
            self.invoices[inv_id] = inv
        return 200, inv

    # -- test controls ----------------------------------------------------------------------------------------
    def pay(self, invoice_id: str, status: str, paid_fraction: Decimal = Decimal(1),
            pay_amount: float | None = None) -> str:
        """Create or move the payment of ``invoice_id``; returns its payment id."""
        inv = self.invoices[invoice_id]
        with self.lock:
            pay = next((p for p in self.payments.values() if str(p["invoice_id"]) == invoice_id), None)
            if pay is None:
                price = Decimal(inv["price_amount"])
                due = pay_amount if pay_amount is not None else float((price / self.rate).quantize(
                    Decimal("0.00000001")))
                pid = next(self._pids)
                pay = {"payment_id": pid, "invoice_id": int(invoice_id), "payment_status": "waiting",
                       "pay_address": "3EZ2uTdVDAMFXTfc6uLDDKR6o8qKBZXVkj",
                       "price_amount": float(price) if price != int(price) else int(price),
                       "price_currency": "usd", "pay_amount": due, "actually_paid": 0,
                       "actually_paid_at_fiat": 0, "pay_currency": "btc", "order_id": inv["order_id"],
                       "order_description": inv["order_description"], "purchase_id": str(next(self._pids)),
                       "created_at": inv["created_at"], "updated_at": inv["created_at"],
                       "outcome_amount": due, "outcome_currency": "btc"}
                self.payments[str(pid)] = pay
            pay["payment_status"] = status
            if status != "waiting":
                paid = Decimal(repr(pay["pay_amount"])) * Decimal(paid_fraction)
                pay["actually_paid"] = float(paid.quantize(Decimal("0.000000001")))
            pay["updated_at"] = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
            return str(pay["payment_id"])

    def ipn(self, payment_id: str, *, secret: str | None = None, **overrides) -> tuple[dict, bytes]:
        """(headers, raw body) of the IPN NOWPayments posts: the payment object as JSON.stringify writes it,
        signed over its recursively key-sorted form."""
        payload = dict(self.payments[str(payment_id)])
        payload.update(overrides)
        body = js_stringify(payload).encode()
        sig = nowpayments_signature(secret or self.ipn_secret, payload)
        return {"x-nowpayments-sig": sig, "Content-Type": "application/json"}, body
