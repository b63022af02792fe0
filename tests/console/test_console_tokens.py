"""Console tokens: single use, owner-bound, at most 60 s; ownership and state checked at issue and again at use."""

from __future__ import annotations

import re
import threading

import pytest
from sqlalchemy import select

from hostbay.core import console
from hostbay.core.activity import ActivityEntry
from hostbay.core.db import db
from hostbay.core.errors import ActionNotAllowed, NotFound
from hostbay.core.services import Service
from hostbay.testing.pytest_plugin import login


def test_issue_and_redeem_once(app, make_user, active_service):
    owner = make_user()
    service = active_service(owner)
    token = console.issue(owner, service)
    db.session.commit()
    row = db.session.scalar(select(console.ConsoleToken))
    assert token not in (row.token_hash,) and len(token) >= 40
    assert row.token_hash == console._hash(token) and row.user_id == owner.id and row.service_id == service.id
    assert (row.expires_at - row.created_at).total_seconds() == 60
    target = console.redeem(token)
    assert (target.host, target.port) == ("127.0.0.1", 5700)
    with pytest.raises(console.ConsoleRefused):  # reused
        console.redeem(token)
    with pytest.raises(console.ConsoleRefused):  # unknown
        console.redeem("not-a-token")
    # an issued or redeemed link is not an opened console: the proxy logs that once it has connected
    assert db.session.scalar(select(ActivityEntry.event).filter_by(service_id=service.id)) is None


def test_expired_token_is_refused(app, clock, make_user, active_service):
    owner = make_user()
    service = active_service(owner)
    fresh, stale = console.issue(owner, service), console.issue(owner, service)
    db.session.commit()
    clock.advance(seconds=59)
    assert console.redeem(fresh).port == 5700
    clock.advance(seconds=1)  # exactly 60 s: expired
    with pytest.raises(console.ConsoleRefused):
        console.redeem(stale)


def test_lifetime_is_capped_at_60_seconds(app, make_user, active_service):
    app.config["HOSTBAY_CONSOLE_TOKEN_SECONDS"] = 3600
    owner = make_user()
    service = active_service(owner)
    console.issue(owner, service)
    row = db.session.scalar(select(console.ConsoleToken))
    assert (row.expires_at - row.created_at).total_seconds() == 60


def test_another_users_service_is_refused_at_issue(app, make_user, active_service):
    owner, other = make_user(), make_user()
    service = active_service(owner)
    with pytest.raises(NotFound):
        console.issue(other, service)
    assert db.session.scalar(select(console.ConsoleToken)) is None


def test_suspended_service_is_refused_at_issue(app, make_user, active_service):
    owner = make_user()
    service = active_service(owner, state="suspended")
    with pytest.raises(ActionNotAllowed):
        console.issue(owner, service)


def test_ownership_checked_again_at_use(app, make_user, active_service):
    owner, buyer = make_user(), make_user()
    service = active_service(owner)
    token = console.issue(owner, service)
    db.session.commit()
    service.user_id = buyer.id  # the service changed hands after the token was issued
    db.session.commit()
    with pytest.raises(console.ConsoleRefused):
        console.redeem(token)


def test_state_and_account_checked_again_at_use(app, make_user, active_service):
    owner = make_user()
    service = active_service(owner)
    t1, t2 = console.issue(owner, service), console.issue(owner, service)
    db.session.commit()
    service.state = "suspended"
    db.session.commit()
    with pytest.raises(console.ConsoleRefused):
        console.redeem(t1)
    service.state = "active"
    owner.active = False
    db.session.commit()
    with pytest.raises(console.ConsoleRefused):
        console.redeem(t2)


def test_two_redeemers_cannot_both_win(app, make_user, active_service):
    owner = make_user()
    service = active_service(owner)
    token = console.issue(owner, service)
    db.session.commit()
    results, barrier = [], threading.Barrier(4)

    def worker():
        with app.app_context():
            barrier.wait()
            try:
                console.redeem(token)
                results.append("won")
            except console.ConsoleRefused:
                results.append("refused")
            finally:
                db.session.remove()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == ["refused", "refused", "refused", "won"]


def test_console_page_issues_a_token_for_the_owner_only(app, client, make_user, active_service):
    owner, other = make_user(), make_user()
    service = active_service(owner)
    login(client, other)
    assert client.get(f"/panel/services/{service.uuid}/console").status_code == 404
    assert client.post(f"/panel/services/{service.uuid}/console").status_code == 404
    assert db.session.scalar(select(console.ConsoleToken)) is None
    client.post("/logout")
    login(client, owner)
    assert client.get(f"/panel/services/{service.uuid}/console").status_code == 200
    resp = client.post(f"/panel/services/{service.uuid}/console")
    assert resp.status_code == 200 and resp.headers["Cache-Control"] == "no-store"
    html = resp.get_data(as_text=True)
    m = re.search(r'data-url="ws://127\.0\.0\.1:6080/\?token=([A-Za-z0-9_\-]+)"', html)
    assert m, html
    assert '<script type="module" src="/static/console.js">' in html and "<script>" not in html
    assert "node-secret-fra1" not in html and "fake-" not in html and "5700" not in html
    assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
    assert console.redeem(m.group(1)).port == 5700
    assert client.get("/static/console.js").status_code == 200


def test_console_page_refuses_suspended_service(app, client, make_user, active_service):
    owner = make_user()
    service = active_service(owner, state="suspended")
    login(client, owner)
    resp = client.post(f"/panel/services/{service.uuid}/console")
    assert resp.status_code == 409 and b"suspended" in resp.data and b"data-url" not in resp.data


def test_console_form_refuses_missing_csrf(app, client, make_user, active_service):
    owner = make_user()
    service = active_service(owner)
    login(client, owner)
    app.config["WTF_CSRF_ENABLED"] = True
    assert client.post(f"/panel/services/{service.uuid}/console").status_code == 400
    assert db.session.scalar(select(console.ConsoleToken)) is None


def test_purge_removes_old_tokens(app, clock, make_user, active_service):
    owner = make_user()
    service = active_service(owner)
    console.issue(owner, service)
    db.session.commit()
    clock.advance(hours=2)
    assert console.purge_expired() == 1
    assert db.session.scalar(select(console.ConsoleToken)) is None
    assert db.session.get(Service, service.id) is not None
