"""Staff run the shop from the panel, in headless Chromium on the real app, libvirtd with QEMU and PostgreSQL/SQLite:
create a package and an OS image, add a KVM node with "Test connection", drain it so a customer's order of that
package fails to be placed, retry the failed provisioning from the failed-work page to a running server on that
node, approve a refund, "view as customer" (which the customer sees in their activity), and find every step in the
audit trail with its before/after; then a forced power-off (confirmed in the danger zone) and Start, and a move
of the server to a second KVM node (own storage directory and prefix) with one domain at the end. Screenshots:
artifacts/e2e/staff-*.png."""

from __future__ import annotations

import os
import re
import time

from playwright.sync_api import expect

from hostbay.core import ipam
from hostbay.core.catalog import Node
from hostbay.core.jobs import FAILED, Operation
from hostbay.core.services import Service

PASSWORD = "correct horse battery"


def _read(db, fn):
    db.session.expire_all()
    try:
        return fn()
    finally:
        db.session.commit()


def _login(page, base, email):
    page.goto(base + "/login")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"/(panel|staff)/"))


def _wait(db, fn, what, seconds=90):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = _read(db, fn)
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_staff_build_the_catalogue_and_fix_a_failed_order(kvm_host, live_server, browser, shots, app, db, make_user,
                                                           tmp_path):
    staff = make_user(role="admin", email="ops@example.test")
    customer = make_user(email="carol@example.test", balance_cents=5000)
    staff_email, customer_email, customer_uuid = staff.email, customer.email, customer.uuid
    db.session.commit()
    sctx = browser.new_context(viewport={"width": 1280, "height": 900})
    cctx = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        s = sctx.new_page()
        s.set_default_timeout(20_000)
        _login(s, live_server, staff_email)

        # 1. a package and an OS image -------------------------------------------------------------------------
        s.goto(live_server + "/staff/catalogue/packages/")
        form = s.locator("form.stack")
        form.locator("[name=name]").fill("Admin VPS")
        form.locator("[name=slug]").fill("admin-vps")
        form.locator("[name=kind]").select_option("vps")
        form.locator("[name=driver]").select_option("kvm")
        form.locator("[name=vcpus]").fill("1")
        form.locator("[name=memory_mib]").fill("128")
        form.locator("[name=disk_gib]").fill("1")
        form.locator("[name=port_speed_mbit]").fill("100")
        form.locator("[name=price_monthly]").fill("7.00")
        shots(s, "staff-01-package-form")
        form.get_by_role("button", name="Create the package").click()
        expect(s.locator(".flash")).to_contain_text("Package Admin VPS was created.")
        s.goto(live_server + "/staff/catalogue/images/")
        form = s.locator("form.stack")
        form.locator("[name=driver]").select_option("kvm")
        form.locator("[name=name]").fill("Blank disk")
        form.locator("[name=slug]").fill("blank")
        form.locator("[name=source]").fill("blank.qcow2")
        form.locator("[name=min_disk_gib]").fill("1")
        form.get_by_role("button", name="Add the image").click()
        expect(s.locator(".flash")).to_contain_text("Image Blank disk was added for kvm.")
        shots(s, "staff-02-image-added")

        # 2. a KVM node on the test libvirtd, with "Test connection" ------------------------------------------
        s.goto(live_server + "/staff/nodes/")
        form = s.locator("form", has=s.locator("input[name=driver][value=kvm]"))
        form.locator("[name=name]").fill("kvm-admin-node")
        form.locator("[name=vcpus]").fill("4")
        form.locator("[name=memory_mib]").fill("4096")
        form.locator("[name=disk_gib]").fill("50")
        settings = kvm_host.settings(name_prefix=os.environ.get("HOSTBAY_TEST_E2E_PREFIX", "hbe2e-"))
        for key, value in settings.items():
            field = form.locator(f"[name=setting_{key}]")
            if field.evaluate("e => e.tagName") == "SELECT":
                field.select_option(str(value))
            else:
                field.fill(str(value))
        # "Test connection" runs probe guests (KVM, then QEMU when KVM writes nothing in 15 s): on a loaded host
        # that takes longer than the page's default 20 s
        form.get_by_role("button", name="Add and test the connection").click(timeout=90_000)
        expect(s.locator(".flash-info")).to_contain_text("kvm-admin-node was added.")
        s.get_by_role("button", name="Test connection").click(timeout=90_000)
        expect(s.locator(".flash-info")).to_contain_text("kvm-admin-node was tested.")
        shots(s, "staff-03-node-tested")
        node_id = _read(db, lambda: db.session.scalar(db.select(Node.id).filter_by(name="kvm-admin-node")))
        ipam.create_pool(name="admin-e2e-v4", cidr="192.0.2.16/28", gateway="192.0.2.17", node_ids=[node_id])
        db.session.commit()
        s.get_by_role("button", name="Drain (no new services)").click()
        expect(s.locator(".flash")).to_contain_text("is draining")

        # 3. the customer orders that package: nothing can be placed, the provisioning fails --------------------
        c = cctx.new_page()
        c.set_default_timeout(20_000)
        _login(c, live_server, customer_email)
        c.goto(live_server + "/panel/order")
        c.get_by_role("row", name=re.compile("Admin VPS")).get_by_role("link", name="Choose").click()
        c.get_by_label(re.compile("Monthly")).check()
        c.get_by_label("Operating system").select_option(label="Blank disk")
        c.get_by_label("Hostname").fill("carol1.example.test")
        c.get_by_role("button", name="Review order").click()
        c.get_by_role("button", name="Pay $7.00 and order").click()
        c.wait_for_url(re.compile(r"/panel/services/[0-9a-f-]{36}$"))
        svc_uuid = c.url.rsplit("/", 1)[1]
        svc_id = _read(db, lambda: db.session.scalar(db.select(Service.id).filter_by(uuid=svc_uuid)))
        op_id = _wait(db, lambda: db.session.scalar(db.select(Operation.id).filter_by(service_id=svc_id,
                                                                                      state=FAILED)),
                      "the provisioning to fail")

        # 4. staff undrain the node and retry the failed provisioning to success -------------------------------
        s.goto(live_server + f"/staff/nodes/{node_id}")
        s.get_by_role("button", name="Stop draining").click()
        s.goto(live_server + "/staff/operations/")
        row = s.locator("tr", has_text="carol1.example.test")
        expect(row).to_contain_text("failed")
        shots(s, "staff-04-failed-work")
        row.get_by_role("button", name="Retry").click()
        expect(s.locator(".flash")).to_contain_text("is queued again")
        _wait(db, lambda: db.session.get(Service, svc_id).state == "active", "the retried provisioning", 180)
        assert _read(db, lambda: db.session.get(Service, svc_id).node_id) == node_id
        assert _read(db, lambda: db.session.get(Operation, op_id).state) == "succeeded"
        s.goto(live_server + f"/staff/nodes/{node_id}")
        expect(s.locator("body")).to_contain_text("carol1.example.test")
        shots(s, "staff-05-node-with-service")

        # 5. an ISO: the customer uploads it, staff approve it, the customer mounts it on the new server ------
        app.config["HOSTBAY_ISO_DIR"] = str(kvm_host.isos)  # where QEMU may read it (the test tmp dir is 0700)
        iso_path = tmp_path / "rescue.iso"
        iso_path.write_bytes(b"\0" * 32768 + b"\x01CD001\x01" + b"\0" * (1024 * 1024))
        c.goto(live_server + "/panel/isos")
        c.set_input_files("#iso-file", str(iso_path))
        c.get_by_role("button", name="Upload").click()
        expect(c.locator("body")).to_contain_text("rescue.iso")
        s.goto(live_server + "/staff/isos/")
        s.locator("tr", has_text="rescue.iso").get_by_role("button", name="Approve").click()
        c.goto(live_server + f"/panel/services/{svc_uuid}")
        expect(c.get_by_label("Approved ISO")).to_contain_text("rescue.iso")
        c.get_by_label("Approved ISO").select_option(index=0)
        c.get_by_role("button", name="Mount ISO and boot from it").click()
        for _ in range(100):
            if "In the drive" in c.inner_text(".panel-iso") and "being inserted" not in c.inner_text(".panel-iso"):
                break
            c.wait_for_timeout(300)
            c.reload()
        expect(c.locator(".panel-iso")).to_contain_text("In the drive: rescue.iso")
        shots(c, "staff-05b-customer-mounted-iso")

        # 6. a refund: the customer asks, staff approve ---------------------------------------------------------
        c.goto(live_server + "/panel/billing/refund")
        c.get_by_label("Amount (USD)").fill("10.00")
        c.get_by_label("Why do you want a refund?").fill("Testing done")
        c.get_by_role("button", name="Send request").click()
        s.goto(live_server + "/staff/billing/refunds")
        row = s.locator("tr", has_text=customer_email).first
        row.get_by_label("External reference").fill("tx-admin-1")
        row.get_by_role("button", name="Approve").click()
        expect(s.locator(".flash")).not_to_have_class(re.compile("flash-error"))

        # 7. view as customer, read-only; the customer sees it in their activity -------------------------------
        s.goto(live_server + "/staff/customers/")
        s.get_by_label("Search").fill(svc_uuid)
        s.get_by_role("button", name="Search").click()
        s.get_by_role("link", name=customer_email).click()
        s.get_by_role("link", name="View as customer (read-only)").click()
        expect(s.locator(".view-as")).to_contain_text("carol1.example.test")
        assert s.locator(".view-as form").count() == 0
        shots(s, "staff-06-view-as")
        c.goto(live_server + "/panel/activity")
        expect(c.locator("body")).to_contain_text("viewed your dashboard (read-only)")

        # 8. force power off from the danger zone (hostname typed), then Start; the customer is told ----------
        s.goto(live_server + f"/staff/services/{svc_uuid}")
        box = s.locator("#force-force_stop")
        box.get_by_label(re.compile("Type the hostname")).fill("carol1.example.test")
        box.get_by_role("button", name="Force power off").click()
        expect(s.locator(".flash")).to_contain_text("Force power off")
        _wait(db, lambda: db.session.scalar(db.select(Operation.id).filter_by(
            service_id=svc_id, kind="service.force_stop", state="succeeded")), "the forced power-off")
        s.goto(live_server + f"/staff/services/{svc_uuid}")
        s.get_by_role("button", name="Start", exact=True).click()  # offered now: the server is stopped
        _wait(db, lambda: db.session.scalar(db.select(Operation.id).filter_by(
            service_id=svc_id, kind="service.start", state="succeeded")), "the start")

        # 9. move the server to a second KVM node (own storage directory and domain prefix) --------------------
        from hostbay.plugins.kvm import KvmDriver

        prefix = os.environ.get("HOSTBAY_TEST_E2E_PREFIX", "hbe2e-")
        second = KvmDriver.clean_settings(kvm_host.settings(name_prefix=f"{prefix}b-",
                                                            storage=str(kvm_host.disks.parent / "disks-b")))
        node2 = Node(name="kvm-admin-node-2", driver="kvm", settings=second, vcpus=4, memory_mib=4096, disk_gib=50)
        db.session.add(node2)
        db.session.flush()
        pool = db.session.scalar(db.select(ipam.IpPool).filter_by(name="admin-e2e-v4"))
        pool.nodes = [*pool.nodes, node2]
        node2_id = node2.id
        db.session.commit()
        s.goto(live_server + f"/staff/services/{svc_uuid}")
        move = s.locator("#move-form")
        move.get_by_label(re.compile("Target node")).select_option(label="kvm-admin-node-2")
        move.get_by_label("Reason").fill("host maintenance")
        move.get_by_label(re.compile("Type the hostname")).fill("carol1.example.test")
        shots(s, "staff-07a-move-form")
        move.get_by_role("button", name="Move the server").click()
        expect(s.locator(".flash")).to_contain_text("is being moved to kvm-admin-node-2")
        _wait(db, lambda: db.session.get(Service, svc_id).node_id == node2_id
              and db.session.get(Service, svc_id).state == "active", "the move", 180)
        ref = _read(db, lambda: dict(db.session.get(Service, svc_id).infra_ref))
        assert ref["domain"] == f"{prefix}b-{svc_uuid}"
        assert ref["disk"].startswith(str(kvm_host.disks.parent / "disks-b"))
        conn = kvm_host.conn()
        assert sorted(d.name() for d in conn.listAllDomains(0) if d.name().endswith(svc_uuid)) == [ref["domain"]]
        assert conn.lookupByName(ref["domain"]).isActive()
        c.goto(live_server + "/panel/activity")
        expect(c.locator("body")).to_contain_text("was moved to another host")
        assert "kvm-admin-node" not in c.inner_text("body")

        # 10. every step in the audit trail, before/after as a readable difference ------------------------------
        s.goto(live_server + "/staff/audit/")
        entries = s.locator(".staff-audit-entry")
        for action, words in (("package.create", "admin-vps"), ("image.create", "blank.qcow2"),
                              ("node.create", "kvm-admin-node"), ("node.placement", "draining"),
                              ("operation.retry", "failed"), ("refund.approve", "pending"),
                              ("customer.view_as", "customer told"), ("iso.approve", "approved"),
                              ("service.force_stop", "stopped"), ("service.moved", "kvm-admin-node-2")):
            entry = entries.filter(has_text=action).first
            expect(entry).to_contain_text(words)
            expect(entry.locator(".staff-diff")).to_be_visible()
        assert staff_email in s.inner_text(".staff-audit")
        moved = entries.filter(has_text="service.moved").first
        expect(moved.locator(".staff-diff")).to_contain_text("kvm-admin-node")  # node before → after
        shots(s, "staff-07-audit-trail")
        s.goto(live_server + f"/staff/audit/?customer={customer_email}")
        expect(s.locator(".staff-audit")).to_contain_text("customer.view_as")
        assert customer_uuid
    finally:
        sctx.close()
        cctx.close()
