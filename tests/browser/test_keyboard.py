"""The service page with the keyboard only: Tab reaches the skip link first and then the actions, every focused
element shows a visible focus ring (``:focus-visible`` outline or box-shadow), an action runs with Enter, and the
operations list is a polite live region that updates in place (no reload) while an operation runs."""

from __future__ import annotations

import os
from pathlib import Path

from playwright.sync_api import expect

from hostbay.core import jobs
from hostbay.core.db import db as _db

FOLDER = Path(os.environ.get("HOSTBAY_TEST_ARTIFACTS", "artifacts")) / "design"

FOCUSED = """() => {
  const e = document.activeElement, s = getComputedStyle(e), r = e.getBoundingClientRect();
  return {tag: e.tagName, text: (e.innerText || e.value || e.getAttribute('aria-label') || '').trim().slice(0, 60),
          cls: e.className, visible: e.matches(':focus-visible'), outline: s.outlineStyle,
          outlineWidth: parseFloat(s.outlineWidth) || 0, shadow: s.boxShadow,
          onScreen: r.width > 0 && r.height > 0 && r.right > 0 && r.bottom > 0};
}"""


def _login(page, base, email, password="correct horse battery"):
    page.goto(base + "/login")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(lambda url: "/login" not in url)


def test_service_page_by_keyboard_with_visible_focus_and_a_live_progress_region(live_server, browser, db, make_user,
                                                                              active_service):
    customer = make_user(balance_cents=5000)
    svc = active_service(user=customer)
    op = jobs.Operation(key="keyboard:restart", kind="core.ping", service_id=svc.id, user_id=customer.id,
                        state=jobs.RUNNING, title="Restart", progress_pct=40, progress_text="Restarting",
                        heartbeat_at=jobs._utcnow())
    _db.session.add(op)
    _db.session.flush()
    email, uuid, op_id = customer.email, svc.uuid, op.id
    _db.session.commit()  # before the browser's requests: an open test transaction would make them wait

    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = ctx.new_page()
        page.set_default_timeout(15000)
        _login(page, live_server, email)
        assert page.goto(f"{live_server}/panel/services/{uuid}").status == 200

        # the live progress region: announced politely, and rewritten in place while the operation runs
        region = page.locator("#operations [aria-live]")
        assert region.count() == 1 and region.get_attribute("aria-live") == "polite"
        assert "40% Restarting" in region.inner_text()
        page.evaluate("window.__sameDocument = true")
        row = _db.session.get(jobs.Operation, op_id)
        row.state, row.progress_pct, row.progress_text, row.finished_at = jobs.SUCCEEDED, 100, "Restarted", jobs._utcnow()
        _db.session.commit()
        expect(region).to_contain_text("Restarted", timeout=15000)  # the page polls every 2 s
        assert page.evaluate("window.__sameDocument === true")  # updated without a reload
        assert "40%" not in region.inner_text()
        assert page.locator("#operations [aria-live=polite]").count() == 1  # still a live region after the refresh

        # Tab from the top of the page: the skip link first, then on to the actions, each with a visible focus ring
        page.evaluate("document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0)")
        page.locator("body").focus()
        seen = []
        for _ in range(80):
            page.keyboard.press("Tab")
            info = page.evaluate(FOCUSED)
            seen.append(info)
            assert info["tag"] != "BODY", seen
            assert info["visible"], info  # keyboard focus matches :focus-visible
            assert (info["outline"] != "none" and info["outlineWidth"] >= 2) or info["shadow"] != "none", info
            assert info["onScreen"], info
            if info["tag"] == "BUTTON" and info["text"] in ("Stop", "Restart", "Start"):
                break
        else:
            raise AssertionError(f"no power action reached by Tab: {[s['text'] for s in seen]}")
        assert seen[0]["cls"] == "skip", seen[0]  # the first Tab lands on "skip to content"
        assert any(s["text"] == "Operations" for s in seen)  # the section index is on the way
        FOLDER.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(FOLDER / "keyboard-focus-1280.png"))

        # Enter runs the focused action; the page comes back with the operation in the live region
        label = seen[-1]["text"]
        with page.expect_navigation() as nav:
            page.keyboard.press("Enter")
        assert nav.value.status == 200
        status = page.get_by_role("status").first.inner_text().strip()
        assert status.startswith(label) and status.endswith(": started."), status  # "Stop server: started."
        assert status.removesuffix(": started.") in page.locator("#operations [aria-live=polite]").inner_text()
    finally:
        ctx.close()
