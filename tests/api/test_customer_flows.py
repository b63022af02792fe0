"""A customer's journey through the API on the fake driver with real jobs (sync mode): order, live power state,
actions with the panel's state rules, operations, package change quote and apply (the quoted amount is what the
wallet moves), SSH keys, tickets, activity; and no customer answer carries an infrastructure identifier or a row
id (the crawler's rule)."""

import base64
import json
import os
import re
import struct

import pytest

from hostbay.core import ipam, ledger
from hostbay.core.db import db
from hostbay.core.services import REINSTALLING

from .conftest import bearer

NODE = "hv-secret-node-17"
ROW_ID = re.compile(r'"(id|user_id|service_id|node_id|node|infra_ref|package_id|iso_id|address_id|pool_id|'
                    r'mount_id)":\s*\d')  # the answers are compact JSON: no space after the colon


@pytest.fixture
def world(app, make_user, make_package, make_node, make_image):
    node = make_node(name=NODE, vcpus=16, memory_mib=65536, disk_gib=1000, settings={"uri": "qemu+ssh://hv-7"})
    ipam.create_pool(name="api-v4", cidr="198.51.100.0/24", gateway="198.51.100.1", node_ids=[node.id])
    db.session.commit()
    small = make_package(slug="small", monthly_cents=1000, disk_gib=10)
    big = make_package(slug="big", monthly_cents=3000, disk_gib=40)
    tiny = make_package(slug="tiny", monthly_cents=500, disk_gib=5)
    return {"user": make_user(balance_cents=20000), "small": small, "big": big, "tiny": tiny,
            "image": make_image(), "node": node}


def _key():
    blob = struct.pack(">I", 11) + b"ssh-ed25519" + struct.pack(">I", 32) + os.urandom(32)
    return "ssh-ed25519 " + base64.b64encode(blob).decode()


def test_customer_journey(app, client, clock, make_token, world):
    h = bearer(make_token(world["user"]))
    key = client.post("/api/v1/ssh-keys", headers=h, json={"name": "laptop", "public_key": _key()})
    assert key.status_code == 201, key.data
    order = client.post("/api/v1/orders", headers=h | {"Idempotency-Key": "o1"},
                        json={"package": world["small"].uuid, "cycle": "monthly", "hostname": "web1.example.test",
                              "image": world["image"].uuid, "ssh_keys": [key.get_json()["uuid"]]})
    assert order.status_code == 201, order.data
    uuid = order.get_json()["uuid"]
    svc = client.get(f"/api/v1/services/{uuid}", headers=h).get_json()
    assert svc["state"] == "active" and {"start", "stop", "reinstall", "change_package"} <= set(svc["actions"])
    assert client.get(f"/api/v1/services/{uuid}/power", headers=h).get_json()["power"] == "running"
    stop = client.post(f"/api/v1/services/{uuid}/actions/stop", headers=h, json={})
    assert stop.status_code == 200 and stop.get_json()["operation"]["title"] == "Stop server"
    assert client.get(f"/api/v1/services/{uuid}/power", headers=h).get_json()["power"] == "stopped"
    ops = client.get(f"/api/v1/services/{uuid}/operations", headers=h).get_json()
    assert {o["title"] for o in ops["items"]} >= {"Set up server", "Stop server"}
    assert all(o["state"] == "succeeded" for o in ops["items"])
    assert client.post(f"/api/v1/services/{uuid}/actions/suspend", headers=h, json={}).status_code == 404

    # package change: the quote is what the wallet moves
    clock.advance(days=10)
    quotes = client.get(f"/api/v1/services/{uuid}/package-changes", headers=h).get_json()
    assert {q["package"] for q in quotes} == {world["big"].uuid, world["tiny"].uuid}
    quote = client.post(f"/api/v1/services/{uuid}/package-changes/quote", headers=h,
                        json={"package": world["big"].uuid}).get_json()
    assert quote["amount_cents"] > 0 and not quote["disk_shrinks"]
    before = ledger.balance_cents(world["user"].id)
    # without a quote, with another package's quote, or with one that has aged: nothing moves
    assert client.post(f"/api/v1/services/{uuid}/package-changes", headers=h | {"Idempotency-Key": "c0"},
                       json={"package": world["big"].uuid}).status_code == 422
    other = client.post(f"/api/v1/services/{uuid}/package-changes/quote", headers=h,
                        json={"package": world["tiny"].uuid}).get_json()
    wrong = client.post(f"/api/v1/services/{uuid}/package-changes", headers=h | {"Idempotency-Key": "c0b"},
                        json={"package": world["big"].uuid, "quote": other["quote"]})
    assert wrong.status_code == 409 and wrong.get_json()["type"].endswith("quote-expired")
    clock.advance(minutes=6)
    aged = client.post(f"/api/v1/services/{uuid}/package-changes", headers=h | {"Idempotency-Key": "c0c"},
                       json={"package": world["big"].uuid, "quote": quote["quote"]})
    assert aged.status_code == 409 and aged.get_json()["type"].endswith("quote-expired")
    assert ledger.balance_cents(world["user"].id) == before
    quote = client.post(f"/api/v1/services/{uuid}/package-changes/quote", headers=h,
                        json={"package": world["big"].uuid}).get_json()
    applied = client.post(f"/api/v1/services/{uuid}/package-changes", headers=h | {"Idempotency-Key": "c1"},
                          json={"package": world["big"].uuid, "quote": quote["quote"]})
    assert applied.status_code == 200, applied.data
    assert ledger.balance_cents(world["user"].id) == before - quote["amount_cents"]
    assert client.get(f"/api/v1/services/{uuid}", headers=h).get_json()["package"] == world["big"].uuid
    # a smaller disk needs the hostname as confirmation
    tiny = client.post(f"/api/v1/services/{uuid}/package-changes/quote", headers=h,
                       json={"package": world["tiny"].uuid}).get_json()
    shrink = client.post(f"/api/v1/services/{uuid}/package-changes", headers=h | {"Idempotency-Key": "c2"},
                         json={"package": world["tiny"].uuid, "quote": tiny["quote"]})
    assert shrink.status_code == 400 and "web1.example.test" in shrink.get_json()["detail"]
    ok = client.post(f"/api/v1/services/{uuid}/package-changes", headers=h | {"Idempotency-Key": "c3"},
                     json={"package": world["tiny"].uuid, "quote": tiny["quote"],
                           "confirm_hostname": "web1.example.test"})
    assert ok.status_code == 200, ok.data
    ledger_page = client.get("/api/v1/wallet/ledger", headers=h).get_json()
    assert [e["kind"] for e in ledger_page["items"]][:3] == ["downgrade_credit", "upgrade", "order"]

    # tickets and activity
    t = client.post("/api/v1/tickets", headers=h, json={"subject": "Help", "body": "Hello", "service": uuid})
    assert t.status_code == 201 and t.get_json()["service"] == uuid
    r = client.post(f"/api/v1/tickets/{t.get_json()['uuid']}/replies", headers=h, json={"body": "More"})
    assert [m["body"] for m in r.get_json()["messages"]] == ["Hello", "More"]
    act = client.get("/api/v1/activity?per_page=100", headers=h).get_json()
    assert any(a["event"] == "package_change" and a["service"] == uuid for a in act["items"])
    assert client.delete(f"/api/v1/ssh-keys/{key.get_json()['uuid']}", headers=h).status_code == 204
    assert client.get("/api/v1/ssh-keys", headers=h).get_json() == []


def test_busy_service_refuses_actions_with_the_panels_words(app, client, make_token, make_service, world):
    from hostbay.core.services import REFUSAL

    svc = make_service(world["user"], world["small"], state=REINSTALLING)
    h = bearer(make_token(world["user"]))
    assert client.get(f"/api/v1/services/{svc.uuid}", headers=h).get_json()["actions"] == []
    resp = client.post(f"/api/v1/services/{svc.uuid}/actions/start", headers=h, json={})
    assert resp.status_code == 409
    assert resp.get_json()["type"] == "/api/v1/problems/action-not-allowed"
    assert resp.get_json()["detail"] == REFUSAL[REINSTALLING]


def test_customer_answers_carry_no_infrastructure_or_row_ids(app, client, make_token, world):
    h = bearer(make_token(world["user"]))
    order = client.post("/api/v1/orders", headers=h | {"Idempotency-Key": "o1"},
                        json={"package": world["small"].uuid, "cycle": "monthly", "hostname": "web1.example.test",
                              "image": world["image"].uuid}).get_json()
    client.post("/api/v1/tickets", headers=h, json={"subject": "Help", "body": "Hello", "service": order["uuid"]})
    from hostbay.core.services import Service

    svc = db.session.scalar(db.select(Service).filter_by(uuid=order["uuid"]))
    secrets = [NODE, "qemu+ssh://hv-7", *[str(v) for v in (svc.infra_ref or {}).values() if v != svc.uuid]]
    assert len(secrets) >= 3  # the driver's domain name is among them
    values = {"service_uuid": order["uuid"], "package_uuid": world["small"].uuid}
    checked = 0
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith("api_customer.") or "GET" not in rule.methods:
            continue
        if set(rule.arguments) - set(values):
            continue
        url = rule.rule
        for arg in rule.arguments:
            url = re.sub(rf"<{arg}>", values[arg], url)
        resp = client.get(url, headers=h)
        assert resp.status_code == 200, (url, resp.status_code, resp.data)
        text = resp.get_data(as_text=True)
        for secret in secrets:
            assert secret not in text, (url, secret)
        assert not ROW_ID.search(text) and '"infra_ref"' not in text, (url, text)
        json.loads(text)
        checked += 1
    assert checked >= 14, checked


def _secrets(svc):
    return [NODE, "qemu+ssh://hv-7", *[str(v) for v in (svc.infra_ref or {}).values() if v != svc.uuid]]


def test_customer_write_answers_carry_no_infrastructure_or_row_ids(app, client, make_user, make_token, make_iso,
                                                                   world):
    """The crawler's rule for the answers of every POST, PUT, PATCH and DELETE of the customer API, each done
    successfully; the route list comes from the URL map, so a write endpoint added later must be added here."""
    from hostbay.core import iso as iso_mod
    from hostbay.core import payments
    from hostbay.core.rdns import DnsBackendConfig
    from hostbay.core.services import Service

    payments.save_gateway_config("fake", {}, True, make_user(role="admin"))
    db.session.add(DnsBackendConfig(driver="fake", label="In-memory DNS"))
    db.session.commit()
    h = bearer(make_token(world["user"]))
    seen = {}

    def call(endpoint, method, url, status, **kw):
        resp = client.open(url, method=method, headers=h | kw.pop("headers", {}), **kw)
        assert resp.status_code == status, (method, url, resp.status_code, resp.data)
        seen[(method, endpoint)] = resp.get_data(as_text=True)
        return resp.get_json() if resp.data else None

    key = call("add_key", "POST", "/api/v1/ssh-keys", 201, json={"name": "laptop", "public_key": _key()})
    svc_json = call("create_order", "POST", "/api/v1/orders", 201, headers={"Idempotency-Key": "w-o1"},
                    json={"package": world["small"].uuid, "cycle": "monthly", "hostname": "web1.example.test",
                          "image": world["image"].uuid, "ssh_keys": [key["uuid"]]})
    uuid = svc_json["uuid"]
    call("service_action", "POST", f"/api/v1/services/{uuid}/actions/stop", 200, json={})
    quote = call("quote_change", "POST", f"/api/v1/services/{uuid}/package-changes/quote", 200,
                 json={"package": world["big"].uuid})
    call("apply_change", "POST", f"/api/v1/services/{uuid}/package-changes", 200,
         headers={"Idempotency-Key": "w-c1"}, json={"package": world["big"].uuid, "quote": quote["quote"]})
    up = call("upload_iso", "POST", "/api/v1/isos?filename=rescue.iso", 201, data=make_iso(),
              headers={"Content-Type": "application/octet-stream"})
    iso_mod.decide(iso_mod.get_own(world["user"].id, up["uuid"]), True, make_user(role="support"))
    db.session.commit()
    call("mount_iso", "PUT", f"/api/v1/services/{uuid}/iso", 202, json={"iso": up["uuid"]})
    call("eject_iso", "DELETE", f"/api/v1/services/{uuid}/iso", 202)
    address = client.get(f"/api/v1/services/{uuid}/addresses", headers=h).get_json()[0]["address"]
    call("set_rdns", "PUT", f"/api/v1/services/{uuid}/addresses/{address}/rdns", 202,
         json={"hostname": "mail.example.test"})
    ticket = call("open_ticket", "POST", "/api/v1/tickets", 201,
                  json={"subject": "Help", "body": "Hi", "service": uuid})
    call("reply_ticket", "POST", f"/api/v1/tickets/{ticket['uuid']}/replies", 201, json={"body": "More"})
    call("create_topup", "POST", "/api/v1/topups", 201, headers={"Idempotency-Key": "w-t1"},
         json={"gateway": "fake", "amount_cents": 2500})
    call("request_refund", "POST", "/api/v1/refunds", 201, headers={"Idempotency-Key": "w-r1"},
         json={"amount_cents": 100, "reason": "leaving"})
    call("delete_key", "DELETE", f"/api/v1/ssh-keys/{key['uuid']}", 204)

    writes = {(m, r.endpoint.split(".", 1)[1]) for r in app.url_map.iter_rules()
              if r.endpoint.startswith("api_customer.") for m in r.methods & {"POST", "PUT", "PATCH", "DELETE"}}
    assert writes == set(seen), writes ^ set(seen)
    svc = db.session.scalar(db.select(Service).filter_by(uuid=uuid))
    secrets = _secrets(svc)
    assert len(secrets) >= 3
    for (method, endpoint), text in seen.items():
        for secret in secrets:
            assert secret not in text, (method, endpoint, secret)
        assert not ROW_ID.search(text) and '"infra_ref"' not in text, (method, endpoint, text)
    assert len(seen) >= 14 and len([t for t in seen.values() if t]) >= 13


def test_topup_through_the_api(app, client, make_user, make_token):
    from hostbay.core import payments

    payments.save_gateway_config("fake", {}, True, make_user(role="admin"))
    db.session.commit()
    user = make_user()
    h = bearer(make_token(user)) | {"Idempotency-Key": "t1"}
    resp = client.post("/api/v1/topups", headers=h, json={"gateway": "fake", "amount_cents": 2500})
    assert resp.status_code == 201, resp.data
    body = resp.get_json()
    assert body["status"] == "pending" and body["amount_cents"] == 2500 and "/test-gateway/pay/" in body["checkout_url"]
    again = client.post("/api/v1/topups", headers=h, json={"gateway": "fake", "amount_cents": 2500})
    assert again.get_json()["uuid"] == body["uuid"]
    assert db.session.scalar(db.select(db.func.count()).select_from(payments.Payment)) == 1
    got = client.get(f"/api/v1/topups/{body['uuid']}", headers=bearer(make_token(user, "read")))
    assert got.status_code == 200 and got.get_json()["uuid"] == body["uuid"]
