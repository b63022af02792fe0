"""Concurrent deliveries on PostgreSQL: threads posting to the real endpoint, each request with its own app context
and database session."""

from __future__ import annotations

import json
import os
import threading

import pytest

from hostbay.core import ledger
from hostbay.core.payments import Payment, WebhookDelivery
from hostbay.testing.pytest_plugin import login

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not os.environ.get("HOSTBAY_TEST_DATABASE_URL", "").startswith("postgresql"),
                       reason="needs PostgreSQL (HOSTBAY_TEST_DATABASE_URL)"),
]


def _start(client, user, gateway, amount):
    login(client, user)
    assert client.post("/panel/topup", data={"amount": amount, "gateway": gateway}).status_code == 303
    from hostbay.core.db import db

    return db.session.scalar(db.select(Payment).filter_by(user_id=user.id).order_by(Payment.id.desc()))


def _race(app, gateway, deliveries):
    barrier = threading.Barrier(len(deliveries))
    results, errors = [], []

    def worker(headers, body):
        c = app.test_client()
        try:
            barrier.wait(timeout=10)
            resp = c.post(f"/payments/webhook/{gateway}", data=body, headers=headers)
            results.append((resp.status_code, resp.get_json()["outcome"]))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=d) for d in deliveries]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    return results


def _check_once(db, user, p, cents, gateway):
    db.session.expire_all()
    assert db.session.get(Payment, p.id).status == "credited"
    assert ledger.balance_cents(user.id) == cents == ledger.ledger_sum_cents(user.id)
    n = db.session.scalar(db.select(db.func.count()).select_from(ledger.LedgerEntry)
                          .filter_by(idempotency_key=f"topup:{gateway}:{p.provider_ref}"))
    assert n == 1


def test_same_delivery_10_at_once_credits_once(app, client, gateways, make_user, db, credits):
    api = gateways["btcpay"]
    user = make_user()
    p = _start(client, user, "btcpay", "25")
    api.set_state(p.provider_ref, "Settled")
    delivery = api.webhook(p.provider_ref, "InvoiceSettled")
    results = _race(app, "btcpay", [delivery] * 10)
    assert sorted(o for _s, o in results).count("processed") == 1
    assert all(s == 200 for s, _o in results)
    _check_once(db, user, p, 2500, "btcpay")
    assert db.session.scalar(db.select(db.func.count()).select_from(WebhookDelivery)) == 1
    assert len(credits.calls) == 1


def test_distinct_deliveries_10_at_once_credit_once(app, client, gateways, make_user, db, credits):
    """Ten different deliveries of settlement (new delivery ids: the dedupe table cannot help) still credit once:
    the ledger key and the payment claim do."""
    api = gateways["btcpay"]
    user = make_user()
    p = _start(client, user, "btcpay", "25")
    api.set_state(p.provider_ref, "Settled")
    deliveries = [api.webhook(p.provider_ref, "InvoiceSettled" if i % 2 else "InvoicePaymentSettled")
                  for i in range(10)]
    assert len({json.loads(b)["deliveryId"] for _h, b in deliveries}) == 10
    results = _race(app, "btcpay", deliveries)
    assert all(s == 200 for s, _o in results), results
    _check_once(db, user, p, 2500, "btcpay")
    assert len(credits.calls) == 1


def test_nowpayments_ipn_10_at_once_credits_once(app, client, gateways, make_user, db, credits):
    api = gateways["nowpayments"]
    user = make_user()
    p = _start(client, user, "nowpayments", "12.50")
    pid = api.pay(p.provider_ref, "finished")
    results = _race(app, "nowpayments", [api.ipn(pid)] * 10)
    assert [o for _s, o in results].count("processed") == 1
    _check_once(db, user, p, 1250, "nowpayments")
    assert len(credits.calls) == 1
