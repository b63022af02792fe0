"""Access rules of /api/v1, enumerated from the URL map so endpoints added later are covered:
customer B's token gets 404 for every one of customer A's UUIDs on every endpoint; a read token is refused every
write; each staff role is refused what its permissions exclude; no cookie authentication on /api/."""

import re

import pytest

from hostbay.core import jobs, payments, tickets
from hostbay.core.accounts import DEFAULT_ROLE_PERMISSIONS, add_ssh_key
from hostbay.core.db import db
from hostbay.testing.pytest_plugin import login

from .conftest import bearer

WRITE = ("POST", "PUT", "PATCH", "DELETE")
# valid bodies, so that what answers is the ownership check and not the validation
BODIES = {"quote_change": {"package": "x"}, "apply_change": {"package": "x", "quote": "x"}, "mount_iso": {"iso": "x"},
          "set_rdns": {"hostname": None}, "reply_ticket": {"body": "x"},
          "request_refund": {"amount_cents": 1, "reason": "x"}, "note_task": {"notes": "x"},
          "finish_task": {"outcome": "done"}}


def _api_rules(app, prefix="/api/v1/"):
    return [r for r in app.url_map.iter_rules() if r.rule.startswith(prefix)
            and r.endpoint.startswith(("api_customer.", "api_staff."))]


def _url(rule, values):
    url = rule.rule
    for arg in rule.arguments:
        url = re.sub(r"<(?:[a-z]+:)?%s>" % arg, values.get(arg, "x"), url)
    return url


@pytest.fixture
def tenant_a(app, make_user, make_package, make_service):
    import base64
    import os
    import struct

    a = make_user(balance_cents=5000)
    svc = make_service(a, make_package(), hostname="a-private.example.test", infra_ref={"fake": "x"})
    blob = struct.pack(">I", 11) + b"ssh-ed25519" + struct.pack(">I", 32) + os.urandom(32)
    key = add_ssh_key(a, "a-key", "ssh-ed25519 " + base64.b64encode(blob).decode())
    pay = payments.Payment(user_id=a.id, gateway="fake", amount_cents=1000, provider_ref="inv-a")
    ticket = tickets.open_ticket(a, "A's ticket", "private words", svc.uuid)
    op = jobs.Operation(key="a-op", kind="core.ping", service_id=svc.id, user_id=a.id, title="Ping")
    db.session.add_all([pay, op])
    db.session.commit()
    return {"user": a, "service_uuid": svc.uuid, "key_uuid": key.uuid, "payment_uuid": pay.uuid,
            "ticket_uuid": ticket.uuid, "operation_id": op.id}


def test_customer_b_gets_404_for_every_uuid_of_customer_a(app, client, make_user, make_token, tenant_a):
    b = make_user(balance_cents=5000)
    headers = bearer(make_token(b, "write"))
    owned = [r for r in _api_rules(app) if r.endpoint.startswith("api_customer.")
             and any(a.endswith(("uuid", "_id")) for a in r.arguments) and "package_uuid" not in r.arguments]
    values = {k: v for k, v in tenant_a.items() if k != "user"} | {"action": "start", "address": "192.0.2.1"}
    checked = []
    for rule in owned:
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            body = BODIES.get(rule.endpoint.split(".")[1], {})
            resp = client.open(_url(rule, values), method=method, json=body,
                               headers=headers | {"Idempotency-Key": f"k-{len(checked)}"})
            assert resp.status_code == 404, (method, rule.rule, resp.status_code, resp.data)
            assert resp.mimetype == "application/problem+json"
            assert resp.get_json()["type"].endswith("/not-found")
            assert b"a-private" not in resp.data
            checked.append((method, rule.rule))
    assert len(checked) >= 16, checked
    # the owner reaches the same endpoints: the 404s come from ownership
    owner = bearer(make_token(tenant_a["user"], "read"))
    assert client.get(f"/api/v1/services/{tenant_a['service_uuid']}", headers=owner).status_code == 200
    assert client.get(f"/api/v1/tickets/{tenant_a['ticket_uuid']}", headers=owner).status_code == 200
    assert client.get(f"/api/v1/topups/{tenant_a['payment_uuid']}", headers=owner).status_code == 200
    assert client.get(f"/api/v1/services/{tenant_a['service_uuid']}/operations/{tenant_a['operation_id']}",
                      headers=owner).status_code == 200


def test_read_token_is_refused_every_write(app, client, make_user, make_token, tenant_a):
    headers = bearer(make_token(tenant_a["user"], "read"))
    values = {k: v for k, v in tenant_a.items() if k != "user"} | {"action": "start", "address": "192.0.2.1",
                                                                   "webhook_uuid": "x", "delivery_uuid": "x",
                                                                   "customer_uuid": "x", "pool_uuid": "x"}
    n = 0
    for rule in _api_rules(app):
        for method in sorted(set(rule.methods) & set(WRITE)):
            resp = client.open(_url(rule, values), method=method, headers=headers, json={})
            assert resp.status_code == 403, (method, rule.rule, resp.status_code)
            assert resp.get_json()["type"].endswith("/insufficient-scope")
            n += 1
    assert n >= 18
    # nothing changed: the service was not started, no key deleted
    assert jobs.Operation.query.filter_by(kind="service.start").count() == 0


def test_each_staff_role_is_refused_what_its_permissions_exclude(app, client, make_user, make_token, tenant_a):
    from hostbay.web.api import staff as staff_api

    tokens = {role: bearer(make_token(make_user(role=role), "write")) for role in DEFAULT_ROLE_PERMISSIONS}
    tokens["customer"] = bearer(make_token(tenant_a["user"], "write"))
    values = {"service_uuid": tenant_a["service_uuid"], "customer_uuid": tenant_a["user"].uuid, "action": "stop",
              "operation_id": tenant_a["operation_id"], "pool_uuid": "x", "webhook_uuid": "x", "delivery_uuid": "x"}
    refused = allowed_checked = 0
    for rule in _api_rules(app, "/api/v1/staff/"):
        view = app.view_functions[rule.endpoint]
        perms = getattr(view, "_hostbay_permission", None)
        assert perms is not None, f"{rule.rule} has no staff_required"
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            for role, headers in tokens.items():
                ok = role != "customer" and (role == "admin" or any(p in DEFAULT_ROLE_PERMISSIONS[role] for p in perms))
                resp = client.open(_url(rule, values), method=method, headers=headers,
                                   json=BODIES.get(rule.endpoint.split(".")[1], {}))
                if not ok:
                    assert resp.status_code == 403, (role, method, rule.rule, resp.status_code)
                    slug = "staff-only" if role == "customer" else "permission-denied"
                    assert resp.get_json()["type"].endswith("/" + slug), resp.get_json()
                    refused += 1
                else:
                    assert resp.status_code not in (401, 403), (role, method, rule.rule, resp.status_code)
                    allowed_checked += 1
    assert refused >= 30 and allowed_checked >= 20, (refused, allowed_checked)
    assert staff_api.STAFF_API_ACTIONS


def test_no_cookie_authentication_and_csrf_only_off_for_token_routes(app, make_user, make_token):
    """A logged-in browser session is not an API credential; the panel keeps its CSRF check."""
    app.config["WTF_CSRF_ENABLED"] = True
    user = make_user()
    c = app.test_client()
    app.config["WTF_CSRF_ENABLED"] = False
    login(c, user)
    app.config["WTF_CSRF_ENABLED"] = True
    assert c.get("/panel/").status_code == 200  # the session works on the panel
    resp = c.get("/api/v1/wallet")
    assert resp.status_code == 401 and resp.get_json()["type"].endswith("/unauthorized")
    assert c.post("/api/v1/ssh-keys", json={"name": "k", "public_key": "x"}).status_code == 401
    # the panel still refuses a POST without its CSRF token
    assert c.post("/panel/account/api-tokens", data={"name": "x"}).status_code == 400
    # with a token (and no CSRF token) the API accepts the write
    raw = make_token(user, "write")
    resp = app.test_client().post("/api/v1/tickets", headers=bearer(raw), json={"subject": "s", "body": "b"})
    assert resp.status_code == 201, resp.data
    assert "Set-Cookie" not in resp.headers


def test_customer_b_gets_404_for_customer_as_uuids_in_the_body(app, client, make_user, make_token, make_package,
                                                               make_image, make_iso, active_service, tenant_a):
    """UUIDs in a request body go through the same ownership lookups: A's SSH key in B's order, A's ISO in B's
    mount, A's service in B's new ticket are 404s, and nothing is created or charged."""
    from sqlalchemy import func, select

    from hostbay.core import iso as iso_mod
    from hostbay.core import ledger
    from hostbay.core.services import Service

    b = make_user(balance_cents=5000)
    h = bearer(make_token(b, "write"))
    a_iso = iso_mod.upload_bytes(tenant_a["user"], make_iso(), "a-private.iso")
    db.session.commit()
    iso_mod.decide(a_iso, True, make_user(role="support"))
    db.session.commit()
    b_service = active_service(b)
    pkg, img = make_package(monthly_cents=1000), make_image()

    def count(model, **where):
        return db.session.scalar(select(func.count()).select_from(model).filter_by(**where))

    order = client.post("/api/v1/orders", headers=h | {"Idempotency-Key": "b-order"},
                        json={"package": pkg.uuid, "cycle": "monthly", "hostname": "b1.example.test",
                              "image": img.uuid, "ssh_keys": [tenant_a["key_uuid"]]})
    mount = client.put(f"/api/v1/services/{b_service.uuid}/iso", headers=h, json={"iso": a_iso.uuid})
    ticket = client.post("/api/v1/tickets", headers=h,
                         json={"subject": "x", "body": "x", "service": tenant_a["service_uuid"]})
    for resp in (order, mount, ticket):
        assert resp.status_code == 404, (resp.request.path, resp.status_code, resp.data)
        assert resp.mimetype == "application/problem+json" and resp.get_json()["type"].endswith("/not-found")
        assert b"a-private" not in resp.data and b"a-key" not in resp.data
    assert ledger.balance_cents(b.id) == 5000 and db.session.scalars(ledger.entries_for(b.id)).all()[0].kind != "order"
    assert count(Service, user_id=b.id) == 1  # only the one made above
    assert count(iso_mod.IsoMount) == 0 and count(jobs.Operation, kind="service.mount_iso") == 0
    assert count(tickets.Ticket, user_id=b.id) == 0
    # the same bodies with B's own objects succeed: the 404s come from ownership
    own_iso = iso_mod.upload_bytes(b, make_iso(), "b.iso")
    db.session.commit()
    iso_mod.decide(own_iso, True, make_user(role="support"))
    db.session.commit()
    assert client.put(f"/api/v1/services/{b_service.uuid}/iso", headers=h,
                      json={"iso": own_iso.uuid}).status_code == 202
    assert client.post("/api/v1/tickets", headers=h, json={"subject": "x", "body": "x",
                                                           "service": b_service.uuid}).status_code == 201


def test_a_custom_role_with_one_permission_reaches_only_its_area(app, client, make_user, make_token, tenant_a):
    """A role made through the roles model (core.staff_roles) with only ``plugins.webhooks``: it registers, lists
    and deletes webhooks; every other staff endpoint is 403 ``permission-denied`` and changes nothing."""
    from hostbay.core import billing, staff_roles, webhooks

    staff_roles.save_role("hook-desk", "Webhook desk", ["plugins.webhooks"], make_user(role="admin"))
    db.session.commit()
    member = make_user(role="hook-desk")
    assert member.is_staff and member.can("plugins.webhooks") and not member.can("plugins.nodes")
    h = bearer(make_token(member, "write"))
    created = client.post("/api/v1/staff/webhooks", headers=h,
                          json={"url": "http://127.0.0.1:9/hook", "events": ["wallet.credited"]})
    assert created.status_code == 201, created.data
    hook = created.get_json()["uuid"]
    assert [w["uuid"] for w in client.get("/api/v1/staff/webhooks", headers=h).get_json()] == [hook]
    assert client.get(f"/api/v1/staff/webhooks/{hook}/deliveries", headers=h).status_code == 200

    req = billing.request_refund(tenant_a["user"], 1000, "Moving away")
    db.session.commit()
    values = {"service_uuid": tenant_a["service_uuid"], "customer_uuid": tenant_a["user"].uuid, "action": "stop",
              "operation_id": tenant_a["operation_id"], "pool_uuid": "x", "refund_uuid": req.uuid}
    refused = []
    for rule in _api_rules(app, "/api/v1/staff/"):
        perms = app.view_functions[rule.endpoint]._hostbay_permission
        if "plugins.webhooks" in perms:
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            body = BODIES.get(rule.endpoint.split(".")[1], {})
            if rule.endpoint == "api_staff.decide_refund":
                body = {"decision": "approve", "external_reference": "tx-9"}
            resp = client.open(_url(rule, values), method=method, headers=h, json=body)
            assert resp.status_code == 403, (method, rule.rule, resp.status_code)
            assert resp.get_json()["type"].endswith("/permission-denied")
            refused.append((method, rule.rule))
    assert len(refused) >= 20, refused  # 23 today: every staff route outside the webhooks area
    assert ("POST", "/api/v1/staff/queues/refunds/<refund_uuid>") in refused
    # the refused calls changed nothing: the refund is pending, the customer's service was not stopped
    db.session.refresh(req)
    assert req.state == "pending"
    assert jobs.Operation.query.filter_by(kind="service.stop").count() == 0
    assert client.delete(f"/api/v1/staff/webhooks/{hook}", headers=h).status_code == 204
    db.session.expire_all()
    assert db.session.scalar(db.select(webhooks.WebhookEndpoint.active).filter_by(uuid=hook)) is False
    assert client.get("/api/v1/staff/webhooks", headers=h).get_json() == []
