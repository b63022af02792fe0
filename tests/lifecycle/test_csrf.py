"""The service forms carry a CSRF token, and a post without it is refused."""
import re

import pytest

from hostbay.core.services import Service


@pytest.fixture
def app_config():
    return {"WTF_CSRF_ENABLED": True}


def _login(client, user):
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    resp = client.post("/login", data={"email": user.email, "password": "correct horse battery",
                                       "csrf_token": token})
    assert resp.status_code in (302, 303)


def test_action_needs_csrf_token(db, client, setup, order, job_runner):
    svc, _ = order()
    job_runner.run_all()
    _login(client, setup.user)
    assert client.post(f"/panel/services/{svc.uuid}/action/stop").status_code == 400
    page = client.get(f"/panel/services/{svc.uuid}").get_data(as_text=True)
    form = re.search(r'action="/panel/services/[^"]+/action/stop".*?name="csrf_token" value="([^"]+)"', page, re.S)
    resp = client.post(f"/panel/services/{svc.uuid}/action/stop", data={"csrf_token": form.group(1)})
    assert resp.status_code == 302
    job_runner.run_all()
    db.session.expire_all()
    assert db.session.get(Service, svc.id).state == "active"
    from hostbay.testing.fakes import FakeVirtDriver
    assert FakeVirtDriver.servers[svc.uuid]["state"].value == "stopped"
