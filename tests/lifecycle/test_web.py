"""Customer service page, live progress endpoint and staff pages."""
import re

import pytest

from hostbay.core import jobs
from hostbay.core.services import Service
from hostbay.testing.fakes import FakeVirtDriver
from hostbay.testing.pytest_plugin import login


@pytest.fixture
def active(db, setup, order):
    svc, _ = order()
    db.session.expire_all()
    return db.session.get(Service, svc.id)


def test_customer_page_actions_and_progress(db, client, setup, active, job_runner):
    login(client, setup.user)
    page = client.get(f"/panel/services/{active.uuid}").get_data(as_text=True)
    assert active.hostname in page and "Active" in page
    for action in ("stop", "restart", "reinstall", "cancel", "renew"):
        assert f"/panel/services/{active.uuid}/action/{action}" in page
    assert f"/panel/services/{active.uuid}/action/start" not in page  # the server runs: no Start
    assert page.count('name="csrf_token"') >= 6
    assert "<script>" not in page and "service-progress.js" in page  # no inline script under the CSP
    assert setup.node.name not in page and active.infra_ref["domain"] not in page
    assert "Server web1.example.test was set up" in page  # activity log
    resp = client.post(f"/panel/services/{active.uuid}/action/reinstall", data={"image": setup.image.uuid,
                                                                               "confirm_hostname": active.hostname})
    assert resp.status_code == 302
    data = client.get(f"/panel/services/{active.uuid}/progress").json
    assert data["state"] == "reinstalling" and data["busy"] is True
    assert data["operations"][0]["title"] == "Reinstall" and data["operations"][0]["finished"] is False
    page = client.get(f"/panel/services/{active.uuid}").get_data(as_text=True)
    assert 'data-running="1"' in page and "being reinstalled" in page
    assert "/action/restart" not in page  # busy: no actions offered
    resp = client.post(f"/panel/services/{active.uuid}/action/restart", follow_redirects=True)
    assert "being reinstalled" in resp.get_data(as_text=True)
    job_runner.run_all()
    data = client.get(f"/panel/services/{active.uuid}/progress").json
    assert data["state"] == "active" and data["operations"][0]["pct"] == 100
    js = client.get("/static/service-progress.js")
    assert js.status_code == 200 and b"data-progress-url" in js.data


def test_failed_operation_shows_customer_message_only(db, client, setup, order, make_user):
    setup.node.enabled = False
    db.session.commit()
    svc, _ = order()
    login(client, setup.user)
    data = client.get(f"/panel/services/{svc.uuid}/progress").json
    op = data["operations"][0]
    assert op["state"] == "failed" and "capacity" in op["error"] and "fake node" not in op["error"]


def test_other_customers_get_404(db, client, active, make_user):
    other = make_user()
    login(client, other)
    assert client.get(f"/panel/services/{active.uuid}").status_code == 404
    assert client.get(f"/panel/services/{active.uuid}/progress").status_code == 404
    assert client.post(f"/panel/services/{active.uuid}/action/stop").status_code == 404
    assert client.get("/staff/services/").status_code == 404


def test_staff_list_filters_detail_and_retry(db, client, setup, order, active, make_user):
    staff = make_user(role="support")
    login(client, staff)
    page = client.get("/staff/services/?state=active").get_data(as_text=True)
    assert active.hostname in page
    assert active.hostname not in client.get("/staff/services/?state=suspended").get_data(as_text=True)
    assert active.hostname in client.get(f"/staff/services/?q={setup.user.email}").get_data(as_text=True)
    detail = client.get(f"/staff/services/{active.uuid}").get_data(as_text=True)
    assert setup.node.name in detail and active.infra_ref["domain"] in detail and "service.provisioned" in detail
    # a failed provisioning is retried from the staff page
    setup.node.enabled = False
    db.session.commit()
    failed, op = order(hostname="web2.example.test")
    setup.node.enabled = True
    db.session.commit()
    detail = client.get(f"/staff/services/{failed.uuid}").get_data(as_text=True)
    assert "failed" in detail and f"/operations/{op.id}/retry" in detail
    client.post(f"/staff/services/{failed.uuid}/operations/{op.id}/retry")
    db.session.expire_all()
    assert db.session.get(Service, failed.id).state == "active"
    assert db.session.get(jobs.Operation, op.id).state == "succeeded"
    # staff suspend from the page: server stopped, audit names the staff member
    client.post(f"/staff/services/{active.uuid}/action/suspend", data={"reason": "abuse"})
    db.session.expire_all()
    assert db.session.get(Service, active.id).state == "suspended"
    assert FakeVirtDriver.servers[active.uuid]["state"].value == "stopped"
    detail = client.get(f"/staff/services/{active.uuid}").get_data(as_text=True)
    assert staff.email in detail and "abuse" in detail


def test_billing_staff_cannot_see_services(client, make_user):
    login(client, make_user(role="billing"))
    assert client.get("/staff/services/").status_code == 404


def test_customer_cancel_now_hides_service(db, client, setup, active):
    login(client, setup.user)
    resp = client.post(f"/panel/services/{active.uuid}/action/cancel", data={"when": "now",
                                                                           "confirm_hostname": active.hostname})
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/panel/services/")
    assert active.hostname not in client.get("/panel/services/").get_data(as_text=True)
    assert client.get(f"/panel/services/{active.uuid}").status_code == 404


def test_double_submit_is_one_operation(db, client, setup, active, job_runner):
    login(client, setup.user)
    page = client.get(f"/panel/services/{active.uuid}").get_data(as_text=True)
    rid = re.search(r'action/restart".*?name="request_id" value="([0-9a-f-]{36})"', page, re.S).group(1)
    for _ in range(2):
        client.post(f"/panel/services/{active.uuid}/action/restart", data={"request_id": rid})
    ops = db.session.scalars(db.select(jobs.Operation).filter_by(kind="service.restart")).all()
    assert len(ops) == 1


def test_retention_days_is_configurable(db, app, clock, setup, order):
    from hostbay.core import renewals

    app.config["HOSTBAY_RETENTION_DAYS"] = 1
    svc, _ = order()
    db.session.expire_all()
    svc = db.session.get(Service, svc.id)
    clock.set(svc.renews_at)
    renewals.renewal_sweep()
    clock.advance(hours=23)
    assert renewals.retention_sweep() == 0
    clock.advance(hours=1)
    assert renewals.retention_sweep() == 1
    db.session.expire_all()
    assert db.session.get(Service, svc.id).state == "terminated"


def test_customer_renews_early_from_the_page(db, client, setup, active):
    from hostbay.core import ledger

    ledger.credit(setup.user.id, 1000, kind="topup", key="early", description="Top-up")
    db.session.commit()
    old = active.renews_at
    login(client, setup.user)
    page = client.post(f"/panel/services/{active.uuid}/action/renew", follow_redirects=True).get_data(as_text=True)
    assert "Renewed until" in page and f"Renewal of {active.hostname}" in page  # shown in the activity log
    db.session.expire_all()
    assert db.session.get(Service, active.id).renews_at > old
    assert ledger.balance_cents(setup.user.id) == 0
    page = client.post(f"/panel/services/{active.uuid}/action/renew", follow_redirects=True).get_data(as_text=True)
    assert "Insufficient wallet balance" in page
