"""A visitor signs up in a real browser and lands on the dashboard."""

from hostbay.core.accounts import User


def test_signup_to_dashboard(live_server, page, shot, db):
    page.goto(live_server + "/")
    page.get_by_role("link", name="Sign up").first.click()
    page.get_by_label("Name").fill("Ada Customer")
    page.get_by_label("E-mail").fill("ada@example.test")
    page.get_by_label("Password (at least 10 characters)").fill("a strong password")
    page.get_by_role("button", name="Sign up").click()
    assert "We have sent the next step to ada@example.test" in page.locator("[data-register-sent]").inner_text()
    page.get_by_role("link", name="Log in").last.click()
    page.get_by_label("E-mail").fill("ada@example.test")
    page.get_by_label("Password").fill("a strong password")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/panel/")
    assert page.get_by_role("heading", name="Dashboard").is_visible()
    assert "$0.00" in page.content()
    shot(page, "01-signup-dashboard")
    db.session.expire_all()
    assert db.session.scalar(db.select(User).filter_by(email="ada@example.test")) is not None
    db.session.commit()


def test_too_short_password_is_explained(live_server, page):
    page.goto(live_server + "/register")
    page.get_by_label("E-mail").fill("bob@example.test")
    pw = page.get_by_label("Password (at least 10 characters)")
    pw.evaluate("el => el.removeAttribute('minlength')")
    pw.fill("short")
    page.get_by_role("button", name="Sign up").click()
    assert page.get_by_role("status").inner_text().startswith("Passwords need at least 10 characters")
