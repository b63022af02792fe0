"""A finished power operation says what happened: "Stopped", "Started", "Restarted" (not "100% Stopping"), in
the operation row and in what the customer's panel shows of it."""

import pytest

from hostbay.core import jobs
from hostbay.core.actions import request_action
from hostbay.testing.fakes import FakeVirtDriver
from hostbay.testing.pytest_plugin import login


@pytest.mark.parametrize("action, text, state", [("stop", "Stopped", "stopped"), ("start", "Started", "running"),
                                                 ("restart", "Restarted", "running")])
def test_a_finished_power_operation_says_what_happened(db, client, setup, order, job_runner, action, text, state):
    svc, _ = order()
    job_runner.run_all()
    db.session.refresh(svc)
    if action == "start":
        request_action(svc, "stop", setup.user)
        db.session.commit()
        job_runner.run_all()
        assert FakeVirtDriver.servers[svc.uuid]["state"].value == "stopped"
    op = request_action(svc, action, setup.user)
    db.session.commit()
    assert op.progress_text == "Queued"
    job_runner.run_all()
    db.session.refresh(op)
    assert op.kind == f"service.{action}"
    assert (op.state, op.progress_pct, op.progress_text) == (jobs.SUCCEEDED, 100, text)
    assert FakeVirtDriver.servers[svc.uuid]["state"].value == state
    login(client, setup.user)
    shown = client.get(f"/panel/services/{svc.uuid}/progress").get_json()["operations"]
    assert shown[0]["id"] == op.id and shown[0]["text"] == text and shown[0]["finished"]
    page = client.get(f"/panel/services/{svc.uuid}").get_data(as_text=True)
    assert f"{text}</span>" in page and f"100% {text}" not in page
