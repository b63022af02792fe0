"""Outgoing webhooks: a receiver on loopback gets each event once, verifies the HMAC-SHA256 signature over the raw
body, and gets the delivery again (through the job layer's retry) after it answered 500; staff can redeliver."""

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from hostbay.core import jobs, ledger
from hostbay.core.db import db
from hostbay.core.services import ACTIVE, PENDING, PROVISIONING, transition

from .conftest import bearer


class Receiver:
    def __init__(self, answers):
        self.answers = list(answers)  # status codes to answer, then 200
        self.got = []
        recv = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                recv.got.append((dict(self.headers), raw))
                code = recv.answers.pop(0) if recv.answers else 200
                self.send_response(code)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def verify(secret, headers, raw):
    expected = "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, headers["Hostbay-Signature"])


@pytest.fixture
def receiver():
    made = []

    def _make(answers=()):
        r = Receiver(answers)
        made.append(r)
        return r

    yield _make
    for r in made:
        r.close()


def _register(client, token, url, events):
    resp = client.post("/api/v1/staff/webhooks", headers=bearer(token), json={"url": url, "events": events})
    assert resp.status_code == 201, resp.data
    return resp.get_json()


def test_each_event_once_signed_and_redelivered_after_500(app, client, make_user, make_token, make_package,
                                                          make_service, receiver):
    app.config["HOSTBAY_JOBS"] = "manual"
    admin_token = make_token(make_user(role="admin"))
    recv = receiver(answers=[500])
    hook = _register(client, admin_token, recv.url, ["service.provisioned", "wallet.credited"])
    customer = make_user()
    # wallet credited: through the ledger, whose hook fires after commit
    ledger.credit(customer.id, 2500, kind="topup", key="t1", description="Top-up")
    db.session.commit()
    # service provisioned: the lifecycle's own event, reported twice (a re-run job) -> delivered once
    svc = make_service(customer, make_package(), state=PENDING)
    transition(svc, PROVISIONING)
    transition(svc, ACTIVE)
    db.session.commit()
    reg = app.extensions["hostbay"]
    reg.notify("hostbay_service_provisioned", service=svc)
    reg.notify("hostbay_service_provisioned", service=svc)
    jobs.run_pending()
    # first attempt of the first delivery answered 500: it waits for the job layer's retry (5 s back-off)
    retrying = db.session.scalars(db.select(jobs.Operation).filter_by(kind="webhook.deliver",
                                                                      state=jobs.RETRYING)).all()
    assert len(retrying) == 1
    time.sleep(jobs.RETRY_DELAYS[0] + 0.5)
    jobs.run_pending()
    bodies = [json.loads(raw) for _, raw in recv.got]
    assert len(recv.got) == 3, bodies  # 2 events + 1 redelivery after the 500
    for headers, raw in recv.got:
        assert verify(hook["secret"], headers, raw)
        assert not verify("wrong", headers, raw)
    ids = [b["id"] for b in bodies]
    assert sorted(set(ids)) == sorted({ids[0], ids[1]}) and ids.count(ids[0]) == 2  # the 500'd one came again
    types = sorted({b["type"] for b in bodies})
    assert types == ["service.provisioned", "wallet.credited"]
    prov = next(b for b in bodies if b["type"] == "service.provisioned")
    assert prov["data"]["service"]["uuid"] == svc.uuid
    credited = next(b for b in bodies if b["type"] == "wallet.credited")
    assert credited["data"]["entry"]["amount_cents"] == 2500
    # the delivery log shows it
    log = client.get(f"/api/v1/staff/webhooks/{hook['uuid']}/deliveries", headers=bearer(admin_token)).get_json()
    assert log["total"] == 2
    assert sorted(d["attempts"] for d in log["items"]) == [1, 2]
    assert {d["state"] for d in log["items"]} == {"delivered"}
    assert [a["status"] for a in max(log["items"], key=lambda d: d["attempts"])["attempt_log"]] == [500, 200]
    # staff redelivery: the same body again
    d = log["items"][0]
    resp = client.post(f"/api/v1/staff/webhooks/{hook['uuid']}/deliveries/{d['uuid']}/redeliver",
                       headers=bearer(admin_token))
    assert resp.status_code == 202, resp.data
    jobs.run_pending()
    assert len(recv.got) == 4 and recv.got[-1][1] == d["body"].encode()


def test_failed_operation_and_suspension_events(app, client, make_user, make_token, make_package, make_service,
                                                receiver):
    app.config["HOSTBAY_JOBS"] = "manual"
    admin_token = make_token(make_user(role="admin"))
    recv = receiver()
    _register(client, admin_token, recv.url, ["operation.failed", "service.suspended", "service.terminated"])
    customer = make_user()
    svc = make_service(customer, make_package())
    reg = app.extensions["hostbay"]
    op = jobs.enqueue("no.such.kind", key="boom", service=svc, title="Boom", max_attempts=1)
    db.session.commit()
    jobs.run_pending()  # no handler: fails for good -> hostbay_operation_failed
    reg.notify("hostbay_service_suspended", service=svc, reason="unpaid")
    reg.notify("hostbay_service_terminated", service=svc)
    jobs.run_pending()
    types = sorted(json.loads(raw)["type"] for _, raw in recv.got)
    assert types == ["operation.failed", "service.suspended", "service.terminated"], types
    failed = next(json.loads(raw) for _, raw in recv.got if b"operation.failed" in raw)
    assert failed["data"]["operation"]["id"] == op.id and failed["data"]["operation"]["service"] == svc.uuid


def test_private_addresses_are_refused_unless_allowed(app, client, make_user, make_token):
    app.config["HOSTBAY_WEBHOOK_ALLOW_PRIVATE"] = False
    token = make_token(make_user(role="admin"))
    resp = client.post("/api/v1/staff/webhooks", headers=bearer(token),
                       json={"url": "http://127.0.0.1:9/x", "events": ["wallet.credited"]})
    assert resp.status_code == 400 and "public address" in resp.get_json()["detail"]


def test_lifecycle_jobs_on_the_fake_driver_emit_the_service_events(app, client, make_user, make_token, make_node,
                                                                    make_package, make_image, receiver):
    """No event fired by hand: an order through the API is provisioned by its job on the fake driver, a staff
    suspension and a staff termination run theirs; the receiver gets service.provisioned, .suspended and
    .terminated once each, signed, in that order, each only after its job ran."""
    from hostbay.core import ipam
    from hostbay.testing import FakeVirtDriver

    app.config["HOSTBAY_JOBS"] = "manual"
    node = make_node(name="hv-hooks-1", vcpus=16, memory_mib=65536, disk_gib=1000)
    ipam.create_pool(name="hooks-v4", cidr="198.51.100.0/24", gateway="198.51.100.1", node_ids=[node.id])
    db.session.commit()
    admin_token = make_token(make_user(role="admin"))
    recv = receiver()
    hook = _register(client, admin_token, recv.url,
                     ["service.provisioned", "service.suspended", "service.terminated"])
    customer = make_user(balance_cents=5000)
    resp = client.post("/api/v1/orders", headers=bearer(make_token(customer)) | {"Idempotency-Key": "hook-o1"},
                       json={"package": make_package(monthly_cents=1000).uuid, "cycle": "monthly",
                             "hostname": "hooked.example.test", "image": make_image().uuid})
    assert resp.status_code == 201, resp.data
    uuid = resp.get_json()["uuid"]
    assert resp.get_json()["state"] in ("pending", "provisioning")
    assert recv.got == []  # nothing before the provisioning job ran

    def run_all():
        for _ in range(5):
            if not jobs.run_pending():
                break

    def types():
        return [json.loads(raw)["type"] for _, raw in recv.got]

    run_all()
    assert uuid in FakeVirtDriver.servers  # the fake driver made the server
    assert types() == ["service.provisioned"]
    staff = bearer(admin_token)
    sus = client.post(f"/api/v1/staff/services/{uuid}/actions/suspend", headers=staff, json={"reason": "abuse"})
    assert sus.status_code == 200, sus.data
    assert types() == ["service.provisioned"]  # the suspend job has not run yet
    run_all()
    assert types() == ["service.provisioned", "service.suspended"]
    term = client.post(f"/api/v1/staff/services/{uuid}/actions/terminate", headers=staff,
                       json={"confirm_hostname": "hooked.example.test"})
    assert term.status_code == 200, term.data
    run_all()
    assert types() == ["service.provisioned", "service.suspended", "service.terminated"]
    assert uuid not in FakeVirtDriver.servers  # the removal job deleted it
    bodies = [json.loads(raw) for _, raw in recv.got]
    assert len({b["id"] for b in bodies}) == 3
    for (headers, raw), body in zip(recv.got, bodies):
        assert verify(hook["secret"], headers, raw) and headers["Hostbay-Event"] == body["type"]
        assert body["data"]["service"]["uuid"] == uuid
    assert bodies[1]["data"]["service"]["state"] == "suspended"
    ops = {o.kind: o.state for o in db.session.scalars(db.select(jobs.Operation)
                                                       .filter(jobs.Operation.service_id.isnot(None)))}
    assert {k: ops.get(k) for k in ("service.provision", "service.suspend", "service.remove")} == \
        dict.fromkeys(("service.provision", "service.suspend", "service.remove"), "succeeded"), ops
