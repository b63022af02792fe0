"""Inventory: matching rules, stock, atomic reservation in the order transaction, CSV import, secrets at rest."""

import logging
import re

import pytest
from sqlalchemy import func, select, text

from hostbay.core import billing, inventory, ledger, secretbox
from hostbay.core.activity import AuditEntry
from hostbay.core.inventory import HardwareServer, OutOfStock
from hostbay.core.ledger import LedgerEntry
from hostbay.core.services import Service
from hostbay.testing.pytest_plugin import login


def test_matching_rules_and_smallest_fit(db, ded_package, add_server):
    pkg = ded_package(cpu_pattern="*E-23??G*")
    small = add_server(cpu_cores=8, ram_gib=32)
    add_server(cpu_cores=16, ram_gib=128)
    add_server(cpu_cores=4)                               # too few cores
    add_server(ram_gib=16)                                # too little RAM
    add_server(disk_count=1, disk_size_gib=480)           # 480 GiB < 500
    add_server(location="ams1")                           # elsewhere
    add_server(cpu_model="AMD EPYC 4344P")                # CPU pattern
    add_server(state="maintenance")
    assert inventory.stock(pkg) == 2
    ids = [s.name for s in db.session.scalars(inventory.matching(pkg))]
    assert ids[0] == small.name and len(ids) == 2
    epyc = ded_package(cpu_pattern="epyc")  # a plain pattern: substring, case-insensitive
    assert [s.cpu_model for s in db.session.scalars(inventory.matching(epyc))] == ["AMD EPYC 4344P"]
    assert inventory.stock(ded_package(cpu_pattern="xeon", location="ams1")) == 1
    assert inventory.stock(ded_package(cpu_pattern="E-2388", min_cores=32)) == 0


def test_order_reserves_one_server_and_out_of_stock_charges_nothing(db, make_user, ded_package, add_server):
    pkg = ded_package()
    server = add_server()
    a, b = make_user(balance_cents=20000), make_user(balance_cents=20000)
    svc = billing.place_order(a, pkg, "monthly", "m1.example.com", key="k1")
    db.session.expire_all()
    server = db.session.get(HardwareServer, server.id)
    assert server.service_id == svc.id and server.state in ("reserved", "provisioning")
    with pytest.raises(OutOfStock):
        billing.place_order(b, pkg, "monthly", "m2.example.com", key="k2")
    assert ledger.balance_cents(b.id) == 20000 and ledger.ledger_sum_cents(b.id) == 20000
    assert db.session.scalar(select(func.count()).select_from(Service).where(Service.user_id == b.id)) == 0
    assert db.session.scalar(select(func.count()).select_from(LedgerEntry)
                             .where(LedgerEntry.kind == "order", LedgerEntry.amount_cents < 0)) == 1
    [d] = inventory.demand()
    assert d["available"] == 0 and d["refused"] == 1


def test_order_page_shows_out_of_stock(db, client, make_user, ded_package, add_server):
    pkg = ded_package()
    user = make_user(balance_cents=20000)
    login(client, user)
    page = client.get("/panel/order").get_data(as_text=True)
    assert "Out of stock" in page and pkg.name in page
    add_server()
    page = client.get("/panel/order").get_data(as_text=True)
    assert "Out of stock" not in page and f"/panel/order/{pkg.uuid}" in page


CSV_OK = """name,cpu_model,cpu_cores,ram_gib,disk_count,disk_size_gib,disk_type,nic_speed_mbit,location,rack,rack_position,bmc_host,bmc_port,bmc_username,bmc_password,bmc_cipher_suite,auto_install,boot_efi,notes
fra1-a,Intel Xeon E-2388G,8,64,2,960,nvme,10000,fra1,R4,U10,10.0.0.10,623,operator,s3cret-one,17,yes,yes,first
fra1-b,AMD EPYC 4344P,8,128,2,1920,ssd,25000,fra1,R4,U12,,,,,,,,
"""


def test_csv_import_all_rows(db, make_user):
    staff = make_user(role="admin")
    created = inventory.import_csv(CSV_OK, staff)
    db.session.commit()
    assert [s.name for s in created] == ["fra1-a", "fra1-b"]
    a = db.session.scalar(select(HardwareServer).filter_by(name="fra1-a"))
    assert a.disk_total_gib == 1920 and a.auto_install and a.boot_efi and a.bmc_cipher_suite == "17"
    assert a.power_target()["bmc_password"] == "s3cret-one"
    b = db.session.scalar(select(HardwareServer).filter_by(name="fra1-b"))
    assert not b.has_bmc and b.bmc_password_sealed is None and b.state == "available"


def test_csv_import_row_errors_import_nothing(db, make_user, client):
    staff = make_user(role="admin")
    bad = CSV_OK + ("fra1-c,Xeon,eight,64,1,960,ssd,1000,fra1,R1,U1,,,,,,,,\n"
                    "fra1-a,Xeon,8,64,1,960,tape,1000,fra1,R1,U2,,,,,,,,\n"
                    "fra1-d,Xeon,8,64,1,960,ssd,1000,,R1,U3,,,,,,yes,,\n")
    with pytest.raises(inventory.ImportErrors) as err:
        inventory.import_csv(bad, staff)
    lines = {line for line, _ in err.value.errors}
    msgs = " | ".join(m for _, m in err.value.errors)
    assert lines == {4, 5, 6}
    assert "cpu_cores must be a whole number" in msgs and "repeats line 2" in msgs and "disk_type" in msgs
    assert "location is required" in msgs and "auto_install needs a BMC" in msgs
    db.session.rollback()
    assert db.session.scalar(select(func.count()).select_from(HardwareServer)) == 0
    # the staff page shows the same row-level errors and imports nothing
    login(client, staff)
    resp = client.post("/staff/inventory/import", data={"csv": bad})
    page = resp.get_data(as_text=True)
    assert resp.status_code == 400 and "Nothing was imported" in page and "repeats line 2" in page
    assert db.session.scalar(select(func.count()).select_from(HardwareServer)) == 0
    resp = client.post("/staff/inventory/import", data={"csv": CSV_OK})
    assert resp.status_code == 200 and db.session.scalar(select(func.count()).select_from(HardwareServer)) == 2


def test_bmc_password_encrypted_at_rest_masked_and_never_logged(db, app, client, make_user, add_server, caplog):
    caplog.set_level(logging.DEBUG)
    staff = make_user(role="admin")
    login(client, staff)
    resp = client.post("/staff/inventory/new", data={
        "name": "fra1-x", "cpu_model": "Xeon", "cpu_cores": "8", "ram_gib": "64", "disk_size_gib": "960",
        "location": "fra1", "bmc_host": "10.1.1.1", "bmc_username": "operator",
        "bmc_password": "Very-Secret-Pw-42"})
    assert resp.status_code == 302
    raw = db.session.execute(text("SELECT bmc_password_sealed FROM hardware_servers WHERE name = 'fra1-x'")).scalar()
    assert raw and "Very-Secret-Pw-42" not in raw
    server = db.session.scalar(select(HardwareServer).filter_by(name="fra1-x"))
    assert secretbox.open_(raw) == "Very-Secret-Pw-42"
    page = client.get(f"/staff/inventory/{server.uuid}").get_data(as_text=True)
    assert "Very-Secret-Pw-42" not in page and "••••••••" in page
    audits = " ".join(str(a.after) + a.detail for a in db.session.scalars(select(AuditEntry)))
    assert "Very-Secret-Pw-42" not in audits and "Very-Secret-Pw-42" not in caplog.text
    assert "Very-Secret-Pw-42" not in repr(server)


def test_secret_keys_rotate_newest_first(tmp_path):
    from cryptography.fernet import Fernet

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    token = secretbox.seal("pw", {"HOSTBAY_SECRET_KEYS": old})
    both = {"HOSTBAY_SECRET_KEYS": f"{new},{old}"}
    assert secretbox.open_(token, both) == "pw"
    rotated = secretbox.rotate(token, both)
    assert secretbox.open_(rotated, {"HOSTBAY_SECRET_KEYS": new}) == "pw"
    with pytest.raises(secretbox.SecretError):
        secretbox.open_(token, {"HOSTBAY_SECRET_KEYS": new})
    # unset: one key generated into the instance folder, 0600, reused
    cfg = {"INSTANCE_PATH": str(tmp_path)}
    t = secretbox.seal("x", cfg)
    assert (tmp_path / "secret_keys").stat().st_mode & 0o777 == 0o600
    assert secretbox.open_(t, cfg) == "x"


def test_staff_assign_by_hand(db, client, make_user, make_service, ded_package, add_server):
    pkg = ded_package()
    staff, cust = make_user(role="admin"), make_user()
    svc = make_service(cust, pkg, state="provisioning")
    other = add_server(cpu_cores=4)  # does not match the package: staff may still choose it
    login(client, staff)
    page = client.get(f"/staff/inventory/{other.uuid}").get_data(as_text=True)
    assert svc.hostname in page
    client.post(f"/staff/inventory/{other.uuid}/assign", data={"service": svc.uuid})
    db.session.expire_all()
    assert inventory.server_of(svc).id == other.id and db.session.get(HardwareServer, other.id).state == "reserved"


def test_secrets_rotate_command_reencrypts_with_the_newest_key(app, db, add_server):
    from cryptography.fernet import Fernet

    from hostbay.web.cli import main

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    app.config["HOSTBAY_SECRET_KEYS"] = old
    server = add_server(bmc_host="10.0.0.9", bmc_username="operator")
    server.set_bmc_password("rotate-me")
    db.session.commit()
    app.config["HOSTBAY_SECRET_KEYS"] = f"{new},{old}"
    out = app.test_cli_runner().invoke(main, ["secrets", "rotate"])
    assert out.exit_code == 0 and "re-encrypted 1" in out.output, out.output
    app.config["HOSTBAY_SECRET_KEYS"] = new  # the old key is gone: the secret still opens
    db.session.expire_all()
    assert db.session.get(HardwareServer, server.id).power_target()["bmc_password"] == "rotate-me"


def test_staff_inventory_page_shows_demand_and_changes_states(db, client, make_user, ded_package, add_server):
    pkg = ded_package()
    staff, cust = make_user(role="admin"), make_user(balance_cents=50000)
    a = add_server()
    add_server(bmc_host="10.0.0.7", bmc_username="operator")
    billing.place_order(cust, pkg, "monthly", "x1.example.com", key="x1")
    billing.place_order(cust, pkg, "monthly", "x2.example.com", key="x2")
    with pytest.raises(OutOfStock):
        billing.place_order(cust, pkg, "monthly", "x3.example.com", key="x3")
    login(client, staff)
    page = client.get("/staff/inventory/").get_data(as_text=True)
    row = re.search(rf'<tr data-package="{pkg.slug}">.*?</tr>', page, re.S).group(0)
    assert re.search(r"data-available>0", row) and "out of stock" in row
    assert re.search(r"data-waiting>2<", row) and re.search(r"data-refused>1<", row)
    assert "10.0.0.7:623" in page and a.name in page
    c = add_server()
    resp = client.post(f"/staff/inventory/{c.uuid}/state", data={"state": "maintenance", "reason": "fan"})
    assert resp.status_code == 302
    assert db.session.get(HardwareServer, c.id).state == "maintenance"
    client.post(f"/staff/inventory/{c.uuid}/state", data={"state": "in_use"})  # not a staff state: refused
    db.session.expire_all()
    assert db.session.get(HardwareServer, c.id).state == "maintenance"
    assert inventory.stock(pkg) == 0
