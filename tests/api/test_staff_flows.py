"""Staff endpoints do what the staff pages do, through the same functions: suspend and unsuspend with the staff
rules of services.ACTIONS, retry a failed operation, the audit trail, queues and customers."""

from hostbay.core import iso, jobs
from hostbay.core.db import db

from .conftest import bearer


def test_support_suspends_retries_and_reads_the_audit(app, client, make_user, make_token, make_package,
                                                      make_service):
    app.config["HOSTBAY_JOBS"] = "manual"
    support = make_user(role="support")
    h = bearer(make_token(support))
    customer = make_user()
    svc = make_service(customer, make_package(), hostname="c1.example.test")
    listed = client.get("/api/v1/staff/services", headers=h).get_json()
    assert [s["uuid"] for s in listed["items"]] == [svc.uuid] and listed["items"][0]["customer"] == customer.uuid
    resp = client.post(f"/api/v1/staff/services/{svc.uuid}/actions/suspend", headers=h, json={"reason": "abuse"})
    assert resp.status_code == 200, resp.data
    assert resp.get_json()["service"]["state"] == "suspended"
    assert "unsuspend" in resp.get_json()["service"]["actions"]
    again = client.post(f"/api/v1/staff/services/{svc.uuid}/actions/suspend", headers=h, json={})
    assert again.status_code == 409 and again.get_json()["type"].endswith("/action-not-allowed")
    # a failed operation, retried through the API
    op = jobs.enqueue("no.such.kind", key="f1", service=svc, title="Broken", max_attempts=1)
    db.session.commit()
    jobs.run_pending()
    failed = client.get("/api/v1/staff/operations/failed", headers=h).get_json()
    assert [o["id"] for o in failed["items"]] == [op.id] and failed["items"][0]["service"] == svc.uuid
    retried = client.post(f"/api/v1/staff/operations/{op.id}/retry", headers=h)
    assert retried.status_code == 202 and retried.get_json()["state"] == "queued"
    assert client.post(f"/api/v1/staff/operations/{op.id}/retry", headers=h).status_code == 409
    trail = client.get(f"/api/v1/staff/audit?target_id={svc.uuid}", headers=h).get_json()
    assert "service.suspended" in [a["action"] for a in trail["items"]]
    assert any(a["actor"] == support.uuid for a in trail["items"])
    custs = client.get("/api/v1/staff/customers?q=" + customer.email.split("@")[0], headers=h).get_json()
    assert [c["uuid"] for c in custs["items"]] == [customer.uuid]


def test_approvals_queue_lists_pending_isos(app, client, make_user, make_token):
    customer = make_user()
    pending = iso.upload_bytes(customer, b"\0" * 32768 + b"\x01CD001" + b"\0" * 4096, "rescue.iso")
    db.session.commit()
    h = bearer(make_token(make_user(role="support"), "read"))
    q = client.get("/api/v1/staff/queues/approvals", headers=h).get_json()
    assert [(e["type"], e["uuid"], e["customer"]) for e in q] == [("iso", pending.uuid, customer.uuid)]


def test_datacenter_queue_lists_open_datacenter_tasks_not_operations(app, client, make_user, make_token,
                                                                      make_package, make_service):
    from hostbay.core import dctasks
    from hostbay.core.inventory import HardwareServer

    app.config["HOSTBAY_JOBS"] = "manual"
    customer = make_user()
    dedicated = make_service(customer, make_package(kind="dedicated", driver="fake"), hostname="metal.example.test")
    jobs.enqueue("service.restart", key="dc1", service=dedicated, title="Restart server")  # an operation, no task
    server = HardwareServer(name="fra1-r1-u01", cpu_model="x", cpu_cores=8, ram_gib=32, disk_size_gib=500,
                            location="fra1", rack="R1", rack_position="U01", service_id=dedicated.id)
    db.session.add(server)
    db.session.flush()
    task = dctasks.create(dctasks.INSTALL_OS, server, service=dedicated, params={"image": "Debian 12"})
    done = dctasks.create(dctasks.WIPE, server)
    dctasks.finish(done, make_user(role="admin"), ok=True)
    db.session.commit()
    h = bearer(make_token(make_user(role="support"), "read"))
    q = client.get("/api/v1/staff/queues/datacenter", headers=h).get_json()
    assert [(t["uuid"], t["service"], t["kind"], t["requested_by_type"]) for t in q["items"]] == \
        [(task.uuid, dedicated.uuid, "install_os", "system")]


def test_idempotency_keys_are_purged_after_a_week(app, clock, make_user):
    from datetime import timedelta

    from hostbay.core import idempotency

    user = make_user()
    assert idempotency.begin(user.id, "old", "f" * 64) is None
    idempotency.finish(user.id, "old", 201, "{}")
    clock.advance(days=idempotency.KEEP_DAYS, seconds=1)
    assert idempotency.begin(user.id, "new", "f" * 64) is None
    assert (idempotency.PURGE_KIND, 3600) in app.extensions["hostbay"].collect("hostbay_scheduled_jobs")
    op = jobs.enqueue(idempotency.PURGE_KIND, key="purge-test")
    db.session.commit()
    jobs.run_pending()
    db.session.refresh(op)
    assert op.result == {"purged": 1}
    assert idempotency.purge(clock.now() + timedelta(days=1)) == 1  # the new one is still there until then


def test_staff_decide_approvals_and_refunds(app, client, make_user, make_token):
    from hostbay.core import billing, ledger

    customer = make_user(balance_cents=5000)
    pending = iso.upload_bytes(customer, b"\0" * 32768 + b"\x01CD001" + b"\0" * 4096, "rescue.iso")
    db.session.commit()
    support = bearer(make_token(make_user(role="support")))
    no_note = client.post(f"/api/v1/staff/queues/approvals/iso/{pending.uuid}", headers=support,
                          json={"decision": "reject"})
    assert no_note.status_code == 400 and "reason" in no_note.get_json()["detail"]
    ok = client.post(f"/api/v1/staff/queues/approvals/iso/{pending.uuid}", headers=support,
                     json={"decision": "approve"})
    assert ok.status_code == 200 and ok.get_json()["state"] == "approved"
    assert client.get("/api/v1/staff/queues/approvals", headers=support).get_json() == []
    req = billing.request_refund(customer, 2000, "Moving away")
    money = bearer(make_token(make_user(role="billing")))
    assert client.post(f"/api/v1/staff/queues/refunds/{req.uuid}", headers=support,
                       json={"decision": "approve"}).status_code == 403  # support has no money permission
    resp = client.post(f"/api/v1/staff/queues/refunds/{req.uuid}", headers=money,
                       json={"decision": "approve", "external_reference": "tx-123"})
    assert resp.status_code == 200, resp.data
    assert resp.get_json()["state"] != "pending"
    assert ledger.balance_cents(customer.id) == 3000 == ledger.ledger_sum_cents(customer.id)
