"""The transaction rule (docs/architecture.md): domain functions flush, the owner (view, API view, CLI command, job
runner) commits. Each domain function that once committed itself is called here with a listener that fails on any
COMMIT and a check that the caller's transaction is still the one it began (no rollback either); then the panel's
and the API's paths show the work still persists, with its job run after the owner's commit."""

from __future__ import annotations

import contextlib

from sqlalchemy import event, select

from hostbay.core import billing, inventory, ipam, ledger, payments, rdns
from hostbay.core.db import db
from hostbay.core.services import Service
from hostbay.testing.pytest_plugin import login


@contextlib.contextmanager
def owner_keeps_the_transaction():
    """Fails when anything inside commits or ends the caller's transaction."""
    sess = db.session()
    commits = []

    def refuse(session):
        if session.in_nested_transaction():  # a SAVEPOINT released: the caller's transaction goes on
            return
        commits.append(session)
        raise AssertionError("a domain function committed the caller's transaction")

    event.listen(sess, "before_commit", refuse)
    db.session.execute(select(1))  # the caller's transaction is open
    root = sess.get_transaction()
    try:
        yield
    finally:
        event.remove(sess, "before_commit", refuse)
    assert not commits
    assert sess.get_transaction() is root, "the caller's transaction was ended (rolled back or committed)"


def test_billing_functions_flush_and_leave_the_commit_to_the_caller(app, make_user, make_package, make_image,
                                                                    make_node):
    make_node()
    user, staff = make_user(balance_cents=10000), make_user(role="admin")
    small = make_package(slug="small", monthly_cents=500, ipv4_count=0)
    big = make_package(slug="big", monthly_cents=900, disk_gib=40, ipv4_count=0)
    img = make_image()
    ledger.credit(user.id, 3000, kind="topup", key="uow-topup", description="Top-up")
    db.session.commit()
    with owner_keeps_the_transaction():
        svc = billing.place_order(user, small, "monthly", "uow.example.test", img, key="uow-order")
    db.session.commit()
    db.session.refresh(svc)
    assert svc.state == "active"  # the set-up job ran after the owner's commit, not before
    with owner_keeps_the_transaction():
        op = billing.change_package(svc, big, user, key="uow-change")
        bonus = billing.bonus(user, 100, staff, "Goodwill", key="uow-bonus")
        billing.admin_charge(user, 50, staff, "Extra", key="uow-charge")
        billing.correction(user, -10, staff, "typo", key="uow-corr")
        billing.reverse_entry(bonus, staff, "given by mistake")
        req = billing.request_refund(user, 500, "leaving")
        billing.approve_refund(req, staff, "tx-1")
        other = billing.request_refund(user, 300, "again")
        billing.reject_refund(other, staff, "one at a time")
        inventory.record_demand(user, big)
    assert op.state == "queued"  # flushed, not dispatched: nothing ran before the owner's commit
    db.session.commit()
    db.session.refresh(op)
    assert op.state == "succeeded"


def test_payment_functions_flush_and_leave_the_commit_to_the_caller(app, make_user):
    from hostbay.core.drivers import PaymentStatus
    from hostbay.testing.fakes import FakePaymentGateway

    user, staff = make_user(), make_user(role="admin")
    payments.save_gateway_config("fake", {}, True, staff)
    db.session.commit()
    with app.test_request_context("/"):
        with owner_keeps_the_transaction():
            p = payments.start_topup(user, "fake", 2500)
        db.session.commit()
        with owner_keeps_the_transaction():
            payments.open_checkout(p)
        db.session.commit()
        assert p.provider_ref in FakePaymentGateway.invoices and p.checkout_url
        FakePaymentGateway.invoices[p.provider_ref]["status"] = PaymentStatus.EXPIRED
        with owner_keeps_the_transaction():
            assert payments.reconcile(p, staff) == payments.EXPIRED
            payments.credit_received(p, staff, "20.00")
        db.session.commit()
    assert ledger.balance_cents(user.id) == 2000


def test_network_functions_flush_and_leave_the_commit_to_the_caller(app, make_user, make_package, make_node,
                                                                     make_service):
    from hostbay.core.rdns import DnsBackendConfig
    from hostbay.testing.fakes import FakeDns

    FakeDns.records.clear()
    db.session.add(DnsBackendConfig(driver="fake", label="In-memory DNS"))
    node, staff = make_node(), make_user(role="admin")
    a = make_service(make_user(), make_package(), node=node)
    b = make_service(make_user(), make_package(slug="other"), node=node)
    db.session.commit()
    with owner_keeps_the_transaction():
        pool = ipam.create_pool(name="uow", cidr="192.0.2.0/28", rdns_policy="approval", node_ids=[node.id],
                                actor=staff)
        ipam.update_pool(pool, actor=staff, location="fra1")
        addr = ipam.allocate_for_service(a)[0].address
        ipam.reserve("192.0.2.9", "router", staff)
        ipam.assign("192.0.2.9", b.uuid, staff)
        ipam.move("192.0.2.9", a.uuid, staff)
        ipam.release("192.0.2.9", staff)
        first = rdns.request_ptr(a, addr, "mail.example.com", a.user)
        rdns.reject(first.uuid, staff, "not yours")
        req = rdns.request_ptr(a, addr, "web.example.com", a.user)
        rdns.approve(req.uuid, staff, "ok")
    assert FakeDns.records == {}  # the approved PTR is applied by its job, after the owner's commit
    db.session.commit()
    assert FakeDns.records == {addr: "web.example.com"}
    FakeDns.records.clear()


def test_the_panel_and_the_api_commit_what_the_domain_functions_flushed(app, client, make_user, make_package,
                                                                        make_image, make_node):
    from hostbay.core import credentials

    make_node()
    user, staff = make_user(balance_cents=2000), make_user(role="admin")
    pkg, img = make_package(monthly_cents=700, ipv4_count=0), make_image()
    db.session.commit()
    login(client, user)
    form = {"cycle": "monthly", "image": img.uuid, "hostname": "panel.example.test", "key": "panel-order"}
    assert client.post(f"/panel/order/{pkg.uuid}/confirm", data=form).status_code == 302
    client.post("/logout")
    login(client, staff)
    assert client.post(f"/staff/billing/customers/{user.uuid}/money",
                       data={"action": "bonus", "amount": "1.00", "description": "Welcome", "key": "m1"}
                       ).status_code == 302
    _tok, token = credentials.create_api_token(user, "uow", scope="write")
    db.session.commit()
    api = client.post("/api/v1/orders", json={"package": pkg.uuid, "cycle": "monthly", "hostname": "api.example.test",
                                             "image": img.uuid},
                      headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "api-order"})
    assert api.status_code == 201, api.get_json()
    user_id = user.id
    db.session.remove()
    states = dict(db.session.execute(select(Service.hostname, Service.state).where(Service.user_id == user_id)).all())
    assert states == {"panel.example.test": "active", "api.example.test": "active"}
    assert ledger.balance_cents(user_id) == 2000 - 2 * 700 + 100
