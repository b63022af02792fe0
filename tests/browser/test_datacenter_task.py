"""In a real browser: a customer orders a dedicated server that needs datacenter handling, staff resolve the
install task from the datacenter queue, and the customer sees the outcome on the service page."""

import re
import time

import pyotp

from hostbay.core import credentials
from hostbay.core.db import db as _db
from hostbay.core.inventory import HardwareServer
from hostbay.core.services import Service


def _with_two_factor(user) -> str:
    """Staff sign in with two-factor (required outside embedded mode): turn it on with the previous step's code,
    so the login's current code is a newer one."""
    secret = credentials.new_totp_secret()
    credentials.enable_two_factor(user, secret, pyotp.TOTP(secret).at(time.time() - 30))
    _db.session.commit()
    return secret


def _login(page, base, user, password="correct horse battery", totp_secret=None):
    email, staff = user.email, user.is_staff
    _db.session.commit()
    page.goto(base + "/login")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    if totp_secret:
        page.wait_for_url("**/login/two-factor")
        page.get_by_label(re.compile("code", re.I)).first.fill(pyotp.TOTP(totp_secret).now())
        page.get_by_role("button", name=re.compile("log in|continue|verify", re.I)).click()
    page.wait_for_url(re.compile(r"/staff/") if staff else "**/panel/**")  # staff land on the staff home


def test_staff_resolve_install_task_customer_sees_outcome(live_server, browser, shot, db, make_user, make_package,
                                                         make_image):
    make_package(kind="dedicated", driver="ipmi", name="Metal 8", monthly_cents=9900, ipv4_count=0,
                       hardware={"min_cores": 8, "location": "fra1"})
    make_image(driver="ipmi", source="debian-12", name="Debian 12")
    server = HardwareServer(name="fra1-r7-u12", cpu_model="Intel Xeon E-2388G", cpu_cores=8, ram_gib=64,
                            disk_count=2, disk_size_gib=960, location="fra1", rack="R7", rack_position="U12")
    _db.session.add(server)
    _db.session.commit()
    customer, staff = make_user(balance_cents=20000), make_user(role="admin")
    staff_totp = _with_two_factor(staff)
    customer_email = customer.email
    _db.session.commit()  # on SQLite an open transaction of the test would hold the only write lock
    cust_ctx, staff_ctx = browser.new_context(), browser.new_context()
    try:
        page = cust_ctx.new_page()
        page.set_default_timeout(15000)
        _login(page, live_server, customer)
        page.goto(live_server + "/panel/order")
        page.get_by_role("link", name="Choose").click()
        page.get_by_label("Operating system").select_option(label="Debian 12")
        page.get_by_label("Hostname").fill("metal1.example.com")
        page.get_by_role("button", name="Review order").click()
        page.get_by_role("button", name="Pay $99.00 and order").click()
        page.wait_for_url("**/panel/services/**")
        for _ in range(50):  # the set-up job runs in the background; the page shows its outcome when reloaded
            if page.locator("[data-datacenter]").count():
                break
            page.wait_for_timeout(200)
            page.reload()
        assert "Queued for datacenter handling" in page.locator("[data-datacenter]").inner_text()
        shot(page, "dedicated-01-queued")
        text = page.inner_text("body")
        assert "R7" not in text and "fra1-r7-u12" not in text

        spage = staff_ctx.new_page()
        spage.set_default_timeout(15000)
        _login(spage, live_server, staff, totp_secret=staff_totp)
        spage.goto(live_server + "/staff/datacenter/")
        row = spage.locator("tr", has_text="fra1-r7-u12")
        assert "R7 U12" in row.inner_text() and "Install Debian 12" in row.inner_text()
        assert customer_email in row.inner_text()  # who asked
        row.get_by_role("link", name="Install Debian 12").click()
        spage.get_by_role("button", name="Start").click()
        assert spage.locator("[data-task-state]").inner_text() == "In progress"
        spage.get_by_label("Notes").fill("Installed from the KVM console, disks checked.")
        spage.get_by_role("button", name="Mark done").click()
        assert spage.locator("[data-task-state]").inner_text() == "Done"
        assert "disks checked" in spage.locator("[data-notes]").inner_text()
        shot(spage, "dedicated-02-staff-done")

        page.reload()
        body = page.inner_text("body")
        assert "Active" in page.locator("[data-service-state]").inner_text()
        assert "Completed" in page.locator("[data-datacenter]").inner_text()
        assert "set up by our datacenter team and is ready" in body
        assert "disks checked" not in body and "R7" not in body
        shot(page, "dedicated-03-customer-outcome")

        # the staff audit trail shows the resolution with its before/after
        spage.goto(live_server + "/staff/audit/?kind=dctask.")
        entry = spage.locator(".staff-audit-entry", has_text="dctask.done").first
        assert "disks checked" in entry.inner_text()
        diff = entry.locator(".staff-diff").inner_text()
        assert "in_progress" in diff and "done" in diff
        shot(spage, "dedicated-04-staff-audit")
    finally:
        cust_ctx.close()
        staff_ctx.close()
    _db.session.expire_all()
    svc = _db.session.scalar(_db.select(Service).filter_by(hostname="metal1.example.com"))
    assert svc.state == "active" and _db.session.get(HardwareServer, server.id).state == "in_use"
    _db.session.commit()
