"""External refunds pay back only top-up money not yet spent (first in, first out; bonuses and credits stay in the
wallet), on the form, at request and at approval. A package change charges exactly what its signed review quote
showed; an expired or outdated quote sends the customer back to the review."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest

from hostbay.core import billing, ledger
from hostbay.core.db import db
from hostbay.core.errors import UserError
from hostbay.core.quotes import QUOTE_SECONDS, QuoteExpired, apply_quote, create_quote
from hostbay.core.refunds import refundable_cents
from hostbay.testing.pytest_plugin import login


def test_a_bonus_only_wallet_cannot_be_refunded_externally(client, make_user):
    user, staff = make_user(), make_user(role="admin")
    billing.bonus(user, 10000, staff, "Welcome bonus", key="b1")
    assert ledger.balance_cents(user.id) == 10000 and refundable_cents(user.id) == 0
    with pytest.raises(UserError, match=r"at most \$0.00"):
        billing.request_refund(user, 2000, "leaving")
    login(client, user)
    page = client.get("/panel/billing/refund").get_data(as_text=True)
    assert re.search(r"Refundable \(top-ups not spent yet\): <strong data-refundable>\$0.00</strong>", page)
    resp = client.post("/panel/billing/refund", data={"amount": "20.00", "reason": "leaving"})
    assert resp.status_code == 400
    assert db.session.scalar(db.select(billing.RefundRequest.id)) is None


def test_approval_refuses_what_is_no_longer_refundable(make_user):
    user, staff = make_user(balance_cents=3000), make_user(role="admin")  # a $30 top-up
    req = billing.request_refund(user, 2000, "leaving")
    billing.bonus(user, 5000, staff, "Goodwill", key="b2")
    ledger.debit(user.id, 1500, kind="renewal", key="spend", description="Renewal")  # spends the top-up first
    db.session.commit()
    assert ledger.balance_cents(user.id) == 6500 and refundable_cents(user.id) == 1500
    with pytest.raises(UserError, match=r"Only \$15.00"):
        billing.approve_refund(req, staff, "tx-1")
    db.session.refresh(req)
    assert req.state == billing.REFUND_PENDING and ledger.balance_cents(user.id) == 6500


def test_fifo_rule_and_payouts(make_user):
    user, staff = make_user(), make_user(role="admin")
    billing.bonus(user, 1000, staff, "Bonus", key="b")                         # lot 1: $10 wallet credit
    ledger.credit(user.id, 4000, kind="topup", key="t1", description="Top-up")  # lot 2: $40 refundable
    db.session.commit()
    ledger.debit(user.id, 2500, kind="order", key="o", description="Order")     # $10 bonus, then $15 of the top-up
    db.session.commit()
    assert refundable_cents(user.id) == 2500
    req = billing.request_refund(user, 2500, "leaving")
    billing.approve_refund(req, staff, "tx-2")
    assert refundable_cents(user.id) == 0 and ledger.balance_cents(user.id) == 0
    # a charge-back of a top-up takes its own lot first
    t2 = ledger.credit(user.id, 3000, kind="topup", key="t2", description="Top-up")
    billing.bonus(user, 700, staff, "Bonus", key="b3")
    db.session.commit()
    billing.reverse_entry(t2, staff, "charge-back")
    assert refundable_cents(user.id) == 0 and ledger.balance_cents(user.id) == 700


def _active_service(user, make_package, finish_job, clock):
    small = make_package(slug="q-small", name="Q Small", monthly_cents=1000, disk_gib=10)
    big = make_package(slug="q-big", name="Q Big", monthly_cents=300000, disk_gib=20)
    clock.set(clock.now().replace(day=1, hour=0, minute=0, second=0))
    svc = finish_job(billing.place_order(user, small, "monthly", "q1.example.com", None if small.kind != "vps"
                                         else _image(small), key="o"))
    return svc, big


def _image(pkg):
    from hostbay.core.catalog import Image

    img = db.session.scalar(db.select(Image).filter_by(driver=pkg.driver))
    if img is None:
        img = Image(driver=pkg.driver, slug="q-img", name="Q image", source="q.qcow2")
        db.session.add(img)
        db.session.commit()
    return img


def test_a_package_change_charges_exactly_the_quoted_amount(make_user, make_package, finish_job, clock):
    user = make_user(balance_cents=500000)
    svc, big = _active_service(user, make_package, finish_job, clock)
    clock.advance(days=10, hours=7, minutes=13, seconds=11)
    signed = create_quote(svc, big)
    shown = signed.amount_cents
    clock.advance(seconds=QUOTE_SECONDS - 1)  # confirmed just in time: the pro-rata would be a few cents less now
    assert billing.quote_change(svc, big).amount_cents != shown
    before = ledger.balance_cents(user.id)
    apply_quote(signed.token, svc, user, key="change-1")
    assert before - ledger.balance_cents(user.id) == shown
    # a double submit is the same change
    assert apply_quote(signed.token, svc, user, key="change-1") is not None
    assert before - ledger.balance_cents(user.id) == shown


def test_an_expired_or_altered_quote_is_refused(make_user, make_package, finish_job, clock):
    user = make_user(balance_cents=500000)
    svc, big = _active_service(user, make_package, finish_job, clock)
    signed = create_quote(svc, big)
    clock.advance(seconds=QUOTE_SECONDS + 1)
    with pytest.raises(QuoteExpired):
        apply_quote(signed.token, svc, user, key="late")
    fresh = create_quote(svc, big)
    forged = fresh.token[:-3] + ("AAA" if not fresh.token.endswith("AAA") else "BBB")
    with pytest.raises(QuoteExpired):
        apply_quote(forged, svc, user, key="forged")
    next(p for p in big.prices if p.cycle == "monthly").price_cents += 1  # the price changed after the review
    db.session.commit()
    with pytest.raises(QuoteExpired, match="changed since"):
        apply_quote(fresh.token, svc, user, key="changed")
    assert ledger.balance_cents(user.id) == 500000 - 1000


def test_an_expired_review_goes_back_to_a_fresh_review(client, make_user, make_package, finish_job, clock):
    user = make_user(balance_cents=500000)
    svc, big = _active_service(user, make_package, finish_job, clock)
    login(client, user)
    review = client.post(f"/panel/services/{svc.uuid}/change-package/review", data={"package": big.uuid})
    assert b"Price valid until" in review.data
    form = {name: re.search(rf'name="{name}" value="([^"]+)"'.encode(), review.data).group(1).decode()
            for name in ("key", "quote", "package")}
    clock.advance(seconds=QUOTE_SECONDS + 60)
    resp = client.post(f"/panel/services/{svc.uuid}/change-package/confirm", data=form)
    assert resp.status_code == 409 and b"no longer valid" in resp.data and b'name="quote"' in resp.data
    db.session.refresh(svc)
    assert svc.package_id != big.id and ledger.balance_cents(user.id) == 499000
    new = re.search(rb'name="quote" value="([^"]+)"', resp.data).group(1).decode()
    shown = re.search(rb'class="charge">\$([0-9.,]+)<', resp.data).group(1).decode()
    key = re.search(rb'name="key" value="([^"]+)"', resp.data).group(1).decode()
    clock.advance(seconds=30)
    ok = client.post(f"/panel/services/{svc.uuid}/change-package/confirm",
                     data={"key": key, "quote": new, "package": big.uuid})
    assert ok.status_code == 302
    assert 499000 - ledger.balance_cents(user.id) == int(Decimal(shown.replace(",", "")) * 100)
