"""Idempotency-Key on orders: same key and body replay the first response; another body is a 422; ten
simultaneous replays on PostgreSQL create one service and one debit."""

import threading

import pytest
from sqlalchemy import func, select

from hostbay.core import ledger
from hostbay.core.db import db
from hostbay.core.services import Service

from .conftest import bearer


@pytest.fixture(autouse=True)
def _manual_jobs(app):
    app.config["HOSTBAY_JOBS"] = "manual"


def _order_body(pkg, img, hostname="web1.example.test"):
    return {"package": pkg.uuid, "cycle": "monthly", "hostname": hostname, "image": img.uuid}


def test_same_key_replays_other_body_is_422(app, client, make_user, make_token, make_package, make_image):
    user = make_user(balance_cents=5000)
    pkg, img = make_package(monthly_cents=1000), make_image()
    h = bearer(make_token(user)) | {"Idempotency-Key": "order-1"}
    first = client.post("/api/v1/orders", json=_order_body(pkg, img), headers=h)
    assert first.status_code == 201, first.data
    again = client.post("/api/v1/orders", json=_order_body(pkg, img), headers=h)
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first.get_json()
    other = client.post("/api/v1/orders", json=_order_body(pkg, img, "web2.example.test"), headers=h)
    assert other.status_code == 422 and other.get_json()["type"].endswith("/idempotency-key-reused")
    missing = client.post("/api/v1/orders", json=_order_body(pkg, img), headers=bearer(make_token(user)))
    assert missing.status_code == 400 and missing.get_json()["type"].endswith("/idempotency-key-required")
    assert ledger.balance_cents(user.id) == 4000
    assert db.session.scalar(select(func.count()).select_from(Service)) == 1


def test_failed_request_frees_the_key(app, client, make_user, make_token, make_package, make_image):
    user = make_user(balance_cents=500)
    pkg, img = make_package(monthly_cents=1000), make_image()
    h = bearer(make_token(user)) | {"Idempotency-Key": "order-poor"}
    resp = client.post("/api/v1/orders", json=_order_body(pkg, img), headers=h)
    assert resp.status_code == 402 and resp.get_json()["type"].endswith("/insufficient-funds")
    assert resp.get_json()["shortfall_cents"] == 500
    ledger.credit(user.id, 1000, kind="topup", key="more", description="Top-up")
    db.session.commit()
    resp = client.post("/api/v1/orders", json=_order_body(pkg, img), headers=h)
    assert resp.status_code == 201, resp.data


@pytest.mark.postgres
def test_ten_concurrent_replays_make_one_service_and_one_debit(app, database_url, make_user, make_token,
                                                               make_package, make_image):
    if not database_url.startswith("postgresql"):
        pytest.skip("needs PostgreSQL")
    user = make_user(balance_cents=100000)
    pkg, img = make_package(monthly_cents=1000), make_image()
    h = bearer(make_token(user)) | {"Idempotency-Key": "same-order"}
    body = _order_body(pkg, img)
    barrier = threading.Barrier(10)
    results = []

    def worker():
        c = app.test_client()
        with app.app_context():
            barrier.wait()
            r = c.post("/api/v1/orders", json=body, headers=h)
            results.append((r.status_code, r.get_json()))
            db.session.remove()

    threads = [threading.Thread(target=worker) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 10
    assert {s for s, _ in results} == {201}, results
    assert len({j["uuid"] for _, j in results}) == 1
    db.session.rollback()
    assert db.session.scalar(select(func.count()).select_from(Service).where(Service.user_id == user.id)) == 1
    entries = db.session.scalars(ledger.entries_for(user.id)).all()
    assert [e.kind for e in entries].count("order") == 1
    assert ledger.balance_cents(user.id) == 100000 - 1000 == ledger.ledger_sum_cents(user.id)


# --- every call that moves money needs a key ---------------------------------------------------------------------

def _renewals(user):
    return [e for e in db.session.scalars(ledger.entries_for(user.id)).all() if e.kind == "renewal"]


def test_renew_without_a_key_is_refused_and_a_retried_renew_charges_once(app, client, make_user, make_token,
                                                                        make_package, make_service):
    user = make_user(balance_cents=5000)
    svc = make_service(user, make_package(monthly_cents=1000))
    renews_at = svc.renews_at
    h = bearer(make_token(user))
    url = f"/api/v1/services/{svc.uuid}/actions/renew"
    missing = client.post(url, headers=h, json={})
    assert missing.status_code == 400, missing.data
    assert missing.mimetype == "application/problem+json"
    assert missing.get_json()["type"] == "/api/v1/problems/idempotency-key-required"
    blank = client.post(url, headers=h | {"Idempotency-Key": "  "}, json={})
    assert blank.status_code == 400 and blank.get_json()["type"].endswith("/idempotency-key-required")
    db.session.refresh(svc)
    assert ledger.balance_cents(user.id) == 5000 and _renewals(user) == [] and svc.renews_at == renews_at

    first = client.post(url, headers=h | {"Idempotency-Key": "renew-1"}, json={})
    assert first.status_code == 200, first.data
    again = client.post(url, headers=h | {"Idempotency-Key": "renew-1"}, json={})
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first.get_json()
    db.session.refresh(svc)
    assert ledger.balance_cents(user.id) == 4000 == ledger.ledger_sum_cents(user.id)
    assert len(_renewals(user)) == 1 and svc.renews_at > renews_at
    # actions that move no money still work without a key
    assert client.post(f"/api/v1/services/{svc.uuid}/actions/cancel", headers=h,
                       json={"when": "end"}).status_code == 200


def test_staff_renew_needs_a_key_and_charges_once(app, client, make_user, make_token, make_package, make_service):
    user = make_user(balance_cents=5000)
    svc = make_service(user, make_package(monthly_cents=1000))
    h = bearer(make_token(make_user(role="admin")))
    url = f"/api/v1/staff/services/{svc.uuid}/actions/renew"
    missing = client.post(url, headers=h, json={})
    assert missing.status_code == 400 and missing.get_json()["type"].endswith("/idempotency-key-required")
    assert ledger.balance_cents(user.id) == 5000 and _renewals(user) == []
    for _ in range(2):
        resp = client.post(url, headers=h | {"Idempotency-Key": "staff-renew-1"}, json={})
        assert resp.status_code == 200, resp.data
    assert resp.headers["Idempotent-Replayed"] == "true"
    assert ledger.balance_cents(user.id) == 4000 and len(_renewals(user)) == 1


def test_refund_request_needs_a_key_and_is_created_once(app, client, make_user, make_token):
    from hostbay.core import billing

    user = make_user(balance_cents=3000)
    h = bearer(make_token(user))
    body = {"amount_cents": 1000, "reason": "leaving"}
    missing = client.post("/api/v1/refunds", headers=h, json=body)
    assert missing.status_code == 400 and missing.get_json()["type"].endswith("/idempotency-key-required")
    assert db.session.scalar(select(func.count()).select_from(billing.RefundRequest)) == 0
    first = client.post("/api/v1/refunds", headers=h | {"Idempotency-Key": "refund-1"}, json=body)
    assert first.status_code == 201, first.data
    again = client.post("/api/v1/refunds", headers=h | {"Idempotency-Key": "refund-1"}, json=body)
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json()["uuid"] == first.get_json()["uuid"]
    assert db.session.scalar(select(func.count()).select_from(billing.RefundRequest)) == 1


def test_the_document_marks_the_key_required_where_money_moves(app, client):
    doc = client.get("/api/v1/openapi.json").get_json()

    def key_param(path, method="post"):
        params = doc["paths"][path][method].get("parameters", [])
        return next(p for p in params if p.get("name") == "Idempotency-Key")

    for path in ("/api/v1/orders", "/api/v1/topups", "/api/v1/refunds",
                 "/api/v1/services/{service_uuid}/package-changes"):
        assert key_param(path).get("required") is True, path
    for path in ("/api/v1/services/{service_uuid}/actions/{action}",
                 "/api/v1/staff/services/{service_uuid}/actions/{action}"):
        assert "Required for `renew`" in key_param(path)["description"], path
