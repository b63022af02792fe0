"""The API reads a dedicated server's power state the panel's way (core.power through the server's BMC, here the
RMCP+ simulator on loopback) and applies the panel's power rule; a server without a BMC is `manual`: its power
actions go to the datacenter queue, and the customer sees that work only in plain words."""

from sqlalchemy import select

from hostbay.core import credentials
from hostbay.core.db import db as _db
from hostbay.core.dctasks import DatacenterTask
from hostbay.testing.pytest_plugin import login


def _bearer(user, scope="write"):
    _tok, raw = credentials.create_api_token(user, "test", scope=scope)
    _db.session.commit()
    return {"Authorization": f"Bearer {raw}"}


def test_api_and_panel_report_the_bmcs_power_state(db, app, client, sim, make_user, ded_package, add_server,
                                                   make_service):
    user = make_user()
    svc = make_service(user, ded_package(), hostname="metal.example.com")
    add_server(sim, state="in_use", service_id=svc.id)
    sim.control({})
    h = _bearer(user)
    p = client.get(f"/api/v1/services/{svc.uuid}/power", headers=h)
    assert p.status_code == 200, p.data
    body = p.get_json()
    expected = "running" if sim.state()["power"] == "on" else "stopped"
    assert body["power"] == expected and body["age_seconds"] == 0
    login(client, user)
    page = client.get(f"/panel/services/{svc.uuid}").get_data(as_text=True)
    assert f'data-power-state="{expected}"' in page
    if expected == "stopped":
        assert client.post(f"/api/v1/services/{svc.uuid}/actions/start", headers=h, json={}).status_code == 200
    refused = client.post(f"/api/v1/services/{svc.uuid}/actions/start", headers=h, json={})
    assert refused.status_code == 409 and refused.get_json()["detail"] == "The server is running already."
    stop = client.post(f"/api/v1/services/{svc.uuid}/actions/stop", headers=h, json={})
    assert stop.status_code == 200, stop.data
    assert sim.state()["power"] == "off"
    again = client.get(f"/api/v1/services/{svc.uuid}/power", headers=h).get_json()
    assert again["power"] == "stopped" and again["actions"] == ["start"]
    assert b"127.0.0.1" not in client.get(f"/api/v1/services/{svc.uuid}/power", headers=h).data


def test_without_a_bmc_power_is_manual_and_goes_to_the_datacenter(db, app, client, make_user, ded_package,
                                                                   add_server, make_service):
    user = make_user()
    svc = make_service(user, ded_package(), hostname="hand.example.com")
    add_server(state="in_use", service_id=svc.id)
    h = _bearer(user)
    body = client.get(f"/api/v1/services/{svc.uuid}/power", headers=h).get_json()
    assert body["power"] == "manual" and body["actions"] == ["restart", "start", "stop"]
    resp = client.post(f"/api/v1/services/{svc.uuid}/actions/restart", headers=h, json={})
    assert resp.status_code == 200, resp.data
    task = db.session.scalar(select(DatacenterTask).where(DatacenterTask.service_id == svc.id))
    assert task.kind == "power" and task.params == {"action": "cycle"} and task.state == "open"
    view = client.get(f"/api/v1/services/{svc.uuid}", headers=h)
    assert view.get_json()["datacenter"][0]["status"] == "Queued for datacenter handling"
    assert b"fra1" not in view.data and b"U01" not in view.data
