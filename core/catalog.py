"""Catalogue: packages (what is sold), OS images, and nodes (where virtual servers run)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, CheckConstraint, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from . import clock
from .db import db, new_uuid
from .sealed import SealedSettings, SealedSettingsMixin

CYCLES = {"monthly": 1, "quarterly": 3, "semiannual": 6, "annual": 12}  # months
CYCLE_LABELS = {"monthly": "Monthly", "quarterly": "Quarterly", "semiannual": "Semi-annual", "annual": "Annual"}


class Package(db.Model):
    __tablename__ = "packages"

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True, default=new_uuid)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(120))
    kind: Mapped[str] = mapped_column(String(16), default="vps")  # vps, dedicated
    driver: Mapped[str] = mapped_column(String(64))  # virt driver name (vps) or power driver name (dedicated)
    description: Mapped[str] = mapped_column(Text, default="")
    vcpus: Mapped[int] = mapped_column(default=0)
    memory_mib: Mapped[int] = mapped_column(default=0)
    disk_gib: Mapped[int] = mapped_column(default=0)
    ipv4_count: Mapped[int] = mapped_column(default=1)
    ipv6: Mapped[bool] = mapped_column(default=False)
    # Included addresses per IP pool, {pool id (text): count}; empty: ``ipv4_count`` and ``ipv6`` from any pool
    # that serves the node. When set it replaces them: provisioning takes exactly these counts from these pools.
    pool_addresses: Mapped[dict] = mapped_column(JSON, default=dict)
    # ISO quota for the package's customers (NULL: not set here); the largest among a customer's live services
    # applies unless staff set an account override.
    iso_quota_count: Mapped[int | None] = mapped_column()
    iso_quota_bytes: Mapped[int | None] = mapped_column(BigInteger)
    port_speed_mbit: Mapped[int] = mapped_column(default=1000)
    traffic_quota_gib: Mapped[int | None] = mapped_column()  # None: unmetered
    hardware: Mapped[dict] = mapped_column(JSON, default=dict)  # dedicated: required hardware attributes
    visible: Mapped[bool] = mapped_column(default=True)  # shown in the order form
    retired: Mapped[bool] = mapped_column(default=False)  # no new orders; existing services keep running
    sort: Mapped[int] = mapped_column(default=0)

    prices = relationship("PackagePrice", back_populates="package", cascade="all, delete-orphan", lazy="selectin")

    def price_cents(self, cycle: str) -> int | None:
        for p in self.prices:
            if p.cycle == cycle:
                return p.price_cents
        return None

    @property
    def orderable(self) -> bool:
        return self.visible and not self.retired

    @property
    def cycles(self) -> list[str]:
        """The billing cycles this package has a price for, in calendar order."""
        priced = {p.cycle for p in self.prices}
        return [c for c in CYCLES if c in priced]

    def pool_counts(self) -> dict[int, int]:
        """The named pools and their included address counts (pools with a count of 0 left out)."""
        return {int(k): int(v) for k, v in (self.pool_addresses or {}).items() if int(v) > 0}

    def addresses_text(self) -> str:
        """The included addresses in plain words, e.g. "2 IPv4 addresses and 1 IPv6 address" for named pools or
        "1 IPv4 address and IPv6" by default (IPv6 from any pool: its prefix, not a count)."""
        counts = self.pool_counts()
        if not counts:
            v4 = f"{self.ipv4_count} IPv4 address{'es' if self.ipv4_count != 1 else ''}"
            return f"{v4} and IPv6" if self.ipv6 else v4
        from .db import db
        from .ipam_models import IpPool

        by_family = {4: 0, 6: 0}
        for pool_id, n in counts.items():
            pool = db.session.get(IpPool, pool_id)
            if pool is not None:
                by_family[pool.network.version] += n
        parts = [f"{n} IPv{v} address{'es' if n != 1 else ''}" for v, n in sorted(by_family.items()) if n]
        return " and ".join(parts) or "no addresses"

    def hardware_text(self) -> str:
        """Dedicated servers: the required hardware attributes in plain words (e.g. "cpu: E-2388G, ram_gib: 64")."""
        return ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in sorted((self.hardware or {}).items()))

    def bandwidth_text(self) -> str:
        if self.traffic_quota_gib:
            return f"{self.traffic_quota_gib:,} GiB traffic at {self.port_speed_mbit:,} Mbit/s"
        return f"Unmetered at {self.port_speed_mbit:,} Mbit/s"


class PackagePrice(db.Model):
    __tablename__ = "package_prices"
    __table_args__ = (UniqueConstraint("package_id", "cycle"),
                      CheckConstraint("price_cents >= 0", name="price_not_negative"))

    id: Mapped[int] = mapped_column(primary_key=True)
    package_id: Mapped[int] = mapped_column(ForeignKey("packages.id", ondelete="CASCADE"))
    cycle: Mapped[str] = mapped_column(String(16))
    price_cents: Mapped[int] = mapped_column(BigInteger)

    package = relationship("Package", back_populates="prices")


class Image(db.Model):
    """An OS image of a virtualization driver; ``source`` is the driver's template reference (admin-only)."""

    __tablename__ = "images"
    __table_args__ = (UniqueConstraint("driver", "slug"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True, default=new_uuid)
    driver: Mapped[str] = mapped_column(String(64))
    slug: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(120))
    source: Mapped[str] = mapped_column(String(500))
    os_family: Mapped[str] = mapped_column(String(32), default="linux")
    min_disk_gib: Mapped[int] = mapped_column(default=1)
    enabled: Mapped[bool] = mapped_column(default=True)
    # The guest tells hostbay when its first boot is done (cloud-init phone_home; see core/readiness.py). Off for
    # images that cannot (a custom installation): their set-up does not wait for a report.
    reports_readiness: Mapped[bool] = mapped_column(default=False)


class Node(SealedSettingsMixin, db.Model):
    """A host that runs virtual servers of one driver. ``settings`` is the driver's cleaned configuration and
    never reaches a customer page; its secret settings are stored sealed (core/sealed.py). ``used_*`` are reservations, changed only by conditional updates."""

    __tablename__ = "nodes"
    __settings_kind__ = "virt"
    __table_args__ = (
        CheckConstraint("used_vcpus <= vcpus", name="vcpus_fit"),
        CheckConstraint("used_memory_mib <= memory_mib", name="memory_fits"),
        CheckConstraint("used_disk_gib <= disk_gib", name="disk_fits"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    driver: Mapped[str] = mapped_column(String(64))
    location: Mapped[str] = mapped_column(String(64), default="default")
    settings: Mapped[dict] = mapped_column(SealedSettings, default=dict)
    enabled: Mapped[bool] = mapped_column(default=True)
    draining: Mapped[bool] = mapped_column(default=False, server_default="0")  # no new services are placed here
    vcpus: Mapped[int] = mapped_column(default=0)
    memory_mib: Mapped[int] = mapped_column(default=0)
    disk_gib: Mapped[int] = mapped_column(default=0)
    used_vcpus: Mapped[int] = mapped_column(default=0)
    used_memory_mib: Mapped[int] = mapped_column(default=0)
    used_disk_gib: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=lambda: clock.now())


def orderable_packages(kind: str | None = None) -> list[Package]:
    """Packages a customer can order now: visible, not retired, with at least one price; in display order.
    Hiding or retiring a package only removes it from here: existing services keep it and its price."""
    from sqlalchemy import select

    stmt = select(Package).where(Package.visible.is_(True), Package.retired.is_(False))
    if kind:
        stmt = stmt.where(Package.kind == kind)
    pkgs = db.session.scalars(stmt.order_by(Package.sort, Package.name, Package.id)).all()
    return [p for p in pkgs if p.prices]


def images_for(package: Package) -> list[Image]:
    """Enabled OS images that fit ``package``: same driver, minimum disk within the package's disk."""
    from sqlalchemy import select

    stmt = select(Image).where(Image.driver == package.driver, Image.enabled.is_(True))
    if package.kind == "vps":
        stmt = stmt.where(Image.min_disk_gib <= package.disk_gib)
    return list(db.session.scalars(stmt.order_by(Image.name, Image.id)).all())


def add_cycle(start: datetime, cycle: str, count: int = 1) -> datetime:
    """``start`` moved by ``count`` billing cycles in calendar months; the day is clamped to the month's length
    (Jan 31 + 1 month = Feb 28/29), keeping the time of day."""
    import calendar

    months = CYCLES[cycle] * count
    total = start.year * 12 + (start.month - 1) + months
    year, month = divmod(total, 12)
    month += 1
    day = min(start.day, calendar.monthrange(year, month)[1])
    return start.replace(year=year, month=month, day=day)
