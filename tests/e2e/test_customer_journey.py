"""A customer's whole journey in headless Chromium, on real components only (issue 8, first acceptance point).

The panel is served on loopback; its jobs go through Redis to a separate ``hostbay worker`` that drives the KVM
driver on the real libvirtd with QEMU; the console goes through the real ``hostbay console-proxy`` (websockify) to
the domain's real VNC port. The one stand-in is the crypto payment provider (a BTCPay Server Greenfield stand-in on
loopback): its answer is the signed ``InvoiceSettled`` webhook BTCPay sends, posted to the panel's real endpoint.

Without HOSTBAY_TEST_REDIS_URL the panel runs the jobs itself (its ``thread`` mode); everything else is the same.

sign up -> top up through BTCPay -> credited balance -> SSH key -> order a VPS with it -> live progress to running
-> noVNC console connected -> reinstall -> upgrade with the exact pro-rata amount shown before confirming. A
numbered screenshot of every step goes to ``$HOSTBAY_TEST_ARTIFACTS/e2e/`` (default ``artifacts/e2e/``).
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
import urllib.request

import pytest

from hostbay.core import ipam, ledger, payments
from hostbay.core.accounts import User
from hostbay.core.catalog import Image, Node
from hostbay.core.jobs import Operation
from hostbay.core.money import format_cents, prorata_cents
from hostbay.core.services import Service
from hostbay.testing.conformance import TEST_KEY

expect = pytest.importorskip("playwright.sync_api").expect

pytestmark = [pytest.mark.libvirt, pytest.mark.redis, pytest.mark.slow]

PASSWORD = "a strong password 42"
TOPUP = "20.00"
KEY_BODY = " ".join(TEST_KEY.split()[:2])  # type and key; the server gets the key's name as its comment
STEP_TIMEOUT = 240_000  # ms: one libvirt operation on a busy 2-core machine


def _read(db, fn):
    """``fn()`` on fresh data, then end the transaction at once: on SQLite an open read transaction of the test
    would hold off the panel's and the worker's writes."""
    db.session.expire_all()
    try:
        return fn()
    finally:
        db.session.commit()


def _service(db, svc_id) -> dict:
    def fn():
        svc = db.session.get(Service, svc_id)
        return {"state": svc.state, "domain": (svc.infra_ref or {}).get("domain"), "package_id": svc.package_id,
                "price_cents": svc.price_cents, "period_start": svc.period_start, "renews_at": svc.renews_at}
    return _read(db, fn)


def _wait_state_label(page, label: str, timeout=STEP_TIMEOUT):
    # locator assertions, not wait_for_function: the panel's CSP (script-src 'self') forbids eval in the page
    expect(page.locator("[data-service-state]")).to_have_text(label, timeout=timeout)


def _seed_user_data(dom) -> str:
    """The cloud-init user-data in the domain's NoCloud seed CD-ROM, read with pycdlib (not the driver's code)."""
    import io
    import xml.etree.ElementTree as ET

    import pycdlib

    root = ET.fromstring(dom.XMLDesc(0))
    path = next(d.find("source").get("file") for d in root.findall("./devices/disk[@device='cdrom']")
                if d.find("source") is not None and "seed" in d.find("source").get("file", ""))
    iso = pycdlib.PyCdlib()
    iso.open(path)
    try:
        out = io.BytesIO()
        iso.get_file_from_iso_fp(out, rr_path="/user-data")
    finally:
        iso.close()
    return out.getvalue().decode()


def _mark_page(page) -> None:
    """A marker that only this page load carries: still there later means the page was not reloaded."""
    page.evaluate("window.__sameLoad = 'journey'")


def _same_load(page) -> bool:
    return page.evaluate("window.__sameLoad === 'journey'")


def _allow_checkout_origin(app, origin: str) -> None:
    """The panel's CSP lets forms lead to https: pages only (the providers' checkouts); the stand-in checkout is
    plain http on loopback, so its origin is added to form-action for this test."""
    inner = app.wsgi_app

    def wsgi(environ, start_response):
        def start(status, headers, exc_info=None):
            headers = [(k, v.replace("form-action 'self' https:", f"form-action 'self' https: {origin}"))
                       if k.lower() == "content-security-policy" else (k, v) for k, v in headers]
            return start_response(status, headers, exc_info)
        return inner(environ, start)

    app.wsgi_app = wsgi


def test_customer_journey(kvm_host, worker, console_proxy, live_server, btcpay_api, browser, shots, app, db,
                          clock, make_user, make_package):
    # -- what staff set up beforehand: a KVM node, an image, an address pool, two packages, the BTCPay gateway --
    node = Node(name="kvm-e2e-node-secret", driver="kvm", settings=kvm_host.settings(name_prefix=os.environ.get("HOSTBAY_TEST_E2E_PREFIX", "hbe2e-")), vcpus=8,
                memory_mib=8192, disk_gib=100)
    image = Image(driver="kvm", slug="blank", name="Blank disk", source="blank.qcow2")
    db.session.add_all([node, image])
    db.session.commit()
    ipam.create_pool(name="e2e-v4", cidr="192.0.2.0/28", gateway="192.0.2.1", nameservers=["192.0.2.53"],
                     node_ids=[node.id])
    make_package(slug="vps-s", name="VPS S", driver="kvm", vcpus=1, memory_mib=128, disk_gib=1, port_speed_mbit=100,
                 monthly_cents=500)
    big = make_package(slug="vps-m", name="VPS M", driver="kvm", vcpus=2, memory_mib=192, disk_gib=2,
                       port_speed_mbit=100, monthly_cents=1000)
    admin = make_user(role="admin")
    payments.save_gateway_config("btcpay", btcpay_api.settings(), True, admin)
    node_name, big_id = node.name, big.id
    db.session.commit()

    _allow_checkout_origin(app, btcpay_api.url)

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" and "Content Security Policy" in m.text
            else None)
    # The provider's hosted checkout page is the one part of BTCPay the stand-in does not serve.
    page.route(f"{btcpay_api.url}/i/**", lambda route: route.fulfill(
        status=200, content_type="text/html",
        body="<!doctype html><title>BTCPay checkout</title><h1>BTCPay Server checkout (stand-in)</h1>"
             "<p>Pay this invoice with Bitcoin. The provider confirms the payment to the shop by webhook.</p>"))
    try:
        # 1. sign up ---------------------------------------------------------------------------------------
        page.goto(live_server + "/")
        page.get_by_role("link", name="Sign up").first.click()
        page.get_by_label("Name").fill("Ada Customer")
        page.get_by_label("E-mail").fill("ada@example.test")
        page.get_by_label("Password (at least 10 characters)").fill(PASSWORD)
        shots(page, "signup-form")
        page.get_by_role("button", name="Sign up").click()
        # the same answer for a new and an existing address; a new account logs in right away
        page.get_by_role("link", name="Log in").last.click()
        page.get_by_label("E-mail").fill("ada@example.test")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url("**/panel/")
        assert page.get_by_role("heading", name="Dashboard").is_visible()
        shots(page, "dashboard-new-customer")
        user_id = _read(db, lambda: db.session.scalar(db.select(User.id).filter_by(email="ada@example.test")))
        assert user_id is not None

        def balance():
            return _read(db, lambda: ledger.balance_cents(user_id))

        assert balance() == 0

        # 2. top up through the crypto plugin ------------------------------------------------------------------
        page.goto(live_server + "/panel/topup")
        page.get_by_label(re.compile(r"^Amount in US dollars")).fill(TOPUP)
        shots(page, "topup-form")
        page.get_by_role("button", name="Continue to payment").click()
        page.wait_for_url(f"{btcpay_api.url}/i/**")
        invoice_id = page.url.rsplit("/", 1)[1]
        invoice = btcpay_api.invoices[invoice_id]
        assert invoice["amount"] == TOPUP and invoice["currency"] == "USD"
        shots(page, "provider-checkout")
        # the customer comes back to the page BTCPay redirects to after checkout
        page.goto(invoice["checkout"]["redirectURL"])
        assert page.inner_text("#topup-label") != "Credited"
        _mark_page(page)
        # the provider settles the invoice and tells the panel by its signed webhook
        btcpay_api.set_state(invoice_id, "Settled", paid_usd=TOPUP)
        headers, body = btcpay_api.webhook(invoice_id, "InvoiceSettled")
        req = urllib.request.Request(f"{live_server}/payments/webhook/btcpay", data=body, headers=headers,
                                     method="POST")
        with urllib.request.urlopen(req, timeout=20) as resp:
            assert resp.status == 200, resp.read()
        expect(page.locator("#topup-status")).to_have_attribute("data-final", "true", timeout=30_000)
        assert _same_load(page), "the top-up page reloaded instead of updating itself"
        assert page.inner_text("#topup-balance") == "$20.00"
        assert page.inner_text("#topup-label") == "Paid: added to your wallet"
        expect(page.locator("#topup-checkout")).to_be_hidden()  # nothing is left to pay
        shots(page, "topup-credited")
        assert balance() == 2000

        # 3. add an SSH key and order a VPS on the KVM driver with it -----------------------------------------
        page.goto(live_server + "/panel/account/ssh-keys")
        page.get_by_label("Name").fill("laptop")
        page.get_by_label(re.compile("^Public key")).fill(TEST_KEY)
        page.get_by_role("button", name="Add key").click()
        expect(page.get_by_role("row", name=re.compile("laptop"))).to_be_visible()
        shots(page, "ssh-key-added")
        page.goto(live_server + "/panel/order")
        page.get_by_role("row", name=re.compile("VPS S")).get_by_role("link", name="Choose").click()
        page.get_by_label(re.compile("Monthly")).check()
        page.get_by_label("Operating system").select_option(label="Blank disk")
        page.get_by_role("checkbox", name=re.compile("laptop")).check()
        page.get_by_label("Hostname").fill("web1.example.test")
        shots(page, "order-configure")
        page.get_by_role("button", name="Review order").click()
        assert page.inner_text(".charge") == "$5.00"
        expect(page.locator(".summary")).to_contain_text("laptop")
        shots(page, "order-review")
        page.get_by_role("button", name="Pay $5.00 and order").click()
        page.wait_for_url(re.compile(r"/panel/services/[0-9a-f-]{36}$"))
        svc_uuid = page.url.rsplit("/", 1)[1]

        # 4. watch the live progress reach running without reloading ----------------------------------------
        _mark_page(page)
        svc_id = _read(db, lambda: db.session.scalar(db.select(Service.id).filter_by(uuid=svc_uuid)))
        page.wait_for_selector(".ops progress")
        assert page.inner_text("[data-service-state]") in ("Waiting to be set up", "Being set up")
        assert page.get_by_role("button", name="Open console").count() == 0
        shots(page, "service-setting-up")
        _wait_state_label(page, "Active")
        # once the set-up is done the page shows what the server now allows, still without a reload
        expect(page.get_by_role("button", name="Open console")).to_be_visible(timeout=30_000)
        assert _same_load(page), "the service page reloaded instead of updating itself"
        ops_text = page.inner_text(".ops")  # a finished operation states its outcome, without a percentage
        assert "Your server is ready" in ops_text and "100% Your server is ready" not in ops_text
        shots(page, "service-running")
        svc = _service(db, svc_id)
        assert svc["state"] == "active"
        import libvirt

        conn = kvm_host.conn()
        dom = conn.lookupByName(svc["domain"])
        assert dom.info()[0] == libvirt.VIR_DOMAIN_RUNNING
        assert KEY_BODY in _seed_user_data(dom)  # the key chosen in the order reached the server
        assert balance() == 1500
        assert "192.0.2.2" in page.inner_text("main")
        for secret in (node_name, svc["domain"]):
            assert secret not in page.content()

        # 5. console: noVNC connected to the domain's VNC port through the console proxy -------------------
        page.get_by_role("button", name="Open console").click()
        page.wait_for_selector("#console-screen[data-state=connected]", timeout=30_000)
        assert page.inner_text("#console-status") == "Connected"
        assert page.locator("#console-screen canvas").count() == 1
        page.wait_for_timeout(1500)  # let the first frames of the screen arrive
        width = page.evaluate("document.querySelector('#console-screen canvas').width")
        assert width >= 640, f"canvas {width} px wide: no framebuffer from QEMU"
        shots(page, "console-connected")

        # 6. reinstall -------------------------------------------------------------------------------------
        page.get_by_role("link", name="Back to the server").click()
        page.get_by_label(re.compile("^Reinstall with")).select_option(label="Blank disk")
        page.locator("#confirm-reinstall").fill(page.locator("label[for=confirm-reinstall] code").inner_text())  # the hostname, as the page asks for it
        page.get_by_role("button", name="Reinstall").click()
        page.wait_for_url(re.compile(rf"/panel/services/{svc_uuid}$"))
        _mark_page(page)
        shots(page, "reinstall-started")
        _wait_state_label(page, "Active")
        expect(page.get_by_role("link", name="Change package")).to_be_visible(timeout=30_000)
        assert _same_load(page)
        reinstall = _read(db, lambda: db.session.scalars(db.select(Operation.state).filter_by(
            service_id=svc_id, kind="service.reinstall")).all())
        assert reinstall == ["succeeded"], reinstall
        shots(page, "reinstall-done")
        svc = _service(db, svc_id)
        dom = conn.lookupByName(svc["domain"])
        assert dom.info()[0] == libvirt.VIR_DOMAIN_RUNNING
        assert KEY_BODY in _seed_user_data(dom)  # "your SSH keys are kept"

        # 7. upgrade to the bigger package: the exact pro-rata amount is shown before confirming ------------
        # The panel's clock stands still for the quote shown and the amount charged, ten days and a bit into the
        # month, so the pro-rata share is a real fraction of the price difference.
        with clock.held(ahead=timedelta(days=10, hours=7, minutes=13)) as now:
            page.get_by_role("link", name="Change package").click()
            page.get_by_role("row", name=re.compile("VPS M")).get_by_role("button", name="Choose").click()
            svc = _service(db, svc_id)
            expected = prorata_cents(500, 1000, now, svc["period_start"], svc["renews_at"])
            assert 0 < expected < 500
            assert page.inner_text(".charge") == format_cents(expected)
            shots(page, "upgrade-review")
            page.get_by_role("button", name=f"Pay {format_cents(expected)} and change").click()
            page.wait_for_url(re.compile(rf"/panel/services/{svc_uuid}$"))
        _mark_page(page)
        shots(page, "upgrade-started")
        _wait_state_label(page, "Active")
        expect(page.get_by_role("link", name="Change package")).to_be_visible(timeout=30_000)
        assert _same_load(page)
        expect(page.locator(".facts")).to_contain_text("VPS M")
        shots(page, "upgrade-done")
        svc = _service(db, svc_id)
        assert svc["package_id"] == big_id and svc["price_cents"] == 1000
        assert balance() == 1500 - expected
        dom = conn.lookupByName(svc["domain"])
        state, max_kib, _mem, vcpus, _cpu = dom.info()
        assert state == libvirt.VIR_DOMAIN_RUNNING
        assert (max_kib, vcpus) == (192 * 1024, 2)
        assert "VPS M" in page.inner_text("main")
        conn.close()
        assert not errors, errors
    finally:
        context.close()
    assert len(shots.taken) >= 13
