"""Demo data of dedicated servers (called by ``hostbay demo``): a dedicated package, its OS images and three
inventory servers. When ipmitool is installed, the first server has a BMC — the simulator that ``scripts/demo``
starts on 127.0.0.1:6623 (``hostbay.testing.bmcsim``) — and automated installs; the other two have no BMC, so
their orders are queued for datacenter handling (resolve them under Staff → Datacenter tasks)."""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

from flask import current_app

from .catalog import Image, Package, PackagePrice
from .db import db
from .inventory import HardwareServer

DEMO_BMC_PORT = 6623
SLUG = "metal-e2388g"


def demo_bmc_dir() -> Path:
    return Path(current_app.config.get("INSTANCE_PATH") or "instance") / "demo-bmc"


def _bmc_password() -> str:
    d = demo_bmc_dir()
    d.mkdir(parents=True, exist_ok=True)
    path = d / "password"
    if path.exists():
        return path.read_text().strip()
    pw = secrets.token_hex(8)  # IPMI v2 passwords have at most 20 bytes
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(pw)
    return pw


def load_demo_dedicated() -> None:
    if db.session.scalar(db.select(Package).filter_by(slug=SLUG)) is None:
        pkg = Package(slug=SLUG, name="Dedicated E-2388G", kind="dedicated", driver="ipmi", ipv4_count=1,
                      port_speed_mbit=10000, sort=10,
                      description="Intel Xeon E-2388G, 8 cores, 64 GiB RAM, 2 × 960 GiB NVMe, Frankfurt",
                      hardware={"min_cores": 8, "min_ram_gib": 64, "min_disk_gib": 1800, "location": "fra1",
                                "cpu_pattern": "E-2388G"})
        pkg.prices = [PackagePrice(cycle=c, price_cents=9900 * m) for c, m in
                      {"monthly": 1, "quarterly": 3, "annual": 11}.items()]
        db.session.add(pkg)
    for slug, name in (("debian-12", "Debian 12"), ("ubuntu-24.04", "Ubuntu 24.04")):
        if db.session.scalar(db.select(Image).filter_by(driver="ipmi", slug=slug)) is None:
            db.session.add(Image(driver="ipmi", slug=slug, name=name, source=f"{slug}/amd64", min_disk_gib=1))
    with_bmc = shutil.which("ipmitool") is not None
    for i in (1, 2, 3):
        name = f"demo-fra1-{i:02d}"
        if db.session.scalar(db.select(HardwareServer.id).filter_by(name=name)) is not None:
            continue
        server = HardwareServer(name=name, cpu_model="Intel Xeon E-2388G", cpu_cores=8, ram_gib=64, disk_count=2,
                                disk_size_gib=960, disk_type="nvme", nic_speed_mbit=10000, location="fra1",
                                rack="R12", rack_position=f"U{10 + i}")
        if i == 1 and with_bmc:
            server.bmc_host, server.bmc_port, server.bmc_username = "127.0.0.1", DEMO_BMC_PORT, "operator"
            server.bmc_cipher_suite, server.auto_install = "3", True
            server.set_bmc_password(_bmc_password())
            server.notes = "BMC simulator started by scripts/demo"
        db.session.add(server)
    db.session.flush()
