"""Every staff page of the menu renders at 1280 px and at 390 px wide without horizontal scrolling (the page's
scrollWidth is not wider than the viewport); a screenshot of each is written to artifacts/browser/staff/."""

import os
import re
from pathlib import Path

import pytest

from hostbay.core import jobs
from hostbay.core.db import db as _db

WIDTHS = (1280, 390)


def _login(page, base, email, password="correct horse battery"):
    page.goto(base + "/login")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"/(panel|staff)/"))


@pytest.mark.parametrize("width", WIDTHS)
def test_staff_pages_fit_the_viewport(live_server, browser, db, make_user, make_package, make_service, make_node,
                                      make_image, width):
    staff = make_user(role="admin")
    cust = make_user(email="long.customer.address.for.layout@example.test", balance_cents=1234)
    node = make_node(name="layout-node")
    pkg = make_package(name="Layout package with a rather long name")
    img = make_image(source="a/very/long/template/reference/that/does/not/wrap/easily-debian-12-genericcloud.qcow2")
    svc = make_service(cust, pkg, node=node, hostname="a-long-hostname-for-layout.example.test")
    _db.session.add(jobs.Operation(key="layout:1", kind="core.ping", service_id=svc.id, state=jobs.FAILED,
                                   attempts=4, error="libvirtError: " + "x" * 300))
    _db.session.commit()
    urls = {"home": "/staff/", "customers": "/staff/customers/", "customer": f"/staff/customers/{cust.uuid}",
            "view-as": f"/staff/customers/{cust.uuid}/view-as", "operations": "/staff/operations/",
            "packages": "/staff/catalogue/packages/", "package": f"/staff/catalogue/packages/{pkg.uuid}",
            "images": "/staff/catalogue/images/", "image": f"/staff/catalogue/images/{img.uuid}",
            "audit": "/staff/audit/", "nodes": "/staff/nodes/", "node": f"/staff/nodes/{node.id}",
            "services": "/staff/services/", "service": f"/staff/services/{svc.uuid}", "team": "/staff/team/"}
    email = staff.email
    _db.session.commit()  # reading the attribute began a transaction: on SQLite it would hold the write lock
    folder = Path(os.environ.get("HOSTBAY_TEST_ARTIFACTS", "artifacts")) / "browser" / "staff"
    folder.mkdir(parents=True, exist_ok=True)
    ctx = browser.new_context(viewport={"width": width, "height": 900})
    try:
        page = ctx.new_page()
        page.set_default_timeout(15000)
        _login(page, live_server, email)
        too_wide = {}
        for name, path in urls.items():
            resp = page.goto(live_server + path)
            assert resp.status == 200, (path, resp.status)
            scroll, client = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
            page.screenshot(path=str(folder / f"{name}-{width}.png"), full_page=True)
            if scroll > client:
                too_wide[path] = (scroll, client)
        assert not too_wide, too_wide
    finally:
        ctx.close()
