"""The scheduled sweep reconciles open payments whose webhooks never arrived."""

from __future__ import annotations

from hostbay.core import jobs, ledger, payments
from hostbay.core.payments import Payment
from hostbay.testing.pytest_plugin import login


def test_sweep_credits_settled_and_closes_expired(app, client, gateways, make_user, db, clock, credits, job_runner):
    api = gateways["btcpay"]
    user = make_user()
    login(client, user)
    for amount in ("25", "30", "35", "40"):
        assert client.post("/panel/topup", data={"amount": amount, "gateway": "btcpay"}).status_code == 303
    settled, expired, fresh, waiting = db.session.scalars(db.select(Payment).order_by(Payment.amount_cents)).all()
    api.set_state(settled.provider_ref, "Settled")
    api.set_state(expired.provider_ref, "Expired")
    api.set_state(fresh.provider_ref, "Settled")
    clock.advance(minutes=31)
    fresh.updated_at = clock.now()  # recently touched: left to its webhooks
    db.session.commit()
    assert ("payments.reconcile_stale", payments.SWEEP_EVERY_SECONDS) in app.extensions["hostbay"].schedules
    ops = [op for op in jobs.schedule_due() if op.kind == "payments.reconcile_stale"]
    assert len(ops) == 1
    job_runner.run_all()
    db.session.expire_all()
    op = db.session.get(jobs.Operation, ops[0].id)
    assert op.state == "succeeded" and op.result == {"credited": 1, "expired": 1, "pending": 1}
    statuses = {p.amount_cents: p.status for p in db.session.scalars(db.select(Payment))}
    assert statuses == {2500: "credited", 3000: "expired", 3500: "pending", 4000: "pending"}
    from hostbay.core.activity import AuditEntry

    audited = db.session.scalars(db.select(AuditEntry.target_id).filter_by(action="payments.reconcile")).all()
    assert sorted(audited) == sorted([settled.uuid, expired.uuid])  # the unchanged one is not audited
    assert ledger.balance_cents(user.id) == 2500 and len(credits.calls) == 1
    # running again changes nothing
    assert payments.reconcile_stale() == {"pending": 1}
    assert ledger.balance_cents(user.id) == 2500
