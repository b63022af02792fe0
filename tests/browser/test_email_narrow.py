"""A notification e-mail's HTML part, rendered by headless Chromium at a phone's width (390 px), fits the screen:
no horizontal scrolling (``document.documentElement.scrollWidth`` is not wider than the viewport), and the message
box, its links and its footer stay inside it. The e-mail is a real renewal reminder (with a long hostname and the
top-up link) built in a brand with a logo, a support address and footer links."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from hostbay.core.db import db as _db

FOLDER = Path(os.environ.get("HOSTBAY_TEST_ARTIFACTS", "artifacts")) / "design"
LONG_HOST = "averylonghostnameforthenarrowmailcheck.customerdomainwithoutbreaks.example.test"


def _reminder_html(app, clock, active_service, make_user) -> tuple[str, str]:
    from hostbay.core import branding, notices
    from hostbay.core.mail_templates import build

    branding.save(name="Example Co Hosting Europe Limited", logo_url="/static/brand/example-logo.svg",
                  favicon_url=None, color="#7b2d8e", support_email="customer-support@example-co-hosting.example.test",
                  footer_links="Terms of service | /terms\nPrivacy policy | /privacy\nImprint | /imprint")
    user = make_user(balance_cents=0)  # a low balance: the reminder carries the top-up link too
    svc = active_service(user=user)
    svc.hostname = LONG_HOST
    clock.set(svc.renews_at - timedelta(days=6))
    _db.session.commit()
    assert notices.create_reminders() == 1
    notice = _db.session.scalar(_db.select(notices.Notice).filter_by(user_id=user.id))
    assert LONG_HOST in notice.subject and "/panel/" in notice.body
    msg = build(user.email, notice.subject, notice.body)
    html = next(p for p in msg.walk() if p.get_content_type() == "text/html").get_payload(decode=True).decode()
    return html, notice.subject


def test_notification_email_fits_a_390_px_screen(app, browser, clock, active_service, make_user):
    html, subject = _reminder_html(app, clock, active_service, make_user)
    ctx = browser.new_context(viewport={"width": 390, "height": 844})
    try:
        ctx.route("**/*", lambda route: route.abort())  # a mail client shows it offline: no request leaves
        page = ctx.new_page()
        page.set_content(html)
        assert subject in page.locator("h1").inner_text()
        scroll, inner = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert inner == 390
        assert scroll <= inner, f"the e-mail scrolls sideways at 390 px ({scroll} > {inner})"
        # every element (the message box, the long hostname, the link, the footer) ends inside the screen
        wider = page.evaluate("""() => [...document.querySelectorAll('body *')]
            .filter(e => e.getBoundingClientRect().right > window.innerWidth + 0.5)
            .map(e => e.tagName + ':' + Math.round(e.getBoundingClientRect().right))""")
        assert wider == [], wider
        FOLDER.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(FOLDER / "email-reminder-390.png"), full_page=True)
    finally:
        ctx.close()
