"""Idempotent demo data for the embedded mode: run ``hostbay demo`` as often as you like."""

from __future__ import annotations

from flask import current_app

from . import ledger
from .accounts import User, create_user
from .catalog import Image, Node, Package, PackagePrice
from .db import db

DEMO_CUSTOMER = ("demo@hostbay.test", "demo-password-123")
DEMO_ADMIN = ("admin@hostbay.test", "admin-password-123")

PACKAGES = [
    # slug, name, vcpus, memory MiB, disk GiB, IPv4, port Mbit/s, monthly price cents
    ("vps-small", "VPS Small", 1, 1024, 20, 1, 1000, 500),
    ("vps-medium", "VPS Medium", 2, 4096, 60, 1, 1000, 1500),
    ("vps-large", "VPS Large", 4, 8192, 120, 2, 10000, 3000),
]
DISCOUNT_MONTHS = {"monthly": 1, "quarterly": 3, "semiannual": 6, "annual": 11}  # annual: one month free


def _driver() -> str:
    """The virtualization driver of the demo packages: HOSTBAY_DEMO_DRIVER when that driver is loaded, else the
    simulated one."""
    virt = current_app.extensions["hostbay"].drivers.get("virt", {})
    wanted = current_app.config.get("HOSTBAY_DEMO_DRIVER") or "fake"
    return wanted if wanted in virt else "fake"


def _demo_pool() -> None:
    """Addresses for the demo servers (a documentation range): every package has an IPv4 address, and an order
    waits for one until a pool serves the node."""
    from .ipam import IpPool, create_pool

    if db.session.scalar(db.select(IpPool.id).filter_by(name="demo-ipv4")) is None:
        create_pool(name="demo-ipv4", cidr="192.0.2.0/24", gateway="192.0.2.1", nameservers=["192.0.2.53"],
                    commit=False)


def load_demo() -> list[str]:
    driver = _driver()
    for sort, (slug, name, cpu, mem, disk, v4, speed, monthly) in enumerate(PACKAGES):
        pkg = db.session.scalar(db.select(Package).filter_by(slug=slug))
        if pkg is None:
            pkg = Package(slug=slug, name=name, kind="vps", driver=driver, vcpus=cpu, memory_mib=mem, disk_gib=disk,
                          ipv4_count=v4, port_speed_mbit=speed, sort=sort,
                          description=f"{cpu} vCPU, {mem // 1024} GiB RAM, {disk} GiB NVMe")
            pkg.prices = [PackagePrice(cycle=c, price_cents=monthly * m) for c, m in DISCOUNT_MONTHS.items()]
            db.session.add(pkg)
    # Debian and Ubuntu are cloud images that report readiness (their servers are active after the guest's
    # phone-home, simulated by the fake driver); AlmaLinux stands for an image that cannot report.
    for slug, name, reports in (("debian-12", "Debian 12", True), ("ubuntu-24.04", "Ubuntu 24.04", True),
                                ("alma-9", "AlmaLinux 9", False)):
        if db.session.scalar(db.select(Image).filter_by(driver=driver, slug=slug)) is None:
            db.session.add(Image(driver=driver, slug=slug, name=name, source=f"{slug}.qcow2",
                                 reports_readiness=reports))
    if db.session.scalar(db.select(Node).filter_by(name="demo-node-1")) is None:
        db.session.add(Node(name="demo-node-1", driver=driver, settings={"step_delay": 1, "guest_boot_seconds": 3} if driver == "fake" else {},
                            vcpus=64, memory_mib=256 * 1024, disk_gib=4000))
    db.session.flush()
    _demo_pool()
    out = []
    for (email, password), role in ((DEMO_CUSTOMER, "customer"), (DEMO_ADMIN, "admin")):
        user = db.session.scalar(db.select(User).filter_by(email=email))
        if user is None:
            user = create_user(email, password, role=role, name="Demo " + role.title())
        if role == "customer":
            ledger.credit(user.id, 10000, kind="topup", key="demo:initial-topup", description="Demo balance")
        out.append(f"{role:9s} {email} / {password}")
    db.session.commit()
    return ["Demo data ready. Log in with:"] + out
