"""Staff pages a review found untested: a node's capacity with two services on it, the services list's node
filter, retrying and stuck operations on the failed-work page, and the refund queue with a decided request whose
decided_at is empty."""

from __future__ import annotations

import re
from datetime import timedelta

from hostbay.core import clock as clock_mod
from hostbay.core import jobs, placement
from hostbay.core.billing import REFUND_APPROVED, REFUND_PENDING, REFUND_REJECTED, RefundRequest
from hostbay.core.db import db
from hostbay.core.services import Service
from hostbay.testing.pytest_plugin import login


def _staff(app, make_user, role="admin"):
    client = app.test_client()
    login(client, make_user(role=role))
    return client


def _rows(html: str, heading: str) -> list[list[str]]:
    """The cells' text of each body row of the first table after ``heading``."""
    part = html.split(heading, 1)[1].split("</table>", 1)[0]
    body = part.split("<tbody>", 1)[1]
    return [[re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
            for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)]


def test_node_page_shows_the_capacity_two_services_reserve(app, make_user, make_package, make_node, make_service):
    client = _staff(app, make_user)
    node = make_node(name="cap-1", vcpus=8, memory_mib=16384, disk_gib=200)
    other = make_node(name="cap-2", vcpus=64, memory_mib=262144, disk_gib=4000, enabled=False)
    big = make_package(slug="big", vcpus=2, memory_mib=4096, disk_gib=50)
    small = make_package(slug="small", vcpus=1, memory_mib=1024, disk_gib=20)
    cust = make_user()
    for pkg in (big, small):
        svc = make_service(cust, pkg, state="pending")
        assert placement.place(db.session.get(Service, svc.id)).id == node.id
    db.session.commit()
    make_service(cust, big, node=other)  # on another node: not counted here
    rows = _rows(client.get(f"/staff/nodes/{node.id}").get_data(as_text=True), "<h2>Capacity and use</h2>")
    assert rows == [["vCPU", "3", "8", "38 %"], ["Memory", "5120 MiB", "16384 MiB", "31 %"],
                    ["Disk", "70 GiB", "200 GiB", "35 %"]]
    listing = client.get("/staff/nodes/").get_data(as_text=True)
    assert "3/8 vCPU, 5120/16384 MiB, 70/200 GiB" in listing


def test_services_list_node_filter_shows_only_that_nodes_services(app, make_user, make_package, make_node,
                                                                    make_service):
    client = _staff(app, make_user, role="support")
    a, b = make_node(name="fra-a"), make_node(name="fra-b")
    pkg, cust = make_package(), make_user()
    make_service(cust, pkg, node=a, hostname="on-a-1.example.test")
    make_service(cust, pkg, node=a, hostname="on-a-2.example.test", state="suspended")
    make_service(cust, pkg, node=b, hostname="on-b.example.test")
    make_service(cust, pkg, hostname="nowhere.example.test", state="pending")
    page = client.get("/staff/services/", query_string={"node": "fra-a"}).get_data(as_text=True)
    shown = sorted(r[0] for r in _rows(page, "<h1>Services</h1>"))
    assert shown == ["on-a-1.example.test", "on-a-2.example.test"]
    assert "<option selected>fra-a</option>" in page
    page = client.get("/staff/services/", query_string={"node": "fra-b"}).get_data(as_text=True)
    assert [r[0] for r in _rows(page, "<h1>Services</h1>")] == ["on-b.example.test"]
    everything = client.get("/staff/services/").get_data(as_text=True)
    assert len(_rows(everything, "<h1>Services</h1>")) == 4


def _op(key, state, **columns):
    op = jobs.Operation(key=key, kind="core.ping", state=state, payload={}, **columns)
    db.session.add(op)
    return op


def test_failed_work_lists_retrying_and_stuck_operations_with_attempts(app, make_user):
    client = _staff(app, make_user)
    now = clock_mod.now()
    stale = jobs.stale_seconds(app)
    _op("f", jobs.FAILED, attempts=4, max_attempts=4, error="failed for good")
    _op("r", jobs.RETRYING, attempts=2, max_attempts=4, error="timeout, trying again",
        run_after=now + timedelta(minutes=1))
    _op("s", jobs.RUNNING, attempts=3, max_attempts=5, progress_text="Copying the disk",
        heartbeat_at=now - timedelta(seconds=stale + 60))  # past the stale threshold
    _op("live", jobs.RUNNING, attempts=1, progress_text="Booting, heartbeat fresh",
        heartbeat_at=now - timedelta(seconds=stale / 2))
    db.session.commit()
    page = client.get("/staff/operations/").get_data(as_text=True)
    failed = _rows(page, "<h1>Failed and stuck work</h1>")
    assert sorted((r[3], r[4]) for r in failed) == [("failed", "4 / 4"), ("retrying", "2 / 4")]
    assert "timeout, trying again" in page
    stuck = _rows(page, "<h2>Stuck")
    assert [(r[3], r[4]) for r in stuck] == [("3 / 5", "Copying the disk")]
    assert "Booting, heartbeat fresh" not in page
    assert f"no heartbeat for {stale / 60:g} minutes" in page


def test_refund_queue_shows_a_decided_request_without_a_decision_time(app, make_user):
    client = _staff(app, make_user, role="billing")
    cust = make_user(email="refund.customer@example.test")
    db.session.add_all([
        RefundRequest(user_id=cust.id, amount_cents=700, state=REFUND_APPROVED, decided_at=None,
                      external_reference="legacy-import-1"),
        RefundRequest(user_id=cust.id, amount_cents=300, state=REFUND_REJECTED, decided_at=clock_mod.now(),
                      staff_note="not refundable"),
        RefundRequest(user_id=cust.id, amount_cents=100, state=REFUND_PENDING)])
    db.session.commit()
    resp = client.get("/staff/billing/refunds")
    assert resp.status_code == 200
    decided = _rows(resp.get_data(as_text=True), "<h2>Recently decided</h2>")
    assert [(r[0] == "—", r[2], r[3]) for r in decided] == [(False, "$3.00", "rejected"),
                                                            (True, "$7.00", "approved")]
    assert "legacy-import-1" in decided[1][5]


def test_node_edit_changes_capacity_and_location_not_below_what_is_reserved(app, make_user, make_package, make_node,
                                                                            make_service):
    from hostbay.core.activity import AuditEntry
    from hostbay.core.catalog import Node

    client = _staff(app, make_user)
    node = make_node(name="cap-3", vcpus=8, memory_mib=16384, disk_gib=200, location="fra1")
    pkg = make_package(slug="cap3", vcpus=2, memory_mib=4096, disk_gib=50)
    for _ in range(2):
        assert placement.place(db.session.get(Service, make_service(make_user(), pkg, state="pending").id)).id == node.id
    db.session.commit()
    settings = {f"setting_{k}": v for k, v in (node.settings or {}).items()}
    page = client.get(f"/staff/nodes/{node.id}").get_data(as_text=True)
    assert 'name="vcpus" type="number" min="4" value="8"' in page and "4 reserved by the services on this node" in page

    # below what the two services reserve, and not a number: both refused, nothing changes
    resp = client.post(f"/staff/nodes/{node.id}", data={**settings, "enabled": "1", "location": "ams1", "vcpus": "3",
                                                       "memory_mib": "lots", "disk_gib": "200"})
    assert resp.status_code == 422
    html = resp.get_data(as_text=True)
    assert re.search(r'id="s-vcpus-error">The services on this node reserve 4; vCPUs cannot be set below that', html)
    assert 'id="s-memory_mib-error">Memory must be a whole number.' in html
    assert 'id="e-location" name="location" maxlength="64" value="ams1"' in html  # what was sent is kept
    db.session.expire_all()
    assert (db.session.get(Node, node.id).vcpus, db.session.get(Node, node.id).location) == (8, "fra1")

    # more room and a new location: saved, with before and after in the audit trail
    resp = client.post(f"/staff/nodes/{node.id}", data={**settings, "enabled": "1", "location": "ams1", "vcpus": "16",
                                                       "memory_mib": "32768", "disk_gib": "400"})
    assert resp.status_code == 302
    db.session.expire_all()
    saved = db.session.get(Node, node.id)
    assert (saved.vcpus, saved.memory_mib, saved.disk_gib, saved.location) == (16, 32768, 400, "ams1")
    entry = db.session.scalars(db.select(AuditEntry).where(AuditEntry.action == "node.update")).one()
    assert (entry.before["vcpus"], entry.after["vcpus"], entry.before["location"], entry.after["location"]) == \
        (8, 16, "fra1", "ams1")


def test_a_node_disabled_for_placement_takes_no_new_service(app, make_user, make_package, make_node, make_service):
    import pytest

    from hostbay.core.catalog import Node
    from hostbay.core.errors import HostbayError

    client = _staff(app, make_user)
    node = make_node(name="cap-4", vcpus=8, memory_mib=16384, disk_gib=200)
    pkg = make_package(slug="cap4", vcpus=1, memory_mib=1024, disk_gib=10)
    resp = client.post(f"/staff/nodes/{node.id}/placement", data={"set": "disable"})
    assert resp.status_code == 302
    db.session.expire_all()
    assert db.session.get(Node, node.id).enabled is False
    assert "Disabled: no new services are placed here." in client.get(f"/staff/nodes/{node.id}").get_data(as_text=True)
    with pytest.raises(HostbayError):
        placement.place(db.session.get(Service, make_service(make_user(), pkg, state="pending").id))
    db.session.rollback()
    client.post(f"/staff/nodes/{node.id}/placement", data={"set": "enable"})
    db.session.expire_all()
    assert placement.place(db.session.get(Service, make_service(make_user(), pkg, state="pending").id)).id == node.id
