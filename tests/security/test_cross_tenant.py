"""Customer B requesting any customer route that takes a UUID, with customer A's UUIDs, gets 404.

The routes are enumerated from app.url_map (every rule under /panel/ with a ``uuid`` argument, every method), and
the UUIDs are every public UUID in the database that does not belong to B, so routes and models added later are
covered without changing this test.
"""

from sqlalchemy import inspect, select

from hostbay.core import credentials
from hostbay.core import tickets as tk
from hostbay.core.accounts import SSHKey, add_ssh_key
from hostbay.core.db import db as database
from hostbay.testing.pytest_plugin import login

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl a@host")


def _customer_uuid_rules(app):
    return [r for r in app.url_map.iter_rules() if r.rule.startswith("/panel/") and "uuid" in r.arguments]


def _all_public_uuids(exclude: set[str]) -> dict[str, str]:
    """Every value of a ``uuid`` column in every mapped table, minus ``exclude``: {uuid: table}."""
    found = {}
    for mapper in database.Model.registry.mappers:
        cls = mapper.class_
        if "uuid" not in inspect(cls).columns:
            continue
        for value in database.session.scalars(select(cls.uuid)):
            if value not in exclude:
                found[value] = cls.__tablename__
    return found


def _populate_a(make_user, make_package, make_service):
    a = make_user("a@example.test")
    svc = make_service(a, make_package(), hostname="a-server.example.test")
    make_service(a, make_package(kind="dedicated"), state="suspended")
    add_ssh_key(a, "a-key", KEY)
    token, _raw = credentials.create_api_token(a, "a-token")
    ticket = tk.open_ticket(a, "A's question", "private words", svc.uuid)
    database.session.commit()
    return a, svc, ticket, token


def test_customer_b_gets_404_for_every_uuid_route_of_a(app, db, make_user, make_package, make_service,
                                                        url_for_rule):
    a, svc, ticket, token = _populate_a(make_user, make_package, make_service)
    b = make_user("b@example.test")
    uuids = _all_public_uuids(exclude={b.uuid})
    assert {svc.uuid, ticket.uuid, token.uuid, a.uuid} <= set(uuids)

    rules = _customer_uuid_rules(app)
    assert {"/panel/tickets/<uuid>", "/panel/tickets/<uuid>/reply", "/panel/account/ssh-keys/<uuid>/delete",
            "/panel/account/api-tokens/<uuid>/revoke"} <= {r.rule for r in rules}

    client = app.test_client()
    login(client, b)
    checked = 0
    for rule in rules:
        for method in METHODS:
            if method not in rule.methods:
                continue
            for value, table in uuids.items():
                url = url_for_rule(rule, {"uuid": value})
                resp = client.open(url, method=method, data={"body": "hijack", "name": "x", "subject": "x",
                                                             "confirm": "x"})
                assert resp.status_code == 404, (method, rule.rule, table, resp.status_code)
                assert b"private words" not in resp.data and b"a-server.example.test" not in resp.data
                checked += 1
    assert checked >= len(rules) * len(uuids)

    # Nothing of A's changed.
    db.session.expire_all()
    assert db.session.get(tk.Ticket, ticket.id).status == tk.OPEN
    assert [m.body for m in db.session.get(tk.Ticket, ticket.id).messages] == ["private words"]
    assert db.session.scalar(select(SSHKey).filter_by(user_id=a.id)) is not None
    assert db.session.get(credentials.ApiToken, token.id).revoked_at is None


def test_owner_reaches_the_same_routes(app, db, make_user, make_package, make_service):
    """The 404s above come from ownership, not from broken routes: A gets its own pages."""
    a, svc, ticket, token = _populate_a(make_user, make_package, make_service)
    client = app.test_client()
    login(client, a)
    resp = client.get(f"/panel/tickets/{ticket.uuid}")
    assert resp.status_code == 200 and b"private words" in resp.data
    assert client.post(f"/panel/tickets/{ticket.uuid}/reply", data={"body": "more"}).status_code == 302
    assert client.post(f"/panel/account/api-tokens/{token.uuid}/revoke").status_code == 302
    key = db.session.scalar(select(SSHKey).filter_by(user_id=a.id))
    assert client.post(f"/panel/account/ssh-keys/{key.uuid}/delete").status_code == 302


def test_staff_ticket_pages_are_not_for_customers(app, make_user, make_package, make_service):
    a, _svc, ticket, _token = _populate_a(make_user, make_package, make_service)
    client = app.test_client()
    login(client, a)  # even the ticket's own customer
    for method, path in (("GET", f"/staff/tickets/{ticket.uuid}"), ("POST", f"/staff/tickets/{ticket.uuid}/reply"),
                         ("POST", f"/staff/tickets/{ticket.uuid}/close"), ("GET", "/staff/tickets/")):
        assert client.open(path, method=method, data={"body": "x"}).status_code == 404, path
