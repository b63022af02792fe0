import csv
import io
import re

import pytest

from hostbay.core import billing, ledger, services
from hostbay.core.activity import AuditEntry
from hostbay.core.db import db
from hostbay.core.services import Service
from hostbay.testing.pytest_plugin import login


def _services(user):
    return db.session.scalars(db.select(Service).filter_by(user_id=user.id)).all()


@pytest.fixture
def shop(make_package, make_image):
    pkg = make_package(slug="vps-s", name="VPS Small", monthly_cents=1000, disk_gib=20)
    img = make_image(name="Debian 12", source="debian-12-secret-template.qcow2")
    return pkg, img


def test_order_flow(client, make_user, make_key, shop):
    pkg, img = shop
    user = make_user(balance_cents=5000)
    key = make_key(user, "laptop")
    login(client, user)
    page = client.get("/panel/order")
    assert page.status_code == 200 and b"VPS Small" in page.data and b"$10.00 monthly" in page.data
    page = client.get(f"/panel/order/{pkg.uuid}")
    assert b"Debian 12" in page.data and b"laptop" in page.data
    token = re.search(rb'name="key" value="([^"]+)"', page.data).group(1).decode()
    form = {"cycle": "quarterly", "image": img.uuid, "ssh_keys": [key.uuid], "hostname": "Web1.example.com",
            "key": token}
    review = client.post(f"/panel/order/{pkg.uuid}/review", data=form)
    assert review.status_code == 200
    assert b"Pay $30.00 and order" in review.data and b"web1.example.com" in review.data
    assert b"secret-template" not in review.data and not _services(user)
    done = client.post(f"/panel/order/{pkg.uuid}/confirm", data=form)
    assert done.status_code == 302
    (svc,) = _services(user)
    assert done.headers["Location"].endswith(f"/panel/services/{svc.uuid}")
    assert svc.ssh_key_ids == [key.id] and svc.state == services.PENDING
    again = client.post(f"/panel/order/{pkg.uuid}/confirm", data=form)  # double submit
    assert again.status_code == 302 and len(_services(user)) == 1
    assert ledger.balance_cents(user.id) == ledger.ledger_sum_cents(user.id) == 2000


def test_order_flow_exact_balance(client, make_user, shop):
    pkg, img = shop
    user = make_user(balance_cents=3000)
    login(client, user)
    form = {"cycle": "quarterly", "image": img.uuid, "hostname": "web1.example.com", "key": "k1"}
    assert client.post(f"/panel/order/{pkg.uuid}/confirm", data=form).status_code == 302
    assert client.post(f"/panel/order/{pkg.uuid}/confirm", data=form).status_code == 302
    assert len(_services(user)) == 1 and ledger.balance_cents(user.id) == ledger.ledger_sum_cents(user.id) == 0


def test_order_insufficient_balance_shows_shortfall(client, make_user, shop):
    pkg, img = shop
    user = make_user(balance_cents=250)
    login(client, user)
    form = {"cycle": "monthly", "image": img.uuid, "hostname": "web1.example.com", "key": "k1"}
    review = client.post(f"/panel/order/{pkg.uuid}/review", data=form)
    assert b"add at least\n  <strong>$7.50</strong>" in review.data and b'href="/panel/topup"' in review.data
    assert b"and order</button>" not in review.data
    resp = client.post(f"/panel/order/{pkg.uuid}/confirm", data=form)
    assert resp.status_code == 402 and b"Add at least $7.50" in resp.data and b"/panel/topup" in resp.data
    assert not _services(user) and ledger.balance_cents(user.id) == 250


def test_order_bad_input(client, make_user, shop, make_package):
    pkg, img = shop
    user = make_user(balance_cents=5000)
    login(client, user)
    resp = client.post(f"/panel/order/{pkg.uuid}/review",
                       data={"cycle": "monthly", "image": img.uuid, "hostname": "bad_name!", "key": "k"})
    assert resp.status_code == 400 and b"hostname consists of labels" in resp.data
    hidden = make_package(visible=False)
    assert client.get(f"/panel/order/{hidden.uuid}").status_code == 404
    assert not _services(user)


def test_change_package_pages(client, make_user, make_package, shop, clock, finish_job):
    pkg, img = shop
    big = make_package(slug="vps-b", name="VPS Big", monthly_cents=2000, disk_gib=40)
    tiny = make_package(slug="vps-t", name="VPS Tiny", monthly_cents=500, disk_gib=10)
    user = make_user(balance_cents=5000)
    clock.set(clock.now().replace(month=1, day=1, hour=0))
    svc = finish_job(billing.place_order(user, pkg, "monthly", "web1.example.com", img, key="o"))
    clock.set(clock.now().replace(day=16, hour=12))  # half of January
    login(client, user)
    page = client.get(f"/panel/services/{svc.uuid}/change-package")
    assert page.status_code == 200 and b"VPS Big" in page.data and b"$5.00 charged" in page.data
    assert b"$2.50 credited" in page.data
    review = client.post(f"/panel/services/{svc.uuid}/change-package/review", data={"package": big.uuid})
    assert b"$5.00" in review.data and b"Pay $5.00 and change" in review.data
    assert b"confirm_hostname" not in review.data
    # smaller disk: the hostname must be typed
    review = client.post(f"/panel/services/{svc.uuid}/change-package/review", data={"package": tiny.uuid})
    assert b"all its data will be erased" in review.data and b"confirm_hostname" in review.data
    assert b"$2.50" in review.data
    key = re.search(rb'name="key" value="([^"]+)"', review.data).group(1).decode()
    quote = re.search(rb'name="quote" value="([^"]+)"', review.data).group(1).decode()
    resp = client.post(f"/panel/services/{svc.uuid}/change-package/confirm",
                       data={"package": tiny.uuid, "key": key, "quote": quote,
                             "confirm_hostname": "wrong.example.com"})
    assert resp.status_code == 400 and b"Type the hostname web1.example.com" in resp.data
    db.session.refresh(svc)
    assert svc.state == services.ACTIVE and svc.package_id == pkg.id and ledger.balance_cents(user.id) == 4000
    resp = client.post(f"/panel/services/{svc.uuid}/change-package/confirm",
                       data={"package": tiny.uuid, "key": key, "quote": quote,
                             "confirm_hostname": "web1.example.com"})
    assert resp.status_code == 302
    db.session.refresh(svc)
    assert svc.state == services.REBUILDING and svc.package_id == tiny.id
    assert ledger.balance_cents(user.id) == 4250
    # busy now: the page says so and offers nothing
    page = client.get(f"/panel/services/{svc.uuid}/change-package")
    assert b"cannot be changed right now" in page.data and b"VPS Big" not in page.data


def test_change_upgrade_short_wallet(client, make_user, make_package, shop, finish_job):
    pkg, img = shop
    big = make_package(slug="vps-b", name="VPS Big", monthly_cents=9000, disk_gib=40)
    user = make_user(balance_cents=1000)
    svc = finish_job(billing.place_order(user, pkg, "monthly", "web1.example.com", img, key="o"))
    login(client, user)
    review = client.post(f"/panel/services/{svc.uuid}/change-package/review", data={"package": big.uuid})
    assert b"add at least" in review.data and b"/panel/topup" in review.data
    from hostbay.core.quotes import create_quote

    token = create_quote(svc, big).token
    resp = client.post(f"/panel/services/{svc.uuid}/change-package/confirm",
                       data={"package": big.uuid, "key": "k", "quote": token})
    assert resp.status_code == 402
    db.session.refresh(svc)
    assert svc.package_id == pkg.id


def test_other_customers_service_is_404(client, make_user, shop, finish_job):
    pkg, img = shop
    owner, other = make_user(balance_cents=5000), make_user()
    svc = finish_job(billing.place_order(owner, pkg, "monthly", "web1.example.com", img, key="o"))
    login(client, other)
    assert client.get(f"/panel/services/{svc.uuid}/change-package").status_code == 404
    assert client.post(f"/panel/services/{svc.uuid}/change-package/confirm", data={"key": "k"}).status_code == 404


def test_history_and_csv(client, make_user, shop):
    pkg, img = shop
    user = make_user(balance_cents=5000)
    billing.place_order(user, pkg, "monthly", "web1.example.com", img, key="o")
    ledger.credit(user.id, 100, kind="bonus", key="evil", description="=HYPERLINK(\"http://x\")")
    db.session.commit()
    login(client, user)
    page = client.get("/panel/billing")
    assert page.status_code == 200
    text = page.data.decode()
    assert "Order: VPS Small (monthly) for web1.example.com" in text and "$50.00" in text and "$40.00" in text
    assert text.index("$41.00") < text.index("$40.00")  # newest first, running balance
    resp = client.get("/panel/billing/export.csv")
    assert resp.mimetype == "text/csv" and "attachment" in resp.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(resp.data.decode())))
    assert [(r["type"], r["amount_usd"], r["balance_usd"]) for r in rows] == [
        ("Top-up", "50.00", "50.00"), ("Order", "-10.00", "40.00"), ("Bonus", "1.00", "41.00")]
    assert rows[2]["description"].startswith("'=")
    # another customer's export has none of it
    client.post("/logout")
    login(client, make_user())
    assert client.get("/panel/billing/export.csv").data.decode().count("\n") == 1


def test_refund_form(client, make_user):
    user = make_user(balance_cents=5000)
    login(client, user)
    assert b"Downgrade credits and bonuses stay in your wallet" in client.get("/panel/billing/refund").data
    resp = client.post("/panel/billing/refund", data={"amount": "60.00", "reason": "leaving"})
    assert resp.status_code == 400 and b"at most $50.00" in resp.data
    resp = client.post("/panel/billing/refund", data={"amount": "12.3x", "reason": "leaving"})
    assert resp.status_code == 400
    resp = client.post("/panel/billing/refund", data={"amount": "20.00", "reason": "leaving", "payout_details": "bc1q"})
    assert resp.status_code == 302
    page = client.get("/panel/billing").data
    assert b"Waiting for review" in page and b"$20.00" in page
    assert ledger.balance_cents(user.id) == 5000


def test_staff_pages_need_money_permission(client, make_user):
    customer = make_user(email="c@example.test", balance_cents=1000)
    for role, code in (("customer", 404), ("support", 404), ("billing", 200), ("admin", 200)):
        client.post("/logout")
        login(client, make_user(role=role))
        assert client.get("/staff/billing/").status_code == code, role
        assert client.get(f"/staff/billing/customers/{customer.uuid}").status_code == code, role
        assert client.get("/staff/billing/refunds").status_code == code, role
        resp = client.post(f"/staff/billing/customers/{customer.uuid}/money",
                           data={"action": "bonus", "amount": "1.00", "description": "x", "key": role})
        assert resp.status_code == (404 if code == 404 else 302), role
    assert ledger.balance_cents(customer.id) == 1200  # billing + admin


def test_staff_money_actions(client, make_user):
    customer = make_user(email="c@example.test", balance_cents=1000)
    staff = make_user(role="billing")
    login(client, staff)
    home = client.get("/staff/billing/?q=c@example")
    assert b"c@example.test" in home.data and b"Refund requests" in home.data
    page = client.get(f"/staff/billing/customers/{customer.uuid}")
    key = re.search(rb'name="key" value="charge-([^"]+)"', page.data).group(1).decode()
    url = f"/staff/billing/customers/{customer.uuid}/money"
    client.post(url, data={"action": "charge", "amount": "2.50", "description": "Extra IP", "key": "charge-" + key})
    client.post(url, data={"action": "charge", "amount": "2.50", "description": "Extra IP", "key": "charge-" + key})
    client.post(url, data={"action": "bonus", "amount": "5", "description": "Sorry", "note": "outage",
                           "key": "bonus-" + key})
    client.post(url, data={"action": "correction", "direction": "debit", "amount": "1.00", "note": "",
                           "key": "correction-" + key})  # no reason: refused
    client.post(url, data={"action": "correction", "direction": "debit", "amount": "1.00", "note": "typo",
                           "key": "correction-" + key})
    assert ledger.balance_cents(customer.id) == ledger.ledger_sum_cents(customer.id) == 1000 - 250 + 500 - 100
    page = client.get(f"/staff/billing/customers/{customer.uuid}").data.decode()
    assert "Note: outage" in page and staff.email in page
    bonus = ledger.find_entry(f"staff:bonus-{key}")
    resp = client.post(f"/staff/billing/entries/{bonus.uuid}/reverse", data={"reason": "wrong customer"})
    assert resp.status_code == 302 and ledger.balance_cents(customer.id) == 650
    assert db.session.scalar(db.select(db.func.count()).select_from(AuditEntry)
                             .where(AuditEntry.action.like("wallet.%"))) == 4


def test_staff_refund_queue(client, make_user):
    customer = make_user(balance_cents=5000)
    req = billing.request_refund(customer, 2000, "leaving", "bc1qxyz")
    staff = make_user(role="admin")
    login(client, staff)
    page = client.get("/staff/billing/refunds").data
    assert b"leaving" in page and b"bc1qxyz" in page and b"$20.00" in page
    client.post(f"/staff/billing/refunds/{req.uuid}/approve", data={"external_reference": ""})
    db.session.refresh(req)
    assert req.state == billing.REFUND_PENDING
    client.post(f"/staff/billing/refunds/{req.uuid}/approve", data={"external_reference": "tx-77", "note": "ok"})
    db.session.refresh(req)
    assert req.state == billing.REFUND_APPROVED and ledger.balance_cents(customer.id) == 3000
    req2 = billing.request_refund(customer, 1000, "again")
    client.post(f"/staff/billing/refunds/{req2.uuid}/reject", data={"note": "Bonus funds are not refundable."})
    db.session.refresh(req2)
    assert req2.state == billing.REFUND_REJECTED and ledger.balance_cents(customer.id) == 3000
    client.post("/logout")
    login(client, customer)
    page = client.get("/panel/billing").data
    assert b"Bonus funds are not refundable." in page and b"tx-77" in page


def test_staff_menu_lists_billing_for_money_staff(client, make_user):
    login(client, make_user(role="billing"))
    page = client.get("/staff/").data
    assert b'href="/staff/billing/"' in page and b'href="/staff/billing/refunds"' in page


def test_dedicated_order_pages(client, make_user, make_package):
    ded = make_package(slug="metal", name="Metal E-2388G", kind="dedicated", driver="ipmi", monthly_cents=9900,
                       hardware={"cpu": "E-2388G", "ram_gib": 64})
    user = make_user(balance_cents=20000)
    login(client, user)
    page = client.get("/panel/order")
    assert b"Dedicated servers" in page.data and b"cpu: E-2388G, ram gib: 64" in page.data
    page = client.get(f"/panel/order/{ded.uuid}")
    assert page.status_code == 200 and b'name="image"' not in page.data
    form = {"cycle": "monthly", "hostname": "metal1.example.com", "key": "k"}
    review = client.post(f"/panel/order/{ded.uuid}/review", data=form)
    assert b"Pay $99.00 and order" in review.data
    refused = client.post(f"/panel/order/{ded.uuid}/confirm", data=form)  # no server in the inventory yet
    assert refused.status_code == 400 and b"nothing was charged" in refused.data
    assert ledger.balance_cents(user.id) == 20000
    from hostbay.core.db import db
    from hostbay.core.inventory import HardwareServer

    db.session.add(HardwareServer(name="m1", cpu_model="Intel Xeon E-2388G", cpu_cores=8, ram_gib=64,
                                  disk_size_gib=960, location="fra1"))
    db.session.commit()
    assert client.post(f"/panel/order/{ded.uuid}/confirm", data=form).status_code == 302
    (svc,) = _services(user)
    assert svc.kind == "dedicated" and ledger.balance_cents(user.id) == 10100
