"""The API on the panel's rules: the power state of core.power (cached, with its age) and its "Start only when
stopped, Stop only when running" rule; the hostname typed as confirmation for destructive actions
(core.confirm); refund requests within the refundable balance (core.refunds); datacenter tasks (core.dctasks)
for staff with start / note / finish, the inventory without BMC passwords, and the customer-safe view of
datacenter work on the service."""

import pytest
from sqlalchemy import select

from hostbay.core import billing, dctasks, ipam, ledger
from hostbay.core.db import db
from hostbay.core.inventory import HardwareServer
from hostbay.core.services import Service

from .conftest import bearer


@pytest.fixture
def world(app, make_user, make_package, make_node, make_image):
    node = make_node(name="hv-wire-1", vcpus=16, memory_mib=65536, disk_gib=1000)
    ipam.create_pool(name="wire-v4", cidr="198.51.100.0/24", gateway="198.51.100.1", node_ids=[node.id])
    db.session.commit()
    return {"user": make_user(balance_cents=20000), "pkg": make_package(slug="small", monthly_cents=1000),
            "image": make_image()}


def _order(client, h, world, host="web1.example.test", key="o1"):
    resp = client.post("/api/v1/orders", headers=h | {"Idempotency-Key": key},
                       json={"package": world["pkg"].uuid, "cycle": "monthly", "hostname": host,
                             "image": world["image"].uuid})
    assert resp.status_code == 201, resp.data
    return resp.get_json()["uuid"]


def test_power_reading_with_age_and_the_panels_power_rule(app, client, clock, make_token, world):
    h = bearer(make_token(world["user"]))
    uuid = _order(client, h, world)
    p = client.get(f"/api/v1/services/{uuid}/power", headers=h).get_json()
    assert p["power"] == "running" and p["age_seconds"] == 0 and p["actions"] == ["restart", "stop"]
    clock.advance(seconds=20)  # the cached reading, with its age (as the panel shows it)
    again = client.get(f"/api/v1/services/{uuid}/power", headers=h).get_json()
    assert again["age_seconds"] == 20 and again["checked_at"] == p["checked_at"]
    start = client.post(f"/api/v1/services/{uuid}/actions/start", headers=h, json={})
    assert start.status_code == 409 and start.get_json()["type"].endswith("/action-not-allowed")
    assert start.get_json()["detail"] == "The server is running already."
    assert client.post(f"/api/v1/services/{uuid}/actions/stop", headers=h, json={}).status_code == 200
    p = client.get(f"/api/v1/services/{uuid}/power", headers=h).get_json()  # the action made the reading stale
    assert p["power"] == "stopped" and p["age_seconds"] == 0 and p["actions"] == ["start"]
    for refused in ("stop", "restart"):
        resp = client.post(f"/api/v1/services/{uuid}/actions/{refused}", headers=h, json={})
        assert resp.status_code == 409 and "start it instead" in resp.get_json()["detail"]
    assert client.post(f"/api/v1/services/{uuid}/actions/start", headers=h, json={}).status_code == 200
    assert client.get(f"/api/v1/services/{uuid}/power", headers=h).get_json()["power"] == "running"


def test_destructive_actions_need_the_hostname_typed(app, client, make_user, make_token, world):
    h = bearer(make_token(world["user"]))
    uuid = _order(client, h, world)
    for body in ({}, {"confirm_hostname": "other.example.test"}):
        resp = client.post(f"/api/v1/services/{uuid}/actions/reinstall", headers=h, json=body)
        assert resp.status_code == 400, resp.data
        problem = resp.get_json()
        assert problem["type"].endswith("/confirmation-required") and problem["action"] == "reinstall"
        assert "web1.example.test" in problem["detail"]
    now = client.post(f"/api/v1/services/{uuid}/actions/cancel", headers=h, json={"when": "now"})
    assert now.status_code == 400 and now.get_json()["action"] == "cancel_now"
    assert db.session.scalar(select(Service.state).filter_by(uuid=uuid)) == "active"  # nothing happened
    ok = client.post(f"/api/v1/services/{uuid}/actions/reinstall", headers=h,
                     json={"confirm_hostname": "WEB1.example.test."})
    assert ok.status_code == 200 and ok.get_json()["operation"]["title"]
    # cancelling at the end of the period destroys nothing and needs no confirmation
    end = client.post(f"/api/v1/services/{uuid}/actions/cancel", headers=h, json={"when": "end"})
    assert end.status_code == 200, end.data

    other = _order(client, h, world, host="web2.example.test", key="o2")
    staff = bearer(make_token(make_user(role="admin")))
    for action in ("terminate", "cancel"):
        resp = client.post(f"/api/v1/staff/services/{other}/actions/{action}", headers=staff,
                           json={"reason": "abuse"})
        assert resp.status_code == 400 and resp.get_json()["type"].endswith("/confirmation-required"), resp.data
    assert db.session.scalar(select(Service.state).filter_by(uuid=other)) == "active"
    done = client.post(f"/api/v1/staff/services/{other}/actions/terminate", headers=staff,
                       json={"reason": "abuse", "confirm_hostname": "web2.example.test"})
    assert done.status_code == 200, done.data
    assert done.get_json()["service"]["state"] not in ("active", "suspended")


def test_refund_requests_obey_the_refundable_balance(app, client, make_user, make_token):
    user, staff = make_user(balance_cents=3000), make_user(role="admin")  # a $30 top-up
    billing.bonus(user, 5000, staff, "Goodwill", key="bonus-1")  # wallet credit, never paid out
    db.session.commit()
    h = bearer(make_token(user))
    wallet = client.get("/api/v1/wallet", headers=h).get_json()
    assert wallet["balance_cents"] == 8000 and wallet["refundable_cents"] == 3000
    too_much = client.post("/api/v1/refunds", headers=h | {"Idempotency-Key": "r1"},
                           json={"amount_cents": 3001, "reason": "leaving"})
    assert too_much.status_code == 400 and "$30.00" in too_much.get_json()["detail"], too_much.data
    assert db.session.scalar(select(billing.RefundRequest.id)) is None
    ok = client.post("/api/v1/refunds", headers=h | {"Idempotency-Key": "r2"},
                     json={"amount_cents": 2000, "reason": "leaving", "payout_details": "IBAN DE00"})
    assert ok.status_code == 201 and ok.get_json()["state"] == "pending", ok.data
    assert [r["uuid"] for r in client.get("/api/v1/refunds", headers=h).get_json()] == [ok.get_json()["uuid"]]
    second = client.post("/api/v1/refunds", headers=h | {"Idempotency-Key": "r3"},
                         json={"amount_cents": 500, "reason": "more"})
    assert second.status_code == 400  # one pending request at a time
    # the customer spends the top-up meanwhile: approval through the API checks again
    ledger.debit(user.id, 1500, kind="renewal", key="spend", description="Renewal")
    db.session.commit()
    sh = bearer(make_token(staff))
    resp = client.post(f"/api/v1/staff/queues/refunds/{ok.get_json()['uuid']}", headers=sh,
                       json={"decision": "approve", "external_reference": "tx-1"})
    assert resp.status_code == 400 and "$15.00" in resp.get_json()["detail"], resp.data
    assert ledger.balance_cents(user.id) == 6500


def _server(**kw):
    values = dict(name="fra1-r7-u12", cpu_model="Xeon E-2388G", cpu_cores=8, ram_gib=64, disk_count=2,
                  disk_size_gib=480, disk_type="nvme", location="fra1", rack="R7", rack_position="U12",
                  bmc_host="127.0.0.1", bmc_username="ADMIN")
    values.update(kw)
    s = HardwareServer(**values)
    s.set_bmc_password("bmc-secret-pw")
    db.session.add(s)
    db.session.commit()
    return s


def test_staff_datacenter_tasks_inventory_and_the_customer_view(app, client, make_user, make_token,
                                                                 make_package, make_service):
    customer, staff = make_user(), make_user(role="support")
    svc = make_service(customer, make_package(kind="dedicated", driver="ipmi"), hostname="metal.example.test")
    server = _server(state="in_use", service_id=svc.id)
    spare = _server(name="ams1-r2-u03", location="ams1", rack="R2", rack_position="U03")
    task = dctasks.create(dctasks.POWER, server, service=svc, params={"action": "cycle"}, requested_by=customer)
    other = dctasks.create(dctasks.HARDWARE_SWAP, spare, requested_by=staff, notes="swap PSU")
    db.session.commit()
    sh = bearer(make_token(staff))
    q = client.get("/api/v1/staff/queues/datacenter", headers=sh).get_json()
    assert [t["uuid"] for t in q["items"]] == [task.uuid, other.uuid]
    first = q["items"][0]
    assert (first["location"], first["rack"], first["rack_position"], first["kind"], first["state"]) == \
        ("fra1", "R7", "U12", "power", "open")
    assert first["requested_by"] == customer.email and first["service"] == svc.uuid
    assert [t["uuid"] for t in client.get("/api/v1/staff/queues/datacenter?location=ams1",
                                          headers=sh).get_json()["items"]] == [other.uuid]

    started = client.post(f"/api/v1/staff/queues/datacenter/{task.uuid}/start", headers=sh,
                          json={"notes": "on my way"})
    assert started.status_code == 200 and started.get_json()["state"] == "in_progress", started.data
    assert client.post(f"/api/v1/staff/queues/datacenter/{task.uuid}/start", headers=sh,
                       json={}).status_code == 400  # no longer open
    noted = client.post(f"/api/v1/staff/queues/datacenter/{task.uuid}/notes", headers=sh,
                        json={"notes": "rack door jammed"})
    assert "rack door jammed" in noted.get_json()["notes"] and "on my way" in noted.get_json()["notes"]

    ch = bearer(make_token(customer, "read"))
    view = client.get(f"/api/v1/services/{svc.uuid}", headers=ch)
    assert view.get_json()["datacenter"][0]["status"] == "In progress at the datacenter"
    for secret in (b"fra1", b"R7", b"U12", b"rack door", b"on my way", task.uuid.encode()):
        assert secret not in view.data

    done = client.post(f"/api/v1/staff/queues/datacenter/{task.uuid}/finish", headers=sh,
                       json={"outcome": "done", "notes": "cycled by hand"})
    assert done.status_code == 200 and done.get_json()["state"] == "done", done.data
    failed = client.post(f"/api/v1/staff/queues/datacenter/{other.uuid}/finish", headers=sh,
                         json={"outcome": "failed"})
    assert failed.get_json()["state"] == "failed"
    assert client.get("/api/v1/staff/queues/datacenter", headers=sh).get_json()["items"] == []
    db.session.expire_all()
    assert db.session.get(dctasks.DatacenterTask, task.id).finished_at is not None
    view = client.get(f"/api/v1/services/{svc.uuid}", headers=ch).get_json()
    assert view["datacenter"][0] == {**view["datacenter"][0], "what": "Power cycle", "status": "Completed",
                                     "state": "done"}

    inv = client.get("/api/v1/staff/inventory", headers=sh)
    assert [s["name"] for s in inv.get_json()["items"]] == ["ams1-r2-u03", "fra1-r7-u12"]
    assert b"bmc-secret-pw" not in inv.data and b"sealed" not in inv.data
    one = client.get(f"/api/v1/staff/inventory/{server.uuid}", headers=sh)
    body = one.get_json()
    assert body["state"] == "in_use" and body["service"] == svc.uuid and body["ram_gib"] == 64
    assert body["has_bmc"] and b"bmc-secret-pw" not in one.data
    assert client.get("/api/v1/staff/inventory?state=available", headers=sh).get_json()["total"] == 1
    assert client.get(f"/api/v1/staff/inventory/{server.uuid}", headers=ch).status_code == 403
