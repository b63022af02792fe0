"""Idempotent demo data for the embedded mode: run ``hostbay demo`` as often as you like."""

from __future__ import annotations

from flask import current_app

from . import ledger
from .accounts import User, create_user
from .catalog import Image, Node, Package, PackagePrice
from .db import db

DEMO_CUSTOMER = ("demo@hostbay.test", "demo-password-123")
DEMO_ADMIN = ("admin@hostbay.test", "admin-password-123")
# The demo admin signs in with two-factor authentication, as staff must outside the demo: add this (published,
# demo-only) secret to an authenticator app, or run `oathtool --totp -b <secret>`.
DEMO_ADMIN_TOTP_SECRET = "HOSTBAYDEMOADMINTWOFACTORSECRET2"
DEMO_GATEWAY = "fake"  # the test payment gateway, with its hosted pay page

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
        create_pool(name="demo-ipv4", cidr="192.0.2.0/24", gateway="192.0.2.1", nameservers=["192.0.2.53"])


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
    node = db.session.scalar(db.select(Node).filter_by(name="demo-node-1"))
    if node is None:
        node = Node(name="demo-node-1", driver=driver, settings={}, vcpus=64, memory_mib=256 * 1024, disk_gib=4000)
        db.session.add(node)
    if driver == "fake" and not (node.settings or {}).get("console_screen"):
        # the simulated servers answer the console with a text screen, and their guests report readiness
        node.settings = {**(node.settings or {}), "step_delay": 1, "console_screen": True, "guest_boot_seconds": 3}
    db.session.flush()
    _demo_pool()
    from .demo_dedicated import load_demo_dedicated  # dedicated package and inventory servers

    load_demo_dedicated()
    out = []
    for (email, password), role in ((DEMO_CUSTOMER, "customer"), (DEMO_ADMIN, "admin")):
        user = db.session.scalar(db.select(User).filter_by(email=email))
        if user is None:
            user = create_user(email, password, role=role, name="Demo " + role.title())
        if role == "customer":
            ledger.credit(user.id, 10000, kind="topup", key="demo:initial-topup", description="Demo balance")
        out.append(f"{role:9s} {email} / {password}")
        if role == "admin":
            if not user.totp_secret:
                from .credentials import TotpState

                user.totp_secret = DEMO_ADMIN_TOTP_SECRET
                if db.session.get(TotpState, user.id) is None:
                    db.session.add(TotpState(user_id=user.id, last_step=0))
            out.append(f"          two-factor secret {user.totp_secret} (oathtool --totp -b {user.totp_secret}); "
                       "staff home: /staff/")
            _demo_gateway(user)
            _demo_staff_role(user)
    db.session.commit()
    extra = _plugin_demo_data()
    return ["Demo data ready. Log in with:"] + out + extra + [
        "REST API: /api/v1/docs (viewer), /api/v1/openapi.json; a token: Account -> API tokens, or "
        f"`hostbay api-token create --email {DEMO_CUSTOMER[0]} --scope read`"]


def _demo_gateway(admin: User) -> None:
    """Enable the test payment gateway, so a top-up in the demo goes through its hosted pay page and settles."""
    from . import payments

    if DEMO_GATEWAY in payments.gateway_classes() and payments.gateway_config(DEMO_GATEWAY) is None:
        import secrets

        payments.save_gateway_config(DEMO_GATEWAY, {"secret": secrets.token_hex(16)}, True, admin)


def _demo_staff_role(admin: User) -> None:
    """A custom staff role (Staff accounts page): help-desk staff answer tickets and look customers up."""
    from .staff_roles import StaffRole, save_role

    if db.session.scalar(db.select(StaffRole).filter_by(name="helpdesk")) is None:
        save_role("helpdesk", "Help desk", ["tickets", "customers", "audit"], admin)


def _plugin_demo_data() -> list[str]:
    """Each plugin's own demo data (``hostbay_demo_data``); a failing plugin is logged and skipped."""
    import logging

    lines: list[str] = []
    for impl in current_app.extensions["hostbay"].hook.hostbay_demo_data.get_hookimpls():
        try:
            lines.extend(impl.function() or [])
        except Exception:  # noqa: BLE001 - one plugin's demo data must not stop the demo
            db.session.rollback()
            logging.getLogger(__name__).exception("demo data of plugin %s failed", impl.plugin_name)
    return lines
