"""The dashboard: every live service with status, main IP, package, renewal date and price; wallet; notices."""

from sqlalchemy import event

from hostbay.core import ipam
from hostbay.core.activity import log_activity
from hostbay.core.drivers import Address
from hostbay.core.hookspecs import hookimpl
from hostbay.core.services import Service
from hostbay.testing.pytest_plugin import login


def test_dashboard_lists_live_services(client, db, make_user, make_package, make_service, monkeypatch):
    user = make_user(balance_cents=4321)
    other = make_user()
    vps = make_package(name="Cloud S", monthly_cents=500)
    ded = make_package(name="Metal XL", kind="dedicated", monthly_cents=9900)
    s1 = make_service(user, vps, hostname="web.example.test")
    s2 = make_service(user, ded, state="suspended", hostname="db.example.test", cycle="annual")
    make_service(user, vps, state="terminated", hostname="gone.example.test")
    make_service(other, vps, hostname="not-mine.example.test")

    staff = make_user(role="admin")
    v6 = ipam.create_pool(name="v6", cidr="2001:db8::/48", prefix=64)
    ipam.take_ipv6(v6, s1.id)
    ipam.create_pool(name="v4", cidr="203.0.113.0/24", gateway="203.0.113.1")
    ipam.assign("203.0.113.9", s1.uuid, staff)
    ipam.assign("203.0.113.7", s1.uuid, staff)
    db.session.commit()
    login(client, user)
    page = client.get("/panel/").data.decode()
    assert "$43.21" in page
    for text in ("web.example.test", "Cloud S", "Active", "$5.00 / monthly", "203.0.113.7", "VPS",
                 "db.example.test", "Metal XL", "Suspended", "$1,188.00 / annual", "Dedicated",
                 s1.renews_at.strftime("%Y-%m-%d"), s2.renews_at.strftime("%Y-%m-%d")):
        assert text in page, text
    assert "gone.example.test" not in page and "not-mine" not in page
    assert "2001:db8" not in page and "203.0.113.9" not in page  # the main address is the first IPv4
    assert "/panel/activity" in page and "/panel/tickets" in page


def test_dashboard_notices_from_plugins(client, make_user, register_plugin):
    user = make_user()

    class Status:
        @hookimpl
        def hostbay_dashboard_notices(self, user):
            return [{"title": "Network maintenance", "text": "Tonight 02:00 UTC.", "level": "warning",
                     "url": "/status"},
                    {"title": "<b>Outage</b>", "level": "danger", "url": "javascript:alert(1)"}]

    class Broken:
        @hookimpl
        def hostbay_dashboard_notices(self, user):
            raise RuntimeError("boom")

    login(client, user)
    with register_plugin(Status(), "status-test"), register_plugin(Broken(), "broken-test"):
        page = client.get("/panel/")
    html = page.data.decode()
    assert page.status_code == 200
    assert "Network maintenance" in html and "Tonight 02:00 UTC." in html and 'href="/status"' in html
    assert "&lt;b&gt;Outage&lt;/b&gt;" in html and "javascript:" not in html
    assert html.index("Outage") < html.index("Network maintenance")  # danger first
    assert 'class="notice notice-danger" role="alert"' in html


def test_activity_page_shows_own_entries_paginated(client, db, make_user, make_package, make_service):
    user, other = make_user(), make_user()
    svc = make_service(user, make_package(), hostname="app.example.test")
    for i in range(55):
        log_activity(user.id, "restart", f"Server restarted #{i}.", svc.id)
    log_activity(other.id, "restart", "Someone else's restart.")
    db.session.commit()
    login(client, user)
    first = client.get("/panel/activity").data.decode()
    assert "Server restarted #54." in first and "Server restarted #5." in first and "#4." not in first
    assert "app.example.test" in first and f"/panel/services/{svc.uuid}" in first
    assert "Someone else" not in first and "Page 1 of 2" in first
    second = client.get("/panel/activity?page=2").data.decode()
    assert "Server restarted #0." in second and "#54." not in second
    assert client.get("/panel/activity?page=3").status_code == 404
    assert client.get("/panel/activity?page=x").status_code == 404


def _services(db, user, package, n):
    from hostbay.core.catalog import add_cycle
    from hostbay.core import clock

    now = clock.now()
    db.session.add_all(Service(user_id=user.id, package_id=package.id, kind=package.kind, state="active",
                               hostname=f"s{i}.example.test", cycle="monthly", price_cents=500,
                               period_start=now, renews_at=add_cycle(now, "monthly")) for i in range(n))
    db.session.commit()


def _count_dashboard_queries(app, client, db):
    statements = []

    def before(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", before)
    try:
        resp = client.get("/panel/")
    finally:
        event.remove(db.engine, "before_cursor_execute", before)
    assert resp.status_code == 200
    return resp, statements


def test_dashboard_query_count_does_not_grow_with_services(app, client, db, make_user, make_package):
    user = make_user(balance_cents=100)
    vps = make_package(name="Cloud S")
    ded = make_package(name="Metal", kind="dedicated")
    login(client, user)
    _services(db, user, vps, 3)
    _services(db, user, ded, 2)
    resp5, q5 = _count_dashboard_queries(app, client, db)
    assert resp5.data.count(b"<tr>") == 5 + 1
    _services(db, user, vps, 300)
    _services(db, user, ded, 195)
    resp500, q500 = _count_dashboard_queries(app, client, db)
    assert resp500.data.count(b"<tr>") == 500 + 1
    assert len(q5) == len(q500), (q5, q500)
    assert len(q5) <= 6, q5
