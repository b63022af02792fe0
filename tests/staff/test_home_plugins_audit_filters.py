"""Staff home counts (all seven queues against seeded data), a failed plugin with its reason on the plugins page,
and the audit trail's service and date-range filters."""

import csv
import io
from datetime import datetime, timedelta

from flask import url_for
from sqlalchemy import select

from hostbay.core import dctasks, ipam_pools, jobs, rdns, tickets
from hostbay.core.activity import audit
from hostbay.core.billing import REFUND_APPROVED, RefundRequest
from hostbay.core.db import db
from hostbay.core.hookspecs import hookimpl
from hostbay.core.inventory import HardwareServer
from hostbay.core.ipam import IpAddress
from hostbay.core.iso import APPROVED as ISO_APPROVED, PENDING as ISO_PENDING, IsoImage
from hostbay.testing.pytest_plugin import login


def _staff(app, make_user, role="admin"):
    client = app.test_client()
    user = make_user(role=role)
    login(client, user)
    return client, user


def _seed_every_queue(make_user, make_package, make_service, clock):
    """Distinct numbers per queue (1 to 7) waiting, and in each queue one item that no longer waits."""
    cust = make_user()
    svc = make_service(cust, make_package())
    # 1 ISO waiting for approval (+1 approved)
    for i, state in enumerate((ISO_PENDING, ISO_APPROVED)):
        db.session.add(IsoImage(user_id=cust.id, name=f"iso-{i}.iso", stored_name=f"stored-{i}", size_bytes=1024,
                                sha256="0" * 64, state=state))
    # 2 reverse DNS requests waiting (+1 applied)
    pool = ipam_pools.create_pool(name="home-pool", cidr="192.0.2.0/28", gateway="192.0.2.1")
    addresses = db.session.scalars(select(IpAddress).where(IpAddress.pool_id == pool.id).limit(3)).all()
    for i, (addr, state) in enumerate(zip(addresses, (rdns.PENDING, rdns.PENDING, rdns.APPLIED))):
        db.session.add(rdns.RdnsRequest(address_id=addr.id, service_id=svc.id, user_id=cust.id,
                                        hostname=f"r{i}.example.test", policy="manual", state=state))
    # 3 refund requests waiting (+1 approved)
    for state in ("pending", "pending", "pending", REFUND_APPROVED):
        db.session.add(RefundRequest(user_id=cust.id, amount_cents=500, state=state,
                                     decided_at=None if state == "pending" else clock.now()))
    # 4 open tickets (+1 answered, +1 closed)
    opened = [tickets.open_ticket(cust, f"Question {i}", "Please help with this.") for i in range(6)]
    opened[4].status, opened[5].status = tickets.ANSWERED, tickets.CLOSED
    # 5 datacenter tasks open or in progress (+1 done)
    server = HardwareServer(name="home-server", cpu_model="EPYC", cpu_cores=8, ram_gib=64, disk_size_gib=960,
                            location="fra1")
    db.session.add(server)
    db.session.flush()
    tasks = [dctasks.create(dctasks.HARDWARE_SWAP, server, key=f"home-task-{i}") for i in range(6)]
    tasks[0].state, tasks[1].state = dctasks.IN_PROGRESS, dctasks.IN_PROGRESS
    tasks[5].state = dctasks.DONE
    # 6 operations failed or retrying (+1 succeeded)
    for i, state in enumerate([jobs.FAILED] * 4 + [jobs.RETRYING] * 2 + [jobs.SUCCEEDED]):
        db.session.add(jobs.Operation(key=f"home-op-{i}", kind="core.ping", service_id=svc.id, user_id=cust.id,
                                      state=state, attempts=2, payload={}))
    # 7 orders refused for want of stock in the last 30 days (+1 older)
    now = clock.now()
    clock.set(now - timedelta(days=31))
    audit("dedicated.out_of_stock", "package", "old", actor=cust)
    db.session.flush()  # the row takes its time when it is written
    clock.set(now)
    for i in range(7):
        audit("dedicated.out_of_stock", "package", f"p{i}", actor=cust)
    db.session.commit()


def test_staff_home_counts_every_queue_and_links_it(app, make_user, make_package, make_service, clock):
    _seed_every_queue(make_user, make_package, make_service, clock)
    client, _ = _staff(app, make_user)
    page = client.get("/staff/").get_data(as_text=True)
    expected = {"ISO approvals": ("staff_iso.queue", 1), "Reverse DNS approvals": ("staff_network.rdns_queue", 2),
                "Refund requests": ("staff_billing.refunds", 3), "Open tickets": ("staff_tickets.queue", 4),
                "Datacenter tasks": ("staff_inventory.tasks", 5),
                "Failed operations": ("staff_admin.operations", 6),
                "Orders refused for want of stock (30 days)": ("staff_inventory.index", 7)}
    with app.test_request_context():
        links = {label: url_for(endpoint) for label, (endpoint, _) in expected.items()}
    for label, (_, count) in expected.items():
        assert f'<a href="{links[label]}"><strong>{count}</strong> {label}</a>' in page, (label, count)
    for href in links.values():  # each link opens its queue
        assert client.get(href).status_code == 200, href
    # support sees its own queues only: tickets, approvals, datacenter, failed work; not refunds
    support, _ = _staff(app, make_user, role="support")
    page = support.get("/staff/").get_data(as_text=True)
    assert "<strong>4</strong> Open tickets" in page and "<strong>6</strong> Failed operations" in page
    assert "Refund requests" not in page


class _Misspelt:
    """A plugin with a misspelt hook name: rejected at registration, listed as failed with the reason."""

    @hookimpl
    def hostbay_virt_driverz(self):
        return []


def test_plugins_page_shows_a_failed_plugin_with_its_reason(app, make_user, register_plugin):
    client, _ = _staff(app, make_user)
    with register_plugin(_Misspelt(), name="misspelt-plugin"):
        page = client.get("/staff/plugins/").get_data(as_text=True)
    row = next(r for r in page.split("<tr>") if "<td>misspelt-plugin</td>" in r)
    assert "<td>failed</td>" in row
    assert "unknown hook(s): hostbay_virt_driverz" in row
    kvm = next(r for r in page.split("<tr>") if "<td>kvm</td>" in r)
    assert "<td>loaded</td>" in kvm and "unknown hook" not in kvm


def _csv_actions(client, **query) -> list[str]:
    resp = client.get("/staff/audit/export.csv", query_string=query)
    assert resp.status_code == 200
    return [r["action"] for r in csv.DictReader(io.StringIO(resp.get_data(as_text=True)))]


def test_audit_trail_service_and_date_range_filters(app, make_user, make_package, make_service, clock):
    client, staff = _staff(app, make_user)
    cust = make_user()
    pkg = make_package()
    one, other = make_service(cust, pkg), make_service(cust, pkg)
    start = clock.now()
    for when, action, target in (
            (datetime(2026, 1, 1, 12, 0), "test.one-jan1", one.uuid),
            (datetime(2026, 1, 5, 0, 0), "test.one-jan5-start", one.uuid),
            (datetime(2026, 1, 10, 23, 59), "test.one-jan10-end", str(one.id)),  # some entries name the row id
            (datetime(2026, 1, 11, 0, 0), "test.one-jan11", one.uuid),
            (datetime(2026, 1, 10, 8, 0), "test.other-jan10", other.uuid)):
        clock.set(when)
        audit(action, "service", target, actor=staff)
        db.session.flush()  # the row takes its time when it is written
    clock.set(start)
    db.session.commit()
    assert _csv_actions(client, kind="test.", service=one.uuid) == [
        "test.one-jan11", "test.one-jan10-end", "test.one-jan5-start", "test.one-jan1"]
    assert _csv_actions(client, kind="test.", service=other.uuid) == ["test.other-jan10"]
    # since and until are whole days, both included
    assert _csv_actions(client, kind="test.", since="2026-01-05", until="2026-01-10") == [
        "test.one-jan10-end", "test.other-jan10", "test.one-jan5-start"]
    assert _csv_actions(client, kind="test.", service=one.uuid, since="2026-01-06", until="2026-01-10") == [
        "test.one-jan10-end"]
    assert _csv_actions(client, kind="test.", since="2026-01-11") == ["test.one-jan11"]
    assert _csv_actions(client, kind="test.", until="2026-01-01") == ["test.one-jan1"]
    # the page applies the same filters
    page = client.get("/staff/audit/", query_string={"service": one.uuid, "since": "2026-01-05",
                                                     "until": "2026-01-05"}).get_data(as_text=True)
    assert "test.one-jan5-start" in page
    assert not any(a in page for a in ("test.one-jan1", "test.one-jan10-end", "test.one-jan11", "test.other"))
