"""The demo's dedicated package works: the first order goes to the server with a (simulated) BMC and is installed
automatically, the next ones are queued for datacenter handling, and then the package shows as out of stock."""

import shutil

import pytest
from sqlalchemy import select

from hostbay.core import billing
from hostbay.core.catalog import Image, Package
from hostbay.core.db import db
from hostbay.core.demo import DEMO_CUSTOMER, load_demo
from hostbay.core.demo_dedicated import SLUG, demo_bmc_dir
from hostbay.core.inventory import HardwareServer
from hostbay.core.accounts import User
from hostbay.testing.bmcsim import BmcSimulator


def test_demo_dedicated_orders(app, client, tmp_path):
    if shutil.which("ipmitool") is None:
        pytest.skip("needs ipmitool")
    load_demo()
    load_demo()  # idempotent
    assert db.session.scalar(select(HardwareServer.id).where(HardwareServer.name == "demo-fra1-04")) is None
    pw = (demo_bmc_dir() / "password").read_text().strip()
    with BmcSimulator(tmp_path / "bmc", password=pw) as sim:
        bmc = db.session.scalar(select(HardwareServer).filter_by(name="demo-fra1-01"))
        assert bmc.auto_install and bmc.bmc_port == 6623 and bmc.power_target()["bmc_password"] == pw
        bmc.bmc_port = sim.port  # the test's own simulator instead of the one scripts/demo starts
        db.session.commit()
        user = db.session.scalar(select(User).filter_by(email=DEMO_CUSTOMER[0]))
        pkg = db.session.scalar(select(Package).filter_by(slug=SLUG))
        image = db.session.scalar(select(Image).filter_by(driver="ipmi", slug="debian-12"))
        ledger_topup = 30000
        from hostbay.core import ledger

        ledger.credit(user.id, ledger_topup, kind="topup", key="demo-ded-topup", description="Top-up")
        db.session.commit()
        a = billing.place_order(user, pkg, "monthly", "metal-a.example.com", image, key="d1")
        db.session.commit()  # each order's set-up job runs after its owner's commit
        b = billing.place_order(user, pkg, "monthly", "metal-b.example.com", image, key="d2")
        db.session.commit()
        db.session.expire_all()
        assert db.session.get(type(a), a.id).state == "active"
        assert sim.state()["boot_device"] == "pxe" and sim.state()["power"] == "on"
        assert db.session.get(type(b), b.id).state == "provisioning"
        billing.place_order(user, pkg, "monthly", "metal-c.example.com", image, key="d3")
    client.post("/login", data={"email": DEMO_CUSTOMER[0], "password": DEMO_CUSTOMER[1]})
    page = client.get("/panel/order").get_data(as_text=True)
    assert "Dedicated E-2388G" in page and "Out of stock" in page
