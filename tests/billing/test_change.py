from datetime import timedelta

import pytest

from hostbay.core import billing, jobs, ledger, services
from hostbay.core.activity import ActivityEntry, AuditEntry
from hostbay.core.db import db
from hostbay.core.errors import ActionNotAllowed, InsufficientFunds, NotFound, UserError


@pytest.fixture
def setup(make_user, make_package, make_image, clock, finish_job):
    user = make_user(balance_cents=10000)
    small = make_package(slug="small", monthly_cents=1000, disk_gib=20)
    big = make_package(slug="big", monthly_cents=2000, disk_gib=40)
    tiny = make_package(slug="tiny", monthly_cents=500, disk_gib=10)
    img = make_image()
    svc = billing.place_order(user, small, "monthly", "web1.example.com", img, key="order")
    finish_job(svc)
    return user, small, big, tiny, svc


def test_upgrade_at_half_cycle(setup, clock):
    user, small, big, tiny, svc = setup
    renews = svc.renews_at
    clock.set(svc.period_start + (svc.renews_at - svc.period_start) / 2)
    q = billing.quote_change(svc, big)
    assert q.amount_cents == 500 and not q.disk_shrinks
    op = billing.change_package(svc, big, user, key="c1")
    db.session.refresh(svc)
    assert op.kind == "service.resize" and op.payload == {"old_package_id": small.id}
    assert svc.state == services.RESIZING and svc.package_id == big.id and svc.price_cents == 2000
    assert svc.renews_at == renews
    assert ledger.balance_cents(user.id) == ledger.ledger_sum_cents(user.id) == 10000 - 1000 - 500
    entry = ledger.find_entry(f"ledger:change:{svc.uuid}:c1")
    assert entry.kind == "upgrade" and entry.amount_cents == -500
    assert db.session.scalar(db.select(ActivityEntry).filter_by(service_id=svc.id, event="package_change"))
    # replay with the same key: nothing changes, the same operation comes back
    again = billing.change_package(svc, big, user, key="c1")
    assert again.id == op.id and ledger.balance_cents(user.id) == 8500
    # the service is busy now: another change is refused
    with pytest.raises(ActionNotAllowed):
        billing.change_package(svc, tiny, user, confirm=svc.hostname, key="c2")


def test_downgrade_smaller_disk_needs_hostname(setup, clock):
    user, small, big, tiny, svc = setup
    clock.advance(days=10)
    q = billing.quote_change(svc, tiny)
    assert q.disk_shrinks and q.amount_cents < 0
    for wrong in (None, "", "web2.example.com"):
        with pytest.raises(UserError) as exc:
            billing.change_package(svc, tiny, user, confirm=wrong, key="c1")
        assert "web1.example.com" in str(exc.value)
    db.session.refresh(svc)
    assert svc.state == services.ACTIVE and svc.package_id == small.id and ledger.balance_cents(user.id) == 9000
    op = billing.change_package(svc, tiny, user, confirm="WEB1.example.com", key="c1")
    db.session.refresh(svc)
    assert op.kind == "service.rebuild" and op.payload["old_package_id"] == small.id
    assert svc.state == services.REBUILDING and svc.price_cents == 500
    # 21 of 31 days left: -5.00 x 21/31 = -3.387... -> 3.39 credited
    assert ledger.balance_cents(user.id) == 9000 + 339
    assert ledger.find_entry(f"ledger:change:{svc.uuid}:c1").kind == "downgrade_credit"


def test_upgrade_refused_when_wallet_short(make_user, make_package, make_image, clock, finish_job):
    user = make_user(balance_cents=1000)
    small, big = make_package(monthly_cents=1000), make_package(monthly_cents=5000)
    svc = finish_job(billing.place_order(user, small, "monthly", "web1.example.com", make_image(), key="o"))
    with pytest.raises(InsufficientFunds) as exc:
        billing.change_package(svc, big, user, key="c")
    assert exc.value.shortfall_cents == 4000
    db.session.refresh(svc)
    assert svc.state == services.ACTIVE and svc.package_id == small.id and svc.price_cents == 1000
    assert db.session.scalar(db.select(jobs.Operation).filter_by(key=f"change:{svc.uuid}:c")) is None


def test_upgrade_then_reverse_downgrade_nets_to_zero(setup, clock, finish_job):
    user, small, big, tiny, svc = setup
    clock.advance(days=7, hours=3, seconds=17)
    before = ledger.balance_cents(user.id)
    billing.change_package(svc, big, user, key="up")
    finish_job(svc)
    billing.change_package(svc, small, user, confirm=svc.hostname, key="down")
    assert abs(ledger.balance_cents(user.id) - before) <= 1
    assert ledger.balance_cents(user.id) == ledger.ledger_sum_cents(user.id)


def test_next_renewal_uses_new_price_and_renewal_date_stays(setup, clock, finish_job):
    user, small, big, tiny, svc = setup
    renews = svc.renews_at
    clock.advance(days=3)
    billing.change_package(svc, big, user, key="up")
    finish_job(svc)
    assert svc.renews_at == renews and svc.price_cents == big.price_cents("monthly")


def test_change_rules(setup, make_user, make_package):
    user, small, big, tiny, svc = setup
    stranger = make_user()
    support = make_user(role="support")
    with pytest.raises(NotFound):
        billing.change_package(svc, big, stranger, key="x")
    with pytest.raises(UserError):
        billing.quote_change(svc, small)  # its own package
    with pytest.raises(UserError):
        billing.quote_change(svc, make_package(driver="other"))
    with pytest.raises(UserError):
        billing.quote_change(svc, make_package(retired=True))
    assert {p.slug for p in billing.change_candidates(svc)} == {"big", "tiny"}
    # staff may change a customer's package; the audit trail names them
    billing.change_package(svc, big, support, key="staff")
    audit = db.session.scalar(db.select(AuditEntry).filter_by(action="service.change_package"))
    assert audit.actor_id == support.id and audit.actor_type == "staff"
    assert ledger.find_entry(f"ledger:change:{svc.uuid}:staff").actor_type == "staff"


def test_change_after_period_end_moves_no_money(setup, clock):
    user, small, big, tiny, svc = setup
    clock.set(svc.renews_at + timedelta(hours=1))
    assert billing.quote_change(svc, big).amount_cents == 0
    billing.change_package(svc, big, user, key="late")
    assert ledger.balance_cents(user.id) == 9000


def test_package_too_small_for_the_image(make_user, make_package, make_image, finish_job):
    user = make_user(balance_cents=5000)
    pkg, tiny = make_package(disk_gib=40), make_package(disk_gib=10)
    svc = finish_job(billing.place_order(user, pkg, "monthly", "web1.example.com", make_image(min_disk_gib=20),
                                         key="o"))
    assert billing.change_candidates(svc) == []
    with pytest.raises(UserError, match="at least 20 GiB"):
        billing.change_package(svc, tiny, user, confirm=svc.hostname, key="c")
