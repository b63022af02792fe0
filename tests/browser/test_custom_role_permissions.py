"""In headless Chromium: an administrator builds a custom role from the permission picker (only "services.view"
and "services.power"); a staff member with that role power-cycles a server from its staff page, is offered no
force action and no move, and gets a 404 when posting them anyway (with a valid CSRF token)."""

from __future__ import annotations

import re
import time

from playwright.sync_api import expect
from sqlalchemy import select

from hostbay.core import jobs
from hostbay.core.db import db as _db
from hostbay.core.drivers import PowerState
from hostbay.core.services import Service
from hostbay.core.staff_roles import StaffRole
from hostbay.testing.conformance import VirtDriverConformance
from hostbay.testing.fakes import FakeVirtDriver

PASSWORD = "correct horse battery"


def _login(page, base, email):
    page.goto(base + "/login")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"/(panel|staff)/"))


def _server_state(uuid):
    return FakeVirtDriver.servers[uuid]["state"]


def _wait_ops(svc_id, kind, n):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        _db.session.expire_all()
        done = _db.session.scalars(select(jobs.Operation).where(jobs.Operation.service_id == svc_id,
                                                                jobs.Operation.kind == kind,
                                                                jobs.Operation.state == jobs.SUCCEEDED)).all()
        _db.session.commit()
        if len(done) >= n:
            return
        time.sleep(0.2)
    raise AssertionError(f"{kind} did not finish")


def test_a_custom_role_from_the_picker_power_cycles_but_cannot_force_or_move(live_server, browser, shot, make_user,
                                                                             make_package, make_service, make_node):
    admin = make_user(role="admin", email="root@example.test")
    customer = make_user(email="dora@example.test")
    node = make_node(name="fake-perm-a")
    make_node(name="fake-perm-b", settings={"host": "other-host"})
    svc = make_service(customer, make_package(), node=node, hostname="dora1.example.test")
    spec = VirtDriverConformance().make_spec(uuid=svc.uuid, hostname=svc.hostname)
    svc.infra_ref = FakeVirtDriver({}).create(spec, lambda *_: None)
    _db.session.commit()
    svc_uuid, svc_id, admin_email = svc.uuid, svc.id, admin.email
    _db.session.commit()
    actx = browser.new_context(viewport={"width": 1280, "height": 900})
    mctx = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        a = actx.new_page()
        a.set_default_timeout(15000)
        _login(a, live_server, admin_email)
        a.goto(live_server + "/staff/team/")
        form = a.locator("#role-form")
        expect(form.locator("fieldset.permission-group legend", has_text="Services")).to_be_visible()
        expect(form).to_contain_text("Force power off, restart, suspend, unsuspend, terminate")
        form.get_by_label("Name", exact=True).fill("powerdesk")
        form.get_by_label("Label", exact=True).fill("Power desk")
        for name in ("services.view", "services.power"):
            box = f"input[name=permission][value='{name}']"
            expect(form.locator("label", has=a.locator(box))).to_contain_text(name + " — ")  # with its description
            form.locator(box).check()
        shot(a, "custom-role-picker")
        form.get_by_role("button", name="Save the role").click()
        expect(a.locator(".flash")).to_contain_text("Role powerdesk was saved.")
        _db.session.expire_all()
        role = _db.session.scalar(select(StaffRole).filter_by(name="powerdesk"))
        assert sorted(role.permissions) == ["services.power", "services.view"]
        _db.session.commit()
        member = make_user(role="powerdesk", email="pat@example.test")
        member_email = member.email
        _db.session.commit()

        m = mctx.new_page()
        m.set_default_timeout(15000)
        _login(m, live_server, member_email)
        m.goto(live_server + f"/staff/services/{svc_uuid}")
        expect(m.locator("h1")).to_have_text("dora1.example.test")
        assert m.locator("text=Force actions").count() == 0 and m.locator("#move-form").count() == 0
        assert m.get_by_role("button", name="Suspend").count() == 0  # services.manage is not in the role
        # power-cycle: restart, stop, start
        m.get_by_role("button", name="Restart", exact=True).click()
        expect(m.locator(".flash")).to_contain_text("Restart: done or queued.")
        _wait_ops(svc_id, "service.restart", 1)
        m.goto(live_server + f"/staff/services/{svc_uuid}")
        m.get_by_role("button", name="Stop", exact=True).click()
        _wait_ops(svc_id, "service.stop", 1)
        assert _server_state(svc_uuid) == PowerState.STOPPED
        m.goto(live_server + f"/staff/services/{svc_uuid}")
        expect(m.get_by_role("button", name="Stop", exact=True)).to_have_count(0)  # Start only when stopped
        m.get_by_role("button", name="Start", exact=True).click()
        _wait_ops(svc_id, "service.start", 1)
        assert _server_state(svc_uuid) == PowerState.RUNNING
        m.goto(live_server + f"/staff/services/{svc_uuid}")
        shot(m, "custom-role-service-page")
        token = m.locator("input[name=csrf_token]").first.get_attribute("value")
        typed = {"confirm_hostname": "dora1.example.test"}
        for path, data in ((f"/staff/services/{svc_uuid}/force/force_terminate", typed),
                           (f"/staff/services/{svc_uuid}/move", {**typed, "node": "2"}),
                           (f"/staff/services/{svc_uuid}/action/terminate", typed)):
            resp = m.request.post(live_server + path, form={"csrf_token": token, **data}, max_redirects=0)
            assert resp.status == 404, (path, resp.status)
        _db.session.expire_all()
        assert _db.session.get(Service, svc_id).state == "active" and _server_state(svc_uuid) == PowerState.RUNNING
        _db.session.commit()
        # the same requests by the administrator pass the permission check (they reach the state table)
        a.goto(live_server + f"/staff/services/{svc_uuid}")
        expect(a.locator("#force-force_terminate")).to_be_visible()
        expect(a.locator("#move-form")).to_be_visible()
    finally:
        actx.close()
        mctx.close()
