"""Every staff page renders at 1280 px and at 390 px wide without horizontal scrolling (the page's scrollWidth is
not wider than the viewport); a screenshot of each is written to artifacts/browser/staff/. The pages are every entry
of the staff menu (``hostbay_admin_menu``: core's ``builtin.STAFF_MENU`` and any plugin's), so a page added to the
menu is checked without touching this test, plus the detail pages listed here."""

import os
import re
from pathlib import Path

import pytest

from hostbay.core import builtin, jobs
from hostbay.core.db import db as _db

WIDTHS = (1280, 390)


def _login(page, base, email, password="correct horse battery"):
    page.goto(base + "/login")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"/(panel|staff)/"))


def _menu_urls(app) -> dict[str, str]:
    """``{endpoint: path}`` of every staff menu entry (core's first); each must build without arguments."""
    from flask import url_for

    with app.test_request_context():
        entries = [tuple(e) for e in app.extensions["hostbay"].collect("hostbay_admin_menu")]
        return {endpoint.replace(".", "-"): url_for(endpoint) for _, endpoint, *_ in entries}


def _seed_queues(cust, node) -> None:
    """Something in the queues, so the menu pages show rows and not only their empty states."""
    from hostbay.core import dctasks, ipam_pools, tickets
    from hostbay.core.inventory import HardwareServer

    tickets.open_ticket(cust, "The server does not answer on port 443 after the last reboot",
                        "It worked yesterday; " + "details " * 40)
    ipam_pools.create_pool(name="layout-pool-with-a-long-name", cidr="192.0.2.0/28", gateway="192.0.2.1",
                           location=node.location)
    server = HardwareServer(name="fra1-r12-u07-layout", cpu_model="AMD EPYC 7443P 24-Core Processor", cpu_cores=24,
                            ram_gib=256, disk_size_gib=1920, location=node.location or "fra1")
    _db.session.add(server)
    _db.session.flush()
    dctasks.create(dctasks.HARDWARE_SWAP, server, notes="Swap the left PSU; " + "note " * 30)


def test_every_core_menu_page_is_checked(app):
    """The layout test reaches every page of builtin.STAFF_MENU (plugins' entries come on top)."""
    urls = _menu_urls(app)
    assert {endpoint.replace(".", "-") for _, endpoint, _ in builtin.STAFF_MENU} <= set(urls)
    assert len(urls) >= len(builtin.STAFF_MENU) == 22


@pytest.mark.parametrize("width", WIDTHS)
def test_staff_pages_fit_the_viewport(live_server, app, browser, db, make_user, make_package, make_service,
                                      make_node, make_image, width):
    live_app = app
    staff = make_user(role="admin")
    cust = make_user(email="long.customer.address.for.layout@example.test", balance_cents=1234)
    node = make_node(name="layout-node")
    pkg = make_package(name="Layout package with a rather long name")
    img = make_image(source="a/very/long/template/reference/that/does/not/wrap/easily-debian-12-genericcloud.qcow2")
    svc = make_service(cust, pkg, node=node, hostname="a-long-hostname-for-layout.example.test")
    _db.session.add(jobs.Operation(key="layout:1", kind="core.ping", service_id=svc.id, state=jobs.FAILED,
                                   attempts=4, error="libvirtError: " + "x" * 300))
    _seed_queues(cust, node)
    _db.session.commit()
    urls = {"home": "/staff/", "customer": f"/staff/customers/{cust.uuid}",
            "view-as": f"/staff/customers/{cust.uuid}/view-as",
            "package": f"/staff/catalogue/packages/{pkg.uuid}", "image": f"/staff/catalogue/images/{img.uuid}",
            "node": f"/staff/nodes/{node.id}", "service": f"/staff/services/{svc.uuid}"}
    urls.update(_menu_urls(live_app))
    email = staff.email
    _db.session.commit()  # reading the attribute began a transaction: on SQLite it would hold the write lock
    folder = Path(os.environ.get("HOSTBAY_TEST_ARTIFACTS", "artifacts")) / "browser" / "staff"
    folder.mkdir(parents=True, exist_ok=True)
    ctx = browser.new_context(viewport={"width": width, "height": 900})
    try:
        page = ctx.new_page()
        page.set_default_timeout(15000)
        _login(page, live_server, email)
        too_wide, not_ok = {}, {}
        for name, path in urls.items():
            resp = page.goto(live_server + path)
            if resp.status != 200:
                not_ok[path] = resp.status
                continue
            scroll, client = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
            page.screenshot(path=str(folder / f"{name}-{width}.png"), full_page=True)
            if scroll > client:
                too_wide[path] = (scroll, client)
        assert not not_ok, not_ok
        assert not too_wide, too_wide
    finally:
        ctx.close()
