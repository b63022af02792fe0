"""The API states readiness honestly (core/readiness.py): while the guest of an image that reports readiness has
not phoned home, the service is `provisioning` and its set-up operation is running with the waiting text, never
"ready"; after the guest's report the operation succeeds and the service is active. No report in time: the
operation fails with the customer's message and the service stays `provisioning`."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from hostbay.core import credentials, jobs, readiness
from hostbay.testing.fakes import FakeVirtDriver

from .test_readiness import PHONE_HOME, _run_in_thread, _wait_for


@pytest.fixture
def reporting(db, setup):
    setup.image.reports_readiness = True
    db.session.commit()
    return setup


def _bearer(db, user):
    _tok, raw = credentials.create_api_token(user, "test", scope="read")
    db.session.commit()
    return {"Authorization": f"Bearer {raw}"}


def _get(db, client, url, h):
    db.session.commit()  # no transaction of the test's own is open while the worker runs (SQLite)
    body = client.get(url, headers=h).get_json()
    db.session.commit()
    return body


def test_api_shows_provisioning_until_the_guest_reports(app, db, reporting, order, job_runner, client):
    app.config["HOSTBAY_READY_TIMEOUT"] = 30
    svc, op = order()
    uuid, op_id = svc.uuid, op.id
    h = _bearer(db, reporting.user)
    thread, out = _run_in_thread(app, op_id)
    try:
        assert _wait_for(lambda: (FakeVirtDriver.servers.get(uuid) or {}).get("ready_url"))
        url = FakeVirtDriver.servers[uuid]["ready_url"]
        assert _wait_for(lambda: _get(db, client, f"/api/v1/services/{uuid}/operations/{op_id}", h)
                         ["progress_text"] == readiness.WAITING_TEXT)
        service = _get(db, client, f"/api/v1/services/{uuid}", h)
        assert service["state"] == "provisioning" and service["state_label"] == "Being set up"
        operation = _get(db, client, f"/api/v1/services/{uuid}/operations/{op_id}", h)
        assert operation["state"] == "running" and not operation["finished"]
        assert "ready" not in operation["progress_text"].lower()
        listed = _get(db, client, f"/api/v1/services/{uuid}/operations", h)["items"]
        assert [o["progress_text"] for o in listed] == [readiness.WAITING_TEXT]
        assert client.post(urlsplit(url).path, data=PHONE_HOME).status_code == 200
        thread.join(20)
        assert not thread.is_alive() and out["state"] == jobs.SUCCEEDED
    finally:
        thread.join(30)
    assert _get(db, client, f"/api/v1/services/{uuid}", h)["state"] == "active"
    done = _get(db, client, f"/api/v1/services/{uuid}/operations/{op_id}", h)
    assert done["state"] == "succeeded" and done["progress_text"] == "Your server is ready"


def test_api_shows_the_honest_failure_when_no_report_comes(app, db, reporting, order, job_runner, client):
    app.config["HOSTBAY_READY_TIMEOUT"] = 0.5
    svc, op = order()
    h = _bearer(db, reporting.user)
    job_runner.run_all()
    operation = _get(db, client, f"/api/v1/services/{svc.uuid}/operations/{op.id}", h)
    assert operation["state"] == "failed" and operation["error"] == readiness.CUSTOMER_MESSAGE["create"]
    assert "ready" not in operation["progress_text"].lower()
    assert _get(db, client, f"/api/v1/services/{svc.uuid}", h)["state"] == "provisioning"
