"""Staff force actions and moving a service to another node, on the real app and database with the fake driver:
each through the staff page with its confirmation, the state table, an audit entry with before/after, and what
the customer is told; and the panel's power rule on the staff page and the staff API."""

from datetime import timedelta

import pytest
from sqlalchemy import select

from hostbay.core import clock as clock_mod
from hostbay.core import ipam, jobs
from hostbay.core.activity import ActivityEntry, AuditEntry
from hostbay.core.catalog import Node, add_cycle
from hostbay.core.db import db
from hostbay.core.ipam_models import addresses_for
from hostbay.core.placement import NodeReservation
from hostbay.core.power import PowerReading
from hostbay.core.services import Service
from hostbay.testing.fakes import FakeVirtDriver
from hostbay.testing.pytest_plugin import login


@pytest.fixture
def world(make_user, make_package, make_node, make_image):
    class W:
        pass

    w = W()
    w.customer = make_user()
    w.package = make_package(vcpus=2, memory_mib=1024, disk_gib=20)
    # node a has more free memory: placement picks it first
    w.a = make_node(name="fake-a", settings={"host": "host-a"}, vcpus=8, memory_mib=8192, disk_gib=200)
    w.b = make_node(name="fake-b", settings={"host": "host-b"}, vcpus=8, memory_mib=4096, disk_gib=200)
    w.image = make_image()
    w.pool = ipam.create_pool(name="move-v4", cidr="198.51.100.0/24", gateway="198.51.100.1",
                              node_ids=[w.a.id, w.b.id])
    w.staff = make_user(role="admin")
    w.client = _client_for(w.staff)
    return w


def _client_for(user):
    from flask import current_app

    client = current_app.test_client()
    login(client, user)
    return client


def _provisioned(w, hostname="move.example.test") -> Service:
    now = clock_mod.now()
    svc = Service(user_id=w.customer.id, package_id=w.package.id, kind="vps", state="pending", cycle="monthly",
                  hostname=hostname, price_cents=1000, image_id=w.image.id, period_start=now,
                  renews_at=add_cycle(now, "monthly"))
    db.session.add(svc)
    db.session.flush()
    jobs.enqueue("service.provision", key=f"provision:{svc.uuid}", service=svc, title="Set up server")
    db.session.commit()
    db.session.refresh(svc)
    assert svc.state == "active" and svc.node_id == w.a.id
    return svc


def _audit(svc, action):
    return db.session.scalars(select(AuditEntry).where(AuditEntry.action == action,
                                                       AuditEntry.target_id == svc.uuid)
                              .order_by(AuditEntry.id)).all()


def _told(svc):
    return [a.message for a in db.session.scalars(select(ActivityEntry).where(ActivityEntry.service_id == svc.id)
                                                  .order_by(ActivityEntry.id))]


def _used(node_id):
    node = db.session.get(Node, node_id)
    db.session.refresh(node)
    return node.used_vcpus, node.used_memory_mib, node.used_disk_gib


# --- move --------------------------------------------------------------------------------------------------------

def test_staff_move_a_service_to_another_node(app, world, job_runner):
    w = world
    job_runner.app.config["HOSTBAY_JOBS"] = "sync"
    svc = _provisioned(w)
    address = addresses_for(svc)[0].address
    job_runner.app.config["HOSTBAY_JOBS"] = "manual"
    page = w.client.get(f"/staff/services/{svc.uuid}").get_data(as_text=True)
    assert "Move to another node" in page and "fake-b" in page
    refused = w.client.post(f"/staff/services/{svc.uuid}/move", data={"node": w.b.id, "confirm_hostname": "nope"},
                            follow_redirects=True)
    assert b"Type the hostname move.example.test to confirm" in refused.data
    resp = w.client.post(f"/staff/services/{svc.uuid}/move",
                         data={"node": w.b.id, "confirm_hostname": svc.hostname, "reason": "rebalance"})
    assert resp.status_code == 302
    db.session.expire_all()
    svc = db.session.get(Service, svc.id)
    assert svc.state == "moving"  # busy: the customer sees it, every action waits
    assert _used(w.b.id) == (2, 1024, 20) and _used(w.a.id) == (2, 1024, 20)  # the target's room is held
    cust = _client_for(w.customer)
    mine = cust.get(f"/panel/services/{svc.uuid}").get_data(as_text=True)
    assert "Moving to another host" in mine and "fake-b" not in mine and "fake-a" not in mine
    assert job_runner.run_all() >= 1
    db.session.expire_all()
    svc = db.session.get(Service, svc.id)
    assert svc.state == "active" and svc.node_id == w.b.id
    assert FakeVirtDriver.servers[svc.uuid]["host"] == "host-b"  # the infrastructure says so
    assert FakeVirtDriver({"host": "host-b"}).status(svc.infra_ref).value == "running"
    assert FakeVirtDriver({"host": "host-a"}).status(svc.infra_ref).value == "missing"
    assert _used(w.a.id) == (0, 0, 0) and _used(w.b.id) == (2, 1024, 20)
    assert db.session.get(NodeReservation, svc.id).node_id == w.b.id
    (done,) = _audit(svc, "service.moved")
    assert done.before["node"] == "fake-a" and done.after["node"] == "fake-b"
    (asked,) = _audit(svc, "service.move.requested")
    assert asked.actor_id == w.staff.id and asked.before == {"state": "active", "node": "fake-a"}
    assert asked.after["node"] == "fake-b" and asked.after["state"] == "moving" and asked.detail == "rebalance"
    told = _told(svc)
    assert any("was moved to another host" in m for m in told)
    assert not any("fake-a" in m or "fake-b" in m for m in told)
    assert addresses_for(svc)[0].address == address  # the same addresses
    # the customer's page now reads the state of the server on its new node
    assert "Moving" not in cust.get(f"/panel/services/{svc.uuid}").get_data(as_text=True)


def test_move_refuses_an_unsuitable_target(app, world, make_node):
    w = world
    svc = _provisioned(w)
    other_driver = make_node(name="kvm-x", driver="kvm", settings={})
    unserved = make_node(name="fake-c", settings={"host": "host-c"})  # the service's pool is bound to a and b
    small = make_node(name="fake-small", settings={"host": "host-s"}, vcpus=1, memory_mib=512, disk_gib=5)
    draining = make_node(name="fake-drain", settings={"host": "host-d"}, draining=True)
    disabled = make_node(name="fake-off", settings={"host": "host-o"}, enabled=False)
    w.pool.nodes = w.pool.nodes + [small, draining, disabled]
    db.session.commit()
    cases = {other_driver.id: "runs the kvm driver, not fake", unserved.id: "which does not serve fake-c",
             small.id: "lacks room", draining.id: "is draining", disabled.id: "is disabled for placement",
             w.a.id: "is on fake-a already"}
    for node_id, why in cases.items():
        resp = w.client.post(f"/staff/services/{svc.uuid}/move",
                             data={"node": node_id, "confirm_hostname": svc.hostname}, follow_redirects=True)
        assert why in resp.get_data(as_text=True), (node_id, why)
    db.session.expire_all()
    svc = db.session.get(Service, svc.id)
    assert svc.state == "active" and svc.node_id == w.a.id
    assert not db.session.scalars(select(jobs.Operation).where(jobs.Operation.kind == "service.move")).all()
    assert _used(w.b.id) == (0, 0, 0)
    page = w.client.get(f"/staff/services/{svc.uuid}").get_data(as_text=True)
    assert "fake-drain — fake-drain is draining" in page  # offered targets carry the reason they cannot take it


def test_move_is_refused_for_a_driver_without_the_capability(app, world, monkeypatch):
    w = world
    svc = _provisioned(w)
    monkeypatch.setattr(FakeVirtDriver, "capabilities", FakeVirtDriver.capabilities - {"move"})
    page = w.client.get(f"/staff/services/{svc.uuid}").get_data(as_text=True)
    assert "Move to another node" not in page
    resp = w.client.post(f"/staff/services/{svc.uuid}/move", data={"node": w.b.id, "confirm_hostname": svc.hostname},
                         follow_redirects=True)
    assert b"cannot move a server to another node" in resp.data
    db.session.expire_all()
    assert db.session.get(Service, svc.id).node_id == w.a.id


# --- force actions -----------------------------------------------------------------------------------------------

def _force(w, svc, action, typed=None, reason="test"):
    return w.client.post(f"/staff/services/{svc.uuid}/force/{action}",
                         data={"confirm_hostname": svc.hostname if typed is None else typed, "reason": reason},
                         follow_redirects=True)


def test_force_power_off_and_restart(app, world):
    w = world
    svc = _provisioned(w)
    page = w.client.get(f"/staff/services/{svc.uuid}").get_data(as_text=True)
    assert "Force actions" in page and "Force power off" in page and 'class="danger-zone"' in page
    resp = _force(w, svc, "force_stop", typed="wrong")
    assert b"Type the hostname" in resp.data
    assert FakeVirtDriver.servers[svc.uuid]["state"].value == "running"
    _force(w, svc, "force_stop")
    assert FakeVirtDriver.servers[svc.uuid]["state"].value == "stopped"
    (entry,) = _audit(svc, "service.force_stop")
    assert (entry.before["power"], entry.after["power"]) == ("running", "stopped")
    (asked,) = _audit(svc, "service.force_stop.requested")
    assert asked.actor_id == w.staff.id and asked.before["state"] == "active"
    assert any("powered off" in m and "forced" in m for m in _told(svc))
    # the page reads the new state and offers Start only; a second force power-off is refused for the state
    db.session.merge(PowerReading(service_id=svc.id, state="stopped", checked_at=clock_mod.now()))
    db.session.commit()
    again = _force(w, svc, "force_stop")
    assert b"The server is stopped already." in again.data
    _force(w, svc, "force_restart")
    assert FakeVirtDriver.servers[svc.uuid]["state"].value == "running"
    assert _audit(svc, "service.force_restart")[0].after["power"] == "running"


def test_force_suspend_a_stuck_service_gives_up_its_work(app, world):
    w = world
    svc = _provisioned(w)
    from hostbay.core.services import transition

    transition(svc, "reinstalling", expect="active")
    stuck = jobs.Operation(key=f"stuck:{svc.uuid}", kind="service.reinstall", service_id=svc.id,
                           user_id=svc.user_id, title="Reinstall", state=jobs.FAILED, error="boom")
    db.session.add(stuck)
    db.session.commit()
    page = w.client.get(f"/staff/services/{svc.uuid}").get_data(as_text=True)
    assert "Force suspend" in page and "Force power off" not in page  # what the state table allows
    _force(w, svc, "force_suspend")
    db.session.expire_all()
    svc = db.session.get(Service, svc.id)
    assert svc.state == "suspended" and svc.suspension_reason == "staff"
    assert db.session.get(jobs.Operation, stuck.id).state == "abandoned"
    assert FakeVirtDriver.servers[svc.uuid]["state"].value == "stopped"
    (entry,) = _audit(svc, "service.force_suspend")
    assert entry.before["state"] == "reinstalling" and entry.after["state"] == "suspended"
    assert entry.after["abandoned"] == [stuck.id]
    assert any("suspended by support staff" in m for m in _told(svc))
    # force unsuspend: active at once, then the server starts
    _force(w, svc, "force_unsuspend")
    db.session.expire_all()
    svc = db.session.get(Service, svc.id)
    assert svc.state == "active" and svc.suspension_reason is None
    assert FakeVirtDriver.servers[svc.uuid]["state"].value == "running"
    (lift,) = _audit(svc, "service.force_unsuspend")
    assert (lift.before["state"], lift.after["state"]) == ("suspended", "active")
    assert any("lifted the suspension" in m for m in _told(svc))


def test_force_terminate_removes_now_and_the_table_refuses_afterwards(app, world):
    w = world
    svc = _provisioned(w)
    w.client.post(f"/staff/services/{svc.uuid}/action/suspend", data={"reason": "abuse"})
    db.session.expire_all()
    assert db.session.get(Service, svc.id).state == "suspended"
    refused = _force(w, svc, "force_terminate", typed="")
    assert b"Type the hostname" in refused.data
    _force(w, svc, "force_terminate")
    db.session.expire_all()
    svc = db.session.get(Service, svc.id)
    assert svc.state == "terminated" and svc.uuid not in FakeVirtDriver.servers
    assert _used(w.a.id) == (0, 0, 0)
    (entry,) = _audit(svc, "service.force_terminate")
    assert (entry.before["state"], entry.after["state"]) == ("suspended", "removal_queued")
    assert any("being removed by support staff" in m for m in _told(svc))
    again = _force(w, svc, "force_terminate")
    assert b"This service has ended." in again.data


def test_mark_a_stuck_operation_failed(app, world):
    w = world
    svc = _provisioned(w)
    now = clock_mod.now()
    live = jobs.Operation(key=f"live:{svc.uuid}", kind="service.stop", service_id=svc.id, user_id=svc.user_id,
                          title="Stop server", state=jobs.RUNNING, heartbeat_at=jobs._utcnow())
    db.session.add(live)
    db.session.commit()
    resp = _force(w, svc, "mark_failed")
    assert b"is running on a live worker" in resp.data
    assert db.session.get(jobs.Operation, live.id).state == jobs.RUNNING
    live.heartbeat_at = jobs._utcnow() - timedelta(seconds=jobs.STALE_SECONDS + 60)
    db.session.commit()
    _force(w, svc, "mark_failed", reason="worker died")
    db.session.expire_all()
    op = db.session.get(jobs.Operation, live.id)
    assert op.state == jobs.FAILED and "worker died" in op.error
    assert op.customer_error == "Our staff stopped this task; it did not complete."
    (entry,) = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "operation.mark_failed")).all()
    assert (entry.before, entry.after) == ({"state": "running"}, {"state": "failed"})
    assert any("Stop server" in m and "did not complete" in m for m in _told(svc))
    assert now  # the frozen clock did not move


# --- the panel's power rule for staff ------------------------------------------------------------------------------

def test_staff_power_actions_follow_the_power_state(app, world):
    from hostbay.core import credentials

    w = world
    svc = _provisioned(w)
    page = w.client.get(f"/staff/services/{svc.uuid}").get_data(as_text=True)
    assert "/action/stop" in page and "/action/restart" in page and "/action/start" not in page
    resp = w.client.post(f"/staff/services/{svc.uuid}/action/start", follow_redirects=True)
    assert b"The server is running already." in resp.data
    assert not db.session.scalars(select(jobs.Operation).where(jobs.Operation.kind == "service.start")).all()
    _tok, token = credentials.create_api_token(w.staff, "test", scope="write")
    db.session.commit()
    headers = {"Authorization": f"Bearer {token}"}
    api = app.test_client()
    r = api.post(f"/api/v1/staff/services/{svc.uuid}/actions/start", headers=headers, json={})
    assert r.status_code == 409 and "running already" in r.get_json()["detail"]
    r = api.post(f"/api/v1/staff/services/{svc.uuid}/actions/stop", headers=headers, json={})
    assert r.status_code == 200
    assert FakeVirtDriver.servers[svc.uuid]["state"].value == "stopped"
    r = api.post(f"/api/v1/staff/services/{svc.uuid}/actions/stop", headers=headers, json={})
    assert r.status_code == 409 and "stopped" in r.get_json()["detail"]
    page = w.client.get(f"/staff/services/{svc.uuid}").get_data(as_text=True)
    assert "/action/start" in page and "/action/stop" not in page


def test_a_failed_move_is_retried_from_the_page_without_moving_twice(app, world, monkeypatch):
    """The driver moved the server, then a later step failed: the service stays moving (the customer is not told
    it was moved), and the staff retry finishes it without calling the driver's move again."""
    from hostbay.core import network
    from hostbay.core.errors import FatalDriverError

    w = world
    svc = _provisioned(w)
    moves, real_move, real_filter = [], FakeVirtDriver.move, network.apply_network_filter

    def counted(self, *args, **kw):
        moves.append(args[0])
        return real_move(self, *args, **kw)

    def fails_once(*args, **kw):
        monkeypatch.setattr(network, "apply_network_filter", real_filter)
        raise FatalDriverError("filter backend down")

    monkeypatch.setattr(FakeVirtDriver, "move", counted)
    monkeypatch.setattr(network, "apply_network_filter", fails_once)
    w.client.post(f"/staff/services/{svc.uuid}/move", data={"node": w.b.id, "confirm_hostname": svc.hostname})
    db.session.expire_all()
    svc = db.session.get(Service, svc.id)
    (op,) = db.session.scalars(select(jobs.Operation).where(jobs.Operation.kind == "service.move")).all()
    assert op.state == jobs.FAILED and svc.state == "moving" and svc.node_id == w.b.id
    assert not any("was moved" in m for m in _told(svc))
    assert "fake-b" in w.client.get(f"/staff/services/{svc.uuid}").get_data(as_text=True)
    w.client.post(f"/staff/services/{svc.uuid}/operations/{op.id}/retry")
    db.session.expire_all()
    svc = db.session.get(Service, svc.id)
    assert svc.state == "active" and svc.node_id == w.b.id and len(moves) == 1
    assert db.session.get(jobs.Operation, op.id).state == jobs.SUCCEEDED
    (done,) = _audit(svc, "service.moved")
    assert (done.before["node"], done.after["node"]) == ("fake-a", "fake-b")
    assert _used(w.a.id) == (0, 0, 0) and _used(w.b.id) == (2, 1024, 20)
