"""The demo data shows a real status page: components, a probe of the panel itself (on loopback), a past incident
and an upcoming maintenance; loading it again adds nothing."""

import threading

import pytest
from sqlalchemy import func, select

from hostbay.core.db import db
from hostbay.core.demo import load_demo
from hostbay.plugins.status.models import Component, Incident, Maintenance, Probe, Sample
from hostbay.plugins.status.probes import sweep


@pytest.fixture
def served(app):
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    app.config["HOSTBAY_BASE_URL"] = f"http://127.0.0.1:{server.server_port}"
    yield app.config["HOSTBAY_BASE_URL"]
    server.shutdown()
    t.join(10)


def test_demo_status_page(app, client, served):
    lines = load_demo()
    assert any("/status" in line for line in lines)
    load_demo()  # idempotent
    assert db.session.scalar(select(func.count(Component.id))) == 3
    assert db.session.scalar(select(func.count(Incident.id))) == 1
    probe = db.session.scalar(select(Probe).filter_by(name="Panel health"))
    assert probe.url == served + "/healthz"
    assert sweep()["down"] == 0  # the panel answers its own probe on loopback
    assert db.session.scalar(select(Sample.ok).where(Sample.probe_id == probe.id)) is True
    page = client.get("/status").get_data(as_text=True)
    assert "Customer panel" in page and "Network switch upgrade" in page and "demo-node-1" not in page
    assert "Slow disk performance" in client.get("/status/history").get_data(as_text=True)
    up = client.get("/status/api/v2/scheduled-maintenances/upcoming.json").get_json()["scheduled_maintenances"]
    assert [m["name"] for m in up] == ["Network switch upgrade"]
    assert db.session.scalar(select(func.count(Maintenance.id))) == 1
