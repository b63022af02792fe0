"""A crypto top-up credited by a webhook renews the customer's suspended service (payments -> ledger ->
lifecycle), once the credit is committed."""

import json
from datetime import timedelta
from decimal import Decimal

from hostbay.core import ledger, payments
from hostbay.core.db import db
from hostbay.core.drivers import PaymentStatus
from hostbay.core.services import Service
from hostbay.testing.fakes import FakePaymentGateway


def test_webhook_credit_renews_a_suspended_service(app, client, make_user, make_package, make_service, clock):
    admin = make_user(role="admin")
    payments.save_gateway_config("fake", {"secret": "whsec-test"}, True, admin)
    user = make_user()
    due = clock.now() - timedelta(days=1)
    svc = make_service(user, make_package(monthly_cents=1000), state="suspended", renews_at=due,
                       suspended_at=due)
    pay = payments.Payment(user_id=user.id, gateway="fake", amount_cents=2500, provider_ref="fk_recover")
    db.session.add(pay)
    db.session.commit()
    FakePaymentGateway.invoices["fk_recover"] = {"amount": Decimal("25.00"), "status": PaymentStatus.SETTLED}
    try:
        body = json.dumps({"id": "evt-1", "invoice": "fk_recover", "status": "settled", "amount": "25.00"}).encode()
        sig = FakePaymentGateway({"secret": "whsec-test"}).sign(body)
        resp = client.post("/payments/webhook/fake", data=body, headers={"X-Fake-Signature": sig,
                                                                         "Content-Type": "application/json"})
        assert resp.status_code == 200, resp.get_data(as_text=True)
    finally:
        FakePaymentGateway.invoices.pop("fk_recover", None)
    db.session.expire_all()
    svc = db.session.get(Service, svc.id)
    assert svc.state == "active" and svc.renews_at > clock.now()
    assert ledger.balance_cents(user.id) == 1500 == ledger.ledger_sum_cents(user.id)
