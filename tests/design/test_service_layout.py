"""The service page layout, through the real app and database: the main address in the summary at the top, the
latest three operations and then "Older operations" (ten in all), and a section index whose every anchor has its
section on the page."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from hostbay.core import ipam, jobs
from hostbay.core.db import db as _db
from hostbay.testing.pytest_plugin import login


def _between(html: str, start: str, end: str) -> str:
    i = html.index(start)
    return html[i:html.index(end, i)]


def _titles(fragment: str) -> list[str]:
    return re.findall(r"<strong>(Op \d\d)</strong>", fragment)


def test_latest_three_operations_then_older_ones(client, db, make_user, active_service):
    user = make_user()
    svc = active_service(user=user)
    base = datetime(2026, 1, 1, 12, 0)
    for n in range(1, 13):  # Op 01 is the oldest, Op 12 the latest
        _db.session.add(jobs.Operation(key=f"layout-op:{n}", kind="core.ping", service_id=svc.id, user_id=user.id,
                                       state=jobs.SUCCEEDED, title=f"Op {n:02d}", progress_pct=100,
                                       progress_text="Done", created_at=base + timedelta(minutes=n),
                                       finished_at=base + timedelta(minutes=n)))
    _db.session.commit()
    login(client, user)
    html = client.get(f"/panel/services/{svc.uuid}").get_data(as_text=True)
    ops = _between(html, '<section id="operations"', "</section>")
    latest = _between(ops, '<ul class="ops" aria-live="polite">', "</ul>")
    assert _titles(latest) == ["Op 12", "Op 11", "Op 10"]
    older = _between(ops, '<details class="older">', "</details>")
    assert "<summary>Older operations (7)</summary>" in older
    assert _titles(older) == [f"Op {n:02d}" for n in range(9, 2, -1)]  # ten in all on the page
    assert "Op 02" not in ops and "Op 01" not in ops


def test_few_operations_have_no_older_part(client, db, make_user, active_service):
    user = make_user()
    svc = active_service(user=user)
    for n in range(1, 4):
        _db.session.add(jobs.Operation(key=f"few-op:{n}", kind="core.ping", service_id=svc.id, user_id=user.id,
                                       state=jobs.SUCCEEDED, title=f"Op {n:02d}", progress_pct=100,
                                       progress_text="Done", created_at=datetime(2026, 1, 1, 12, n)))
    _db.session.commit()
    login(client, user)
    html = client.get(f"/panel/services/{svc.uuid}").get_data(as_text=True)
    ops = _between(html, '<section id="operations"', "</section>")
    assert _titles(ops) == ["Op 03", "Op 02", "Op 01"] and "Older operations" not in ops


def test_section_index_anchors_and_main_address_at_the_top(client, db, make_user, active_service):
    ipam.create_pool(name="layout-pool", cidr="192.0.2.0/28")
    user = make_user()
    svc = active_service(user=user)
    address = ipam.allocate_for_service(svc)[0].address
    _db.session.commit()
    login(client, user)
    html = client.get(f"/panel/services/{svc.uuid}").get_data(as_text=True)

    head = _between(html, '<header class="svc-head"', "</header>")
    assert "data-service-state" in head
    assert re.search(r"<span>Main address</span><span><code>" + re.escape(str(address)) + "</code>", head), head

    toc = _between(html, '<nav aria-label="On this page">', "</nav>")
    anchors = re.findall(r'<a href="#([\w-]+)">', toc)
    assert anchors == ["operations", "actions", "billing", "addresses", "iso", "activity"]
    ids = set(re.findall(r'\bid="([\w-]+)"', html))
    assert set(anchors) <= ids, set(anchors) - ids
    # the in-page links of the action groups lead to their sections too
    in_page = set(re.findall(r'<a class="button secondary" href="#([\w-]+)"', html))
    assert in_page == {"iso", "console"} and in_page <= ids, in_page - ids
    # the sections come in the order of the index
    positions = [html.index(f'id="{a}"') for a in anchors]
    assert positions == sorted(positions)
