"""The design system in a real browser: the main customer and staff pages at 1280 px and 390 px, screenshots in
``artifacts/design/``, no horizontal scroll, and axe-core (injected by the test only; never served by the panel)
finds no serious or critical accessibility violation. Then staff brand the installation and the panel, the status
page and a sent e-mail carry the brand."""

from __future__ import annotations

import os
import socket
from datetime import timedelta
from pathlib import Path

import pytest

from hostbay.core.db import db as _db

AXE = Path(__file__).parent / "vendor" / "axe" / "axe.min.js"
WIDTHS = {"1280": {"width": 1280, "height": 900}, "390": {"width": 390, "height": 844}}
FOLDER = Path(os.environ.get("HOSTBAY_TEST_ARTIFACTS", "artifacts")) / "design"


def _login(page, base, email, password="correct horse battery"):
    page.goto(base + "/login")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(lambda url: "/login" not in url)


def _part(page, selector: str, name: str) -> None:
    """A screenshot of one component (docs/design.md shows them)."""
    folder = FOLDER / "components"
    folder.mkdir(parents=True, exist_ok=True)
    page.locator(selector).first.screenshot(path=str(folder / f"{name}.png"))


def _track_status(page) -> dict:
    """Records the HTTP status of the latest document the page loaded (a link click, a form post or a goto)."""
    last = {}

    def on_response(response):
        if response.request.is_navigation_request() and response.frame == page.main_frame:
            last["status"], last["url"] = response.status, response.url

    page.on("response", on_response)
    return last


UNLABELLED_CELLS = """() => {
  const out = [];
  for (const table of document.querySelectorAll("main table")) {
    const head = table.tHead && table.tHead.rows[0];
    if (!head) continue;
    const names = [];
    for (const th of head.cells) for (let i = 0; i < (th.colSpan || 1); i++) names.push(th.textContent.trim());
    for (const body of table.tBodies) for (const row of body.rows) {
      let col = 0;
      for (const cell of row.cells) {
        if (names[col] && !cell.getAttribute("data-label")) out.push(names[col] + ": " + cell.textContent.trim());
        col += cell.colSpan || 1;
      }
    }
  }
  return out;
}"""


def _check(page, name: str, width: str, last: dict, status: int = 200) -> list[dict]:
    """Status check, screenshot, horizontal-scroll check and axe-core run of the current page; returns the serious
    violations. A page that did not answer ``status`` (a wrong address shows the 404 page) fails the test."""
    assert last.get("status") == status, f"{name} at {width} px: {last.get('url')} answered {last.get('status')}"
    last.clear()  # the next check needs a new page load
    FOLDER.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(FOLDER / f"{name}-{width}.png"), full_page=True)
    scroll, inner = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert scroll <= inner, f"{name} at {width} px scrolls sideways ({scroll} > {inner})"
    if width == "390":  # stacked cards: every cell under a named column carries that name
        unnamed = page.evaluate(UNLABELLED_CELLS)
        assert not unnamed, f"{name} at {width} px: cells without their column's name {unnamed[:5]}"
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    return [{"page": name, "width": width, "id": v["id"], "impact": v["impact"],
             "nodes": [n["target"] for n in v["nodes"]][:3]}
            for v in result["violations"] if v["impact"] in ("serious", "critical")]


@pytest.fixture
def scene(db, make_user, make_package, make_image, active_service):
    """A customer with a VPS (and some history) and a staff admin."""
    from hostbay.core import ledger
    from hostbay.core.activity import log_activity

    make_image(driver="fake", source="debian-12", name="Debian 12")
    customer, staff = make_user(balance_cents=5000), make_user(role="admin")
    svc = active_service(user=customer)
    ledger.credit(customer.id, 2500, kind="bonus", key="design-bonus", description="Welcome bonus")
    log_activity(customer.id, "start", "Server started", service_id=svc.id)
    names = {"customer": customer.email, "staff": staff.email, "service": svc.uuid}
    _db.session.commit()  # last: an open transaction of the test would make the server's requests wait
    return names


@pytest.mark.skipif(not AXE.exists(), reason="axe-core is installed by scripts/assets")
def test_pages_at_two_widths_without_sideways_scroll_or_serious_a11y_violations(live_server, browser, scene):
    problems = []
    for width, viewport in WIDTHS.items():
        ctx = browser.new_context(viewport=viewport, bypass_csp=True)  # lets the test inject axe-core only
        try:
            page = ctx.new_page()
            page.set_default_timeout(15000)
            last = _track_status(page)
            _login(page, live_server, scene["customer"])
            problems += _check(page, "dashboard", width, last)
            page.goto(f"{live_server}/panel/services/{scene['service']}")
            assert page.locator(".svc-head [data-service-state]").is_visible()
            assert page.locator(".danger-zone button.danger").count() >= 1  # destructive actions apart, in red
            problems += _check(page, "service-vps", width, last)
            if width == "1280":
                _part(page, ".svc-head", "service-head-badges")
                _part(page, ".action-groups", "buttons-action-groups")
                _part(page, ".danger-zone", "confirm-destructive")
            else:
                _part(page, "#activity", "table-collapsed-390")
            page.goto(live_server + "/panel/order")
            problems += _check(page, "order-1-packages", width, last)
            page.get_by_role("link", name="Choose").first.click()
            problems += _check(page, "order-2-configure", width, last)
            page.get_by_label("Operating system").select_option(label="Debian 12")
            page.get_by_label("Hostname").fill("new1.example.test")
            page.get_by_role("button", name="Review order").click()
            problems += _check(page, "order-3-review", width, last)
            page.goto(live_server + "/panel/billing")
            assert page.get_by_role("heading", level=1).first.inner_text().strip() == "Billing"
            problems += _check(page, "billing", width, last)
            page.goto(live_server + "/pricing")
            problems += _check(page, "pricing", width, last)
            if width == "1280":
                _part(page, ".plans", "pricing-plans")
            page.goto(live_server + "/help")
            problems += _check(page, "help", width, last)
            page.goto(live_server + "/no-such-page")
            problems += _check(page, "error-404", width, last, status=404)
            if width == "1280":
                _part(page, ".error-page", "error-page")
            ctx.clear_cookies()
            _login(page, live_server, scene["staff"])
            page.goto(live_server + "/staff/")
            problems += _check(page, "staff-home", width, last)
            page.goto(f"{live_server}/staff/services/{scene['service']}")
            problems += _check(page, "staff-service", width, last)
            page.goto(live_server + "/staff/branding")
            problems += _check(page, "staff-branding", width, last)
        finally:
            ctx.close()
    assert not problems, problems


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def inbox():
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Message

    class Collect(Message):
        def __init__(self):
            super().__init__()
            self.messages = []

        def handle_message(self, message):
            self.messages.append(message)

    handler = Collect()
    ctl = Controller(handler, hostname="127.0.0.1", port=_free_port())
    ctl.start()
    yield ctl, handler
    ctl.stop()


def test_staff_branding_reaches_panel_status_page_and_email(app, live_server, browser, scene, inbox, clock):
    from hostbay.core import notices
    from hostbay.core.services import Service

    ctl, box = inbox
    app.config["HOSTBAY_SMTP_URL"] = f"smtp://127.0.0.1:{ctl.port}"
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = ctx.new_page()
        page.set_default_timeout(15000)
        _login(page, live_server, scene["staff"])
        assert page.goto(live_server + "/staff/branding").status == 200
        page.get_by_label("Company name").fill("Example Co Hosting")
        page.get_by_label("Logo address").fill("/static/brand/example-logo.svg")
        page.get_by_label("Primary colour").fill("#fff200")  # too light: refused with the reason
        page.get_by_role("button", name="Save branding").click()
        assert "too light" in page.get_by_role("alert").inner_text()
        assert page.get_by_label("Primary colour").get_attribute("aria-invalid") == "true"
        assert "too light" in page.locator("#color-error").inner_text()  # next to the field, too
        _part(page, "form.stack", "form-with-error")
        page.get_by_label("Primary colour").fill("#7b2d8e")
        page.get_by_label("Support e-mail").fill("help@example.test")
        page.get_by_role("button", name="Save branding").click()
        assert "Branding saved" in page.get_by_role("status").first.inner_text()
        _part(page, ".flash", "flash-message")

        assert page.goto(live_server + "/panel/").status == 200
        assert page.title().endswith("Example Co Hosting")
        _part(page, "[data-empty]", "empty-state")  # the staff account has no services
        logo = page.locator("header.top .brand img")
        assert logo.get_attribute("alt") == "Example Co Hosting"
        assert page.evaluate("document.querySelector('header.top .brand img').naturalWidth") > 0  # it loads
        accent = page.evaluate("getComputedStyle(document.documentElement).getPropertyValue('--accent').trim()")
        assert accent == "#7b2d8e"
        button_bg = page.evaluate("getComputedStyle(document.querySelector('.button, button:not(.link)')).backgroundColor")
        assert button_bg in ("rgb(123, 45, 142)", "rgb(255, 255, 255)")
        FOLDER.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(FOLDER / "branded-dashboard-1280.png"), full_page=True)

        assert page.goto(live_server + "/status").status == 200  # "/status/" is the 404 page (with the brand too)
        assert page.locator("h1[data-indicator]").count() == 1  # the status page itself
        assert page.locator("header.top .brand img").get_attribute("alt") == "Example Co Hosting"
        assert "Example Co Hosting" in page.title() and "help@example.test" in page.inner_text("footer")
        page.screenshot(path=str(FOLDER / "branded-status-1280.png"), full_page=True)
        assert page.request.get(live_server + "/favicon.ico", max_redirects=0).status == 302
    finally:
        ctx.close()

    svc = _db.session.scalar(_db.select(Service).filter_by(uuid=scene["service"]))
    clock.set(svc.renews_at - timedelta(days=6))
    _db.session.commit()
    assert notices.create_reminders() == 1 and notices.send_pending() == 1
    msg = box.messages[-1]
    assert msg["From"].startswith("Example Co Hosting")
    parts = {p.get_content_type(): p.get_payload(decode=True).decode() for p in msg.walk() if not p.is_multipart()}
    assert "Example Co Hosting" in parts["text/plain"] and "help@example.test" in parts["text/plain"]
    html = parts["text/html"]
    assert "background:#7b2d8e" in html and 'alt="Example Co Hosting"' in html
    assert "/static/brand/example-logo.svg" in html
    (FOLDER / "branded-email.html").write_text(html)
