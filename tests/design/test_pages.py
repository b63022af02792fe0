"""Branding, public pages and error pages, through the real app and database."""

from __future__ import annotations

import pytest
from flask import abort, g

from hostbay.core import branding
from hostbay.testing.pytest_plugin import login


def _brand(client, **form):
    data = {"name": "Acme Hosting", "logo_url": "", "favicon_url": "", "color": "#7b2d8e", "support_email": "",
            "footer_links": ""}
    data.update(form)
    return client.post("/staff/branding", data=data)


def test_default_brand_and_favicon(client, db):
    resp = client.get("/")
    assert b"<title>hostbay" in resp.data and b'rel="icon" href="/favicon.ico"' in resp.data
    fav = client.get("/favicon.ico")
    assert fav.status_code == 200 and fav.mimetype == "image/svg+xml" and b'fill="#0b5cad"' in fav.data
    assert b"--accent: #0b5cad" in client.get("/brand.css").data


def test_staff_branding_is_used_everywhere_and_checked(client, db, make_user):
    admin = make_user(role="admin")
    login(client, admin)
    resp = _brand(client, color="#ffff00")  # yellow: white text on it is unreadable
    assert resp.status_code == 400 and b"too light" in resp.data
    assert branding.current().name == "hostbay"
    resp = _brand(client, name="", color="#7b2d8e")
    assert resp.status_code == 400 and b"company name is required" in resp.data
    assert _brand(client, footer_links="Terms https://x").status_code == 400
    resp = _brand(client, logo_url="/static/acme.svg", support_email="help@acme.test",
                  footer_links="Terms | https://acme.test/terms\nPrivacy | /privacy")
    assert resp.status_code == 302
    page = client.get("/panel/").data.decode()
    assert "<title>" in page and "Acme Hosting" in page.split("</title>")[0]
    assert 'src="/static/acme.svg" alt="Acme Hosting"' in page
    assert 'href="https://acme.test/terms">Terms</a>' in page and "help@acme.test" in page
    assert "--accent: #7b2d8e" in client.get("/brand.css").data.decode()
    fav = client.get("/favicon.ico")
    assert fav.status_code == 302 and fav.headers["Location"].endswith("/static/acme.svg")
    assert _brand(client, logo_url="javascript:alert(1)").status_code == 400


def test_branding_page_is_for_admins_only(client, db, make_user):
    assert client.get("/staff/branding").status_code == 404  # staff URLs are a 404 for anonymous visitors
    login(client, make_user())
    assert client.get("/staff/branding").status_code == 404
    client.post("/logout")
    login(client, make_user(role="support"))
    assert client.get("/staff/branding").status_code == 404


def test_brand_from_settings_on_first_start(app, db):
    app.config.update(HOSTBAY_BRAND_NAME="First Start Ltd", HOSTBAY_BRAND_COLOR="#116329")
    with app.test_request_context("/"):
        assert branding.current().name == "First Start Ltd" and branding.current().color == "#116329"
    app.config.update(HOSTBAY_BRAND_COLOR="#eeeeee")  # unreadable: the default is used, and a warning logged
    with app.test_request_context("/"):
        g.pop("hostbay_brand", None)  # the test's app context outlives the request; a real one does not
        assert branding.current().color == branding.DEFAULT_COLOR


def test_contrast_rule():
    assert round(branding.contrast_with_white("#0b5cad"), 1) >= 4.5
    assert branding.contrast_with_white("#ffffff") == pytest.approx(1.0)
    assert branding.contrast_with_white("#000000") == pytest.approx(21.0)


def test_pricing_lists_orderable_packages_without_login(client, db, make_package):
    make_package(name="Cloud S", monthly_cents=500)
    hidden = make_package(name="Secret L", monthly_cents=9900)
    hidden.visible = False
    db.session.commit()
    page = client.get("/pricing").data.decode()
    assert "Cloud S" in page and "$5.00" in page and "Monthly" in page
    assert "Secret L" not in page


def test_pricing_and_order_pages_say_the_addresses_a_package_includes(client, db, make_package, make_user):
    from hostbay.core import ipam

    v4 = ipam.create_pool(name="v4", cidr="198.51.100.0/24", gateway="198.51.100.1")
    v6 = ipam.create_pool(name="v6", cidr="2001:db8:5::/48", gateway="2001:db8:5::1", prefix=64)
    make_package(name="Default S", monthly_cents=500, ipv4_count=1, ipv6=True)
    make_package(name="Pools M", monthly_cents=900, ipv4_count=1, pool_addresses={str(v4.id): 2, str(v6.id): 1})
    db.session.commit()
    login(client, make_user(balance_cents=0))
    for url in ("/pricing", "/panel/order"):
        page = " ".join(client.get(url).data.decode().split())
        assert "1 IPv4 address and IPv6" in page, url
        assert "2 IPv4 addresses and 1 IPv6 address" in page, url  # the named pools, not ipv4_count


def test_help_is_seeded_editable_and_sanitised(client, db, make_user):
    page = client.get("/help").data.decode()
    for topic in ("prepaid billing", "renewed", "not renewed", "refund", "ISO", "console"):
        assert topic in page
    assert "retention period of 3 days" in page
    login(client, make_user(role="admin"))
    resp = client.post("/staff/help/new", data={
        "title": "Evil entry", "position": "1", "published": "1",
        "body": "Hi <script>alert(1)</script> [x](javascript:alert(2)) <img src=x onerror=alert(3)> **bold**"})
    assert resp.status_code == 302
    page = client.get("/help").data.decode()
    assert "<strong>bold</strong>" in page
    assert "<script>alert" not in page and 'href="javascript' not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)" in page  # shown as text
    entry = next(e for e in branding.help_entries() if e.title == "Evil entry")
    client.post(f"/staff/help/{entry.id}", data={"title": "Evil entry", "body": "x", "position": "1"})  # unpublish
    assert "Evil entry" not in client.get("/help").data.decode()


def test_error_pages_in_the_panel_style(app, client, db):
    @app.get("/_t/forbidden")
    def _forbidden():
        abort(403)

    @app.get("/_t/boom")
    def _boom():
        raise RuntimeError("internal detail that must not be shown")

    app.config["PROPAGATE_EXCEPTIONS"] = False
    for path, code, text in (("/nope", 404, "Page not found"), ("/_t/forbidden", 403, "Not allowed"),
                             ("/_t/boom", 500, "Something went wrong on our side")):
        resp = client.get(path)
        body = resp.data.decode()
        assert resp.status_code == code and text in body and "hostbay.css" in body and 'href="/help"' in body
    assert "internal detail" not in client.get("/_t/boom").data.decode()
    api = client.get("/api/v1/nope")
    assert api.status_code in (401, 404) and api.mimetype == "application/problem+json"  # the API keeps RFC 9457


@pytest.fixture
def app_config():
    return {"HOSTBAY_EMBEDDED": True}


def test_expired_form_and_embedded_notice(app, client, db, make_user):
    app.config["WTF_CSRF_ENABLED"] = True
    resp = client.post("/login", data={"email": "a@b.test", "password": "x"},
                       headers={"Referer": "http://localhost/login"})
    body = resp.data.decode()
    assert resp.status_code == 400 and "This form has expired" in body and "hostbay.css" in body
    assert 'href="http://localhost/login">Open the page again' in body
    app.config["WTF_CSRF_ENABLED"] = False
    login(client, make_user())
    assert b"data-embedded-note" not in client.get("/panel/").data
    client.post("/logout")
    login(client, make_user(role="admin"))
    assert b"data-embedded-note" in client.get("/staff/").data
