"""Every flow of the demo finishes, on the demo's own data (``hostbay demo``), in headless Chromium:

the demo customer tops up through the test gateway's hosted pay page (which sends the gateway's signed webhook to
the panel's real endpoint), orders a VPS, watches its progress to running, opens the console (the real
``hostbay console-proxy`` relaying the simulated driver's text screen) and sees the screen; the demo admin signs
in with two-factor authentication and lands on the staff home, with a Staff link in the navigation.

Screenshots go to ``$HOSTBAY_TEST_ARTIFACTS/demo``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from hostbay.core import ledger
from hostbay.core.accounts import User
from hostbay.core.db import db as _db
from hostbay.core.demo import DEMO_ADMIN, DEMO_ADMIN_TOTP_SECRET, DEMO_CUSTOMER, load_demo

expect = pytest.importorskip("playwright.sync_api").expect
pyotp = pytest.importorskip("pyotp")

VENDOR = Path(__file__).resolve().parents[2] / "web" / "static" / "vendor" / "novnc" / "core" / "rfb.js"
pytestmark = pytest.mark.skipif(not VENDOR.exists(), reason="noVNC not installed: run scripts/assets")


@pytest.fixture
def demo_shots():
    folder = Path(os.environ.get("HOSTBAY_TEST_ARTIFACTS", "artifacts")) / "demo"
    folder.mkdir(parents=True, exist_ok=True)
    count = iter(range(1, 100))

    def _shot(page, name):
        page.screenshot(path=str(folder / f"{next(count):02d}-{name}.png"), full_page=True)

    return _shot


def _balance(email: str) -> int:
    _db.session.rollback()
    uid = _db.session.scalar(_db.select(User.id).filter_by(email=email))
    value = ledger.balance_cents(uid)
    _db.session.rollback()
    return value


def _bright_pixels(page) -> int:
    """How many pixels of the console canvas are light (the text of the screen)."""
    return page.evaluate("""() => {
        const c = document.querySelector('#console-screen canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 0; i < d.length; i += 4) if (d[i] > 180 && d[i + 1] > 180 && d[i + 2] > 180) n++;
        return n;
    }""")


def test_demo_flows_finish(app, live_server, console_proxy, browser, demo_shots):
    app.config["HOSTBAY_JOBS"] = "thread"  # the demo's in-process jobs
    load_demo()
    start_balance = _balance(DEMO_CUSTOMER[0])
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    page.set_default_timeout(20_000)
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    try:
        # the customer logs in and tops up through the test gateway's hosted pay page
        page.goto(live_server + "/login")
        page.get_by_label("E-mail").fill(DEMO_CUSTOMER[0])
        page.get_by_label("Password").fill(DEMO_CUSTOMER[1])
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url("**/panel/")
        page.get_by_role("link", name="Add funds").first.click()
        page.get_by_label(re.compile("^Amount in US dollars")).fill("25")
        expect(page.get_by_label("Test payments")).to_be_checked()
        page.get_by_role("button", name="Continue to payment").click()
        page.wait_for_url(re.compile(r"/test-gateway/pay/fk_[0-9a-f]+$"))
        assert page.inner_text("[data-amount]") == "$25.00"
        demo_shots(page, "test-gateway-pay-page")
        page.get_by_role("button", name="Pay $25.00").click()
        page.wait_for_url(re.compile(r"/panel/topup/[0-9a-f-]{36}$"))
        expect(page.locator("#topup-label")).to_have_text("Paid: added to your wallet", timeout=30_000)
        demo_shots(page, "topup-credited")
        assert _balance(DEMO_CUSTOMER[0]) == start_balance + 2500

        # orders a VPS and watches its progress to running
        page.goto(live_server + "/panel/order")
        page.get_by_role("row", name=re.compile("VPS Small")).get_by_role("link", name="Choose").click()
        page.get_by_label(re.compile("Monthly")).check()
        page.get_by_label("Operating system").select_option(label="Debian 12")
        page.get_by_label("Hostname").fill("demo1.example.com")
        page.get_by_role("button", name="Review order").click()
        assert page.inner_text(".charge") == "$5.00"
        page.get_by_role("button", name="Pay $5.00 and order").click()
        page.wait_for_url(re.compile(r"/panel/services/[0-9a-f-]{36}$"))
        page.wait_for_selector(".ops progress")
        seen = set()
        for _ in range(120):
            seen.add(page.inner_text(".ops"))
            if page.inner_text("[data-service-state]") == "Active":
                break
            page.wait_for_timeout(250)
        assert page.inner_text("[data-service-state]") == "Active"
        assert any(re.search(r"\b([1-9]\d?)% ", text) for text in seen), seen  # progress was shown on the way
        demo_shots(page, "service-running")
        assert _balance(DEMO_CUSTOMER[0]) == start_balance + 2500 - 500

        # opens the console and sees its screen
        page.reload()
        expect(page.locator("[data-power-state]")).to_have_attribute("data-power-state", "running")
        assert page.get_by_role("button", name="Start", exact=True).count() == 0  # running: no Start
        page.get_by_role("button", name="Open console").click()
        page.wait_for_selector("#console-screen[data-state=connected]", timeout=30_000)
        assert page.inner_text("#console-status") == "Connected"
        for _ in range(40):
            if _bright_pixels(page) > 500:
                break
            page.wait_for_timeout(250)
        assert _bright_pixels(page) > 500, "the console shows no screen"
        demo_shots(page, "console-screen")
    finally:
        ctx.close()

    # the admin signs in with two-factor and finds the staff home
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    page.set_default_timeout(20_000)
    try:
        page.goto(live_server + "/login")
        page.get_by_label("E-mail").fill(DEMO_ADMIN[0])
        page.get_by_label("Password").fill(DEMO_ADMIN[1])
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url("**/login/two-factor")
        page.get_by_label(re.compile("code", re.I)).first.fill(pyotp.TOTP(DEMO_ADMIN_TOTP_SECRET).now())
        page.get_by_role("button", name=re.compile("Log in|Continue|Verify", re.I)).click()
        page.wait_for_url(re.compile(r"/staff/$"))
        expect(page.get_by_role("navigation", name="Main").get_by_role("link", name="Staff")).to_be_visible()
        demo_shots(page, "admin-staff-home")
    finally:
        ctx.close()
    assert not [e for e in errors if "Content Security Policy" in e], errors
