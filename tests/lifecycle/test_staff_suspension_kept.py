"""A service suspended by staff is not reactivated by a payment: neither the customer's renew button nor the
automatic renewal after a top-up lifts it."""

import pytest

from hostbay.core import ledger
from hostbay.core.actions import request_action
from hostbay.core.db import db
from hostbay.core.errors import ActionNotAllowed
from hostbay.core.services import Service


def test_staff_suspension_survives_renewal_and_topup(make_user, make_package, make_service, make_node, clock):
    staff = make_user(role="support")
    user = make_user()
    svc = make_service(user, make_package(monthly_cents=1000), node=make_node())
    request_action(svc, "suspend", staff, reason="abuse")
    db.session.commit()
    clock.set(svc.renews_at)  # its period ends while it is suspended
    with pytest.raises(ActionNotAllowed, match="suspended by our staff"):
        request_action(db.session.get(Service, svc.id), "renew", user)
    db.session.rollback()
    ledger.credit(user.id, 5000, kind="bonus", key="topup-after-abuse", description="Top-up")
    db.session.commit()
    db.session.expire_all()
    svc = db.session.get(Service, svc.id)
    assert svc.state == "suspended"
    assert ledger.balance_cents(user.id) == 5000  # nothing charged


def test_unpaid_suspension_is_still_lifted_by_a_renewal(make_user, make_package, make_service, make_node, clock):
    from hostbay.core import renewals

    user = make_user()
    svc = make_service(user, make_package(monthly_cents=1000), node=make_node())
    clock.set(svc.renews_at)
    renewals.renewal_sweep()
    db.session.expire_all()
    assert db.session.get(Service, svc.id).state == "suspended"
    ledger.credit(user.id, 1000, kind="bonus", key="topup-unpaid", description="Top-up")
    db.session.commit()
    db.session.expire_all()
    assert db.session.get(Service, svc.id).state == "active"
