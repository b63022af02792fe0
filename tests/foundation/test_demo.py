"""The README's first command: the demo data lets the demo customer order a VPS that becomes active, with
progress shown, with in-process (thread) jobs as in the embedded default."""

import re
import time

import pytest

from hostbay.core.db import db
from hostbay.core.demo import DEMO_CUSTOMER, load_demo


@pytest.fixture
def app_config():
    return {"HOSTBAY_JOBS": "thread"}


def test_demo_customer_order_becomes_active(app, client):
    load_demo()
    load_demo()  # idempotent
    client.post("/login", data={"email": DEMO_CUSTOMER[0], "password": DEMO_CUSTOMER[1]})
    page = client.get("/panel/order").get_data(as_text=True)
    pkg = re.search(r"/panel/order/([0-9a-f-]{36})", page).group(1)
    page = client.get(f"/panel/order/{pkg}").get_data(as_text=True)
    image = re.search(r'<option value="([0-9a-f-]{36})"', page).group(1)
    form = {"cycle": "monthly", "hostname": "demo1.example.com", "image": image, "key": "demo-order-1"}
    resp = client.post(f"/panel/order/{pkg}/confirm", data=form)
    assert resp.status_code == 302, resp.get_data(as_text=True)[:500]
    db.session.rollback()
    uuid = re.search(r"/panel/services/([0-9a-f-]{36})", resp.headers["Location"]).group(1)
    seen, deadline = set(), time.time() + 60
    while time.time() < deadline:
        data = client.get(f"/panel/services/{uuid}/progress").json
        op = data["operations"][0]
        seen.add((op["pct"], op["text"]))
        assert op["state"] not in ("failed", "retrying"), op
        if data["state"] == "active":
            break
        db.session.rollback()  # the test's app context outlives requests: end its read transaction
        time.sleep(0.2)
    assert data["state"] == "active", data
    assert any(0 < pct < 100 for pct, _ in seen)  # progress was shown while it ran
    page = client.get(f"/panel/services/{uuid}").get_data(as_text=True)
    assert "192.0.2." in page and "demo-node-1" not in page


@pytest.fixture
def scheduled_app(app_config):
    app_config["HOSTBAY_IN_PROCESS_SCHEDULER"] = True
    return app_config


def test_thread_mode_schedules_renewals_in_process(scheduled_app, app, client, make_user, make_package,
                                                   make_service, clock):
    """Embedded mode has no worker: the panel process itself runs the renewal sweep."""
    from hostbay.core import jobs, ledger
    from hostbay.core.services import Service

    user = make_user(balance_cents=2000)
    svc = make_service(user, make_package(monthly_cents=1000))
    clock.set(svc.renews_at)
    assert client.get("/healthz").status_code == 200  # the first request starts the scheduler
    try:
        deadline, renewed = time.time() + 20, False
        while time.time() < deadline and not renewed:
            renewed = db.session.get(Service, svc.id).renews_at > clock.now()
            db.session.rollback()  # hold no transaction (SQLite: BEGIN IMMEDIATE takes the write lock) while waiting
            time.sleep(0.2)
        assert renewed
        assert ledger.balance_cents(user.id) == 1000
    finally:
        app.extensions["hostbay.scheduler"].set()
        deadline = time.time() + 20  # let the scheduled operations finish before the tables are emptied
        while time.time() < deadline and db.session.scalar(
                db.select(jobs.Operation.id).where(jobs.Operation.state.not_in(jobs.FINISHED)).limit(1)):
            db.session.rollback()
            time.sleep(0.2)
        db.session.rollback()
