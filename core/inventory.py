"""Hardware inventory of dedicated servers, and matching an order to one of them.

A :class:`HardwareServer` is one physical machine: CPU, RAM, disks, NIC, where it stands (location, rack
position), how to reach its BMC (password encrypted with :mod:`hostbay.core.secretbox`) and a state:

    available → reserved → provisioning → in_use → wiping → available
    (maintenance and retired are set by staff; a failed wipe goes to maintenance)

Every state change is one conditional UPDATE on the expected state (:func:`move`), so two actors never both
move a server.

**Matching** (:func:`reserve_for`) happens inside the order's transaction, *before* the wallet is debited: the
first available server that meets the package's requirements is selected with ``LIMIT 1 FOR UPDATE SKIP LOCKED``
on PostgreSQL (so concurrent orders each lock a different row instead of queueing behind one another) and taken
with ``UPDATE … WHERE id = :candidate AND state = 'available'`` (on SQLite, ``BEGIN IMMEDIATE`` serialises the
orders and the conditional UPDATE alone decides). A server held by an order still in flight counts as taken. If no server can be taken, :class:`OutOfStock` is
raised, the transaction rolls back and nothing is charged. The smallest fitting server is preferred, so a small
package does not take the big machine a bigger package needs.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import datetime

from sqlalchemy import ForeignKey, String, Text, func, select, update
from sqlalchemy.orm import Mapped, mapped_column

from . import clock, secretbox
from .sealed import SealedString
from .activity import audit
from .db import db, is_postgres, new_uuid
from .errors import UserError

AVAILABLE, RESERVED, PROVISIONING, IN_USE, WIPING, MAINTENANCE, RETIRED = (
    "available", "reserved", "provisioning", "in_use", "wiping", "maintenance", "retired")
STATES = (AVAILABLE, RESERVED, PROVISIONING, IN_USE, WIPING, MAINTENANCE, RETIRED)
STATE_LABELS = {AVAILABLE: "Available", RESERVED: "Reserved", PROVISIONING: "Provisioning", IN_USE: "In use",
                WIPING: "Wiping", MAINTENANCE: "Maintenance", RETIRED: "Retired"}
DISK_TYPES = ("ssd", "nvme", "hdd")
# States staff may set by hand (the others follow orders, provisioning and wipes)
STAFF_STATES = {AVAILABLE: {MAINTENANCE, RETIRED}, MAINTENANCE: {AVAILABLE, RETIRED}, RETIRED: {MAINTENANCE},
                WIPING: {MAINTENANCE}, RESERVED: {AVAILABLE}}

# requirement keys of Package.hardware for dedicated packages
REQUIREMENTS = ("min_cores", "min_ram_gib", "min_disk_gib", "location", "cpu_pattern")


class OutOfStock(UserError):
    def __init__(self, package_name: str = ""):
        super().__init__("No server matching this package is available right now, so nothing was charged. "
                         "Please try again later or choose another package.")


class HardwareServer(db.Model):
    __tablename__ = "hardware_servers"

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True, default=new_uuid)
    name: Mapped[str] = mapped_column(String(64), unique=True)  # staff label, e.g. "fra1-r12-u07"
    cpu_model: Mapped[str] = mapped_column(String(120))
    cpu_cores: Mapped[int] = mapped_column()
    ram_gib: Mapped[int] = mapped_column()
    disk_count: Mapped[int] = mapped_column(default=1)
    disk_size_gib: Mapped[int] = mapped_column()
    disk_type: Mapped[str] = mapped_column(String(8), default="ssd")
    nic_speed_mbit: Mapped[int] = mapped_column(default=1000)
    location: Mapped[str] = mapped_column(String(64), index=True)
    rack: Mapped[str] = mapped_column(String(32), default="")
    rack_position: Mapped[str] = mapped_column(String(32), default="")
    power_driver: Mapped[str] = mapped_column(String(64), default="ipmi")
    bmc_host: Mapped[str | None] = mapped_column(String(255))
    bmc_port: Mapped[int] = mapped_column(default=623)
    bmc_username: Mapped[str | None] = mapped_column(String(64))
    # the password in memory, a MultiFernet token in the database (core/sealed.py); never logged or rendered
    bmc_password_sealed: Mapped[str | None] = mapped_column(SealedString)
    bmc_cipher_suite: Mapped[str | None] = mapped_column(String(4))
    auto_install: Mapped[bool] = mapped_column(default=False)  # PXE + installer plugin, else datacenter task
    boot_efi: Mapped[bool] = mapped_column(default=False)
    state: Mapped[str] = mapped_column(String(16), default=AVAILABLE, index=True)
    service_id: Mapped[int | None] = mapped_column(ForeignKey("services.id"), unique=True)
    notes: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=lambda: clock.now())
    updated_at: Mapped[datetime] = mapped_column(default=lambda: clock.now(), onupdate=lambda: clock.now())

    @property
    def disk_total_gib(self) -> int:
        return self.disk_count * self.disk_size_gib

    @property
    def label(self) -> str:
        return STATE_LABELS.get(self.state, self.state)

    @property
    def has_bmc(self) -> bool:
        return bool(self.bmc_host and self.bmc_username)

    def set_bmc_password(self, password: str | None) -> None:
        self.bmc_password_sealed = password or None

    @property
    def bmc_password_masked(self) -> str:
        return secretbox.mask(self.bmc_password_sealed)

    def power_target(self) -> dict:
        """The power driver's target (decrypts the password; never log or render it)."""
        return {"bmc_host": self.bmc_host, "bmc_port": self.bmc_port, "bmc_username": self.bmc_username,
                "bmc_password": self.bmc_password_sealed or "",
                "bmc_cipher_suite": self.bmc_cipher_suite}

    def hardware_text(self) -> str:
        return (f"{self.cpu_model}, {self.cpu_cores} cores, {self.ram_gib} GiB RAM, {self.disk_count} × "
                f"{self.disk_size_gib} GiB {self.disk_type.upper()}, {self.nic_speed_mbit:,} Mbit/s")

    def __repr__(self) -> str:  # never the password
        return f"<HardwareServer {self.name} {self.state}>"


# --------------------------------------------------------------------------------------------------------------
# State changes
# --------------------------------------------------------------------------------------------------------------

def move(server: HardwareServer, to: str, *, expect: str | set[str], **values) -> bool:
    """Conditional state change: ``server`` moves to ``to`` only if it is still in ``expect``."""
    expected = {expect} if isinstance(expect, str) else set(expect)
    res = db.session.execute(update(HardwareServer).where(HardwareServer.id == server.id,
                                                          HardwareServer.state.in_(expected))
                             .values(state=to, updated_at=clock.now(), **values)
                             .execution_options(synchronize_session=False))
    db.session.refresh(server)
    return res.rowcount == 1


def server_of(service) -> HardwareServer | None:
    return db.session.scalar(select(HardwareServer).where(HardwareServer.service_id == service.id))


# --------------------------------------------------------------------------------------------------------------
# Matching
# --------------------------------------------------------------------------------------------------------------

def requirements(package) -> dict:
    hw = dict(package.hardware or {})
    return {k: hw.get(k) for k in REQUIREMENTS if hw.get(k) not in (None, "")}


def _pattern(p: str) -> str:
    """A CPU pattern: ``*`` and ``?`` wildcards, case-insensitive, anywhere in the model name unless anchored."""
    esc = p.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    like = esc.replace("*", "%").replace("?", "_")
    return like if ("*" in p or "?" in p) else f"%{like}%"


def matching(package, state: str = AVAILABLE):
    """SELECT of the servers in ``state`` that meet ``package``'s requirements, smallest fit first."""
    req = requirements(package)
    q = select(HardwareServer).where(HardwareServer.state == state)
    if req.get("min_cores"):
        q = q.where(HardwareServer.cpu_cores >= int(req["min_cores"]))
    if req.get("min_ram_gib"):
        q = q.where(HardwareServer.ram_gib >= int(req["min_ram_gib"]))
    if req.get("min_disk_gib"):
        q = q.where(HardwareServer.disk_count * HardwareServer.disk_size_gib >= int(req["min_disk_gib"]))
    if req.get("location"):
        q = q.where(HardwareServer.location == req["location"])
    if req.get("cpu_pattern"):
        q = q.where(func.lower(HardwareServer.cpu_model).like(_pattern(req["cpu_pattern"]), escape="\\"))
    return q.order_by(HardwareServer.cpu_cores, HardwareServer.ram_gib,
                      HardwareServer.disk_count * HardwareServer.disk_size_gib, HardwareServer.id)


def stock(package) -> int:
    return db.session.scalar(select(func.count()).select_from(matching(package).order_by(None).subquery())) or 0


def reserve_for(service, package=None, candidates: int = 8) -> HardwareServer:
    """Take one available server matching the package for ``service`` (inside the caller's transaction).
    Raises OutOfStock when none can be taken; the caller rolls back, so nothing was charged."""
    package = package or service.package
    existing = server_of(service)
    if existing is not None:
        return existing
    for _ in range(candidates):
        q = matching(package).limit(1)
        if is_postgres():  # lock exactly the one row this order takes; concurrent orders skip it
            q = q.with_for_update(skip_locked=True, of=HardwareServer)
        ids = db.session.scalars(q.with_only_columns(HardwareServer.id)).all()
        if not ids:
            raise OutOfStock(package.name)
        for sid in ids:
            res = db.session.execute(update(HardwareServer)
                                     .where(HardwareServer.id == sid, HardwareServer.state == AVAILABLE,
                                            HardwareServer.service_id.is_(None))
                                     .values(state=RESERVED, service_id=service.id, updated_at=clock.now())
                                     .execution_options(synchronize_session=False))
            if res.rowcount == 1:
                server = db.session.get(HardwareServer, sid)
                db.session.refresh(server)
                service.infra_ref = {**(service.infra_ref or {}), "server": server.uuid}
                audit("server.reserved", "server", server.uuid, after={"service": service.uuid})
                return server
    raise OutOfStock(package.name)


def assign_by_hand(service, server: HardwareServer, actor) -> HardwareServer:
    """Staff: give ``service`` this available server (it need not match the package), releasing any other."""
    if server.state != AVAILABLE or server.service_id is not None:
        raise UserError("Only an available server can be assigned.")
    if service.kind != "dedicated":
        raise UserError("Only dedicated services get a hardware server.")
    old = server_of(service)
    if old is not None and old.state not in (RESERVED,):
        raise UserError("This service already runs on a server; remove it first.")
    if old is not None:
        move(old, AVAILABLE, expect=RESERVED, service_id=None)
    if not move(server, RESERVED, expect=AVAILABLE, service_id=service.id):
        raise UserError("That server was taken a moment ago.")
    service.infra_ref = {**(service.infra_ref or {}), "server": server.uuid}
    audit("server.assigned", "server", server.uuid, actor=actor,
          before={"service": None, "previous": old.uuid if old else None}, after={"service": service.uuid})
    return server


def record_demand(user, package) -> None:
    """An order refused for want of hardware: staff see it on the inventory page (the caller commits it even
    though the order fails)."""
    audit("dedicated.out_of_stock", "package", package.uuid, actor=user, detail=package.slug)
    db.session.flush()


def demand() -> list[dict]:
    """Per dedicated package: matching servers available, services waiting for setup, orders refused (30 days)."""
    from datetime import timedelta

    from .activity import AuditEntry
    from .catalog import Package
    from .services import PENDING, PROVISIONING, Service

    since = clock.now() - timedelta(days=30)
    refused = dict(db.session.execute(select(AuditEntry.target_id, func.count())
                                      .where(AuditEntry.action == "dedicated.out_of_stock",
                                             AuditEntry.created_at >= since)
                                      .group_by(AuditEntry.target_id)).all())
    waiting = dict(db.session.execute(select(Service.package_id, func.count())
                                      .where(Service.kind == "dedicated",
                                             Service.state.in_((PENDING, PROVISIONING)))
                                      .group_by(Service.package_id)).all())
    out = []
    for p in db.session.scalars(select(Package).where(Package.kind == "dedicated").order_by(Package.sort,
                                                                                         Package.name)):
        out.append({"package": p, "available": stock(p), "waiting": waiting.get(p.id, 0),
                    "refused": refused.get(p.uuid, 0)})
    return out


# --------------------------------------------------------------------------------------------------------------
# CSV import
# --------------------------------------------------------------------------------------------------------------

CSV_COLUMNS = ("name", "cpu_model", "cpu_cores", "ram_gib", "disk_count", "disk_size_gib", "disk_type",
               "nic_speed_mbit", "location", "rack", "rack_position", "bmc_host", "bmc_port", "bmc_username",
               "bmc_password", "bmc_cipher_suite", "auto_install", "boot_efi", "notes")
REQUIRED_COLUMNS = ("name", "cpu_model", "cpu_cores", "ram_gib", "disk_size_gib", "location")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ImportErrors(UserError):
    def __init__(self, errors: list[tuple[int, str]]):
        self.errors = errors
        super().__init__(f"Nothing was imported: {len(errors)} row(s) have errors.")


def _int(row, key, errors, line, default=None, lo=0):
    raw = (row.get(key) or "").strip()
    if raw == "":
        if default is None:
            errors.append((line, f"{key} is required"))
        return default
    try:
        v = int(raw)
        if v < lo:
            raise ValueError
        return v
    except ValueError:
        errors.append((line, f"{key} must be a whole number ≥ {lo}, not {raw[:20]!r}"))
        return default


def _bool(raw: str) -> bool:
    return (raw or "").strip().lower() in ("1", "yes", "true", "y", "on")


def parse_csv(text: str) -> tuple[list[dict], list[tuple[int, str]]]:
    """Rows as column dicts and every error as (line number, message). Nothing is written."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = [h.strip() for h in (reader.fieldnames or [])]
    reader.fieldnames = header
    errors: list[tuple[int, str]] = []
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    unknown = [c for c in header if c not in CSV_COLUMNS]
    if missing:
        errors.append((1, "missing column(s): " + ", ".join(missing)))
    if unknown:
        errors.append((1, "unknown column(s): " + ", ".join(unknown)))
    if errors:
        return [], errors
    rows, seen = [], {}
    existing = set(db.session.scalars(select(HardwareServer.name)))
    for i, row in enumerate(reader, start=2):
        row = {k: (v or "").strip() for k, v in row.items() if k}
        if not any(row.values()):
            continue
        before = len(errors)
        name = row.get("name", "")
        if not _NAME.match(name):
            errors.append((i, "name must be 1–64 letters, digits, '.', '_' or '-'"))
        elif name in existing:
            errors.append((i, f"a server named {name!r} exists already"))
        elif name in seen:
            errors.append((i, f"name {name!r} repeats line {seen[name]}"))
        seen.setdefault(name, i)
        if not row.get("cpu_model"):
            errors.append((i, "cpu_model is required"))
        if not row.get("location"):
            errors.append((i, "location is required"))
        vals = {"cpu_cores": _int(row, "cpu_cores", errors, i, lo=1), "ram_gib": _int(row, "ram_gib", errors, i, lo=1),
                "disk_count": _int(row, "disk_count", errors, i, default=1, lo=1),
                "disk_size_gib": _int(row, "disk_size_gib", errors, i, lo=1),
                "nic_speed_mbit": _int(row, "nic_speed_mbit", errors, i, default=1000, lo=10),
                "bmc_port": _int(row, "bmc_port", errors, i, default=623, lo=1)}
        if vals["bmc_port"] and vals["bmc_port"] > 65535:
            errors.append((i, "bmc_port must be at most 65535"))
        dtype = (row.get("disk_type") or "ssd").lower()
        if dtype not in DISK_TYPES:
            errors.append((i, f"disk_type must be one of {', '.join(DISK_TYPES)}"))
        suite = row.get("bmc_cipher_suite", "")
        if suite and not suite.isdigit():
            errors.append((i, "bmc_cipher_suite must be a number"))
        if row.get("bmc_host") and not row.get("bmc_username"):
            errors.append((i, "bmc_username is required with bmc_host"))
        if _bool(row.get("auto_install", "")) and not row.get("bmc_host"):
            errors.append((i, "auto_install needs a BMC (bmc_host)"))
        if len(errors) == before:
            rows.append({"name": name, "cpu_model": row["cpu_model"][:120], **vals, "disk_type": dtype,
                         "location": row["location"][:64], "rack": row.get("rack", "")[:32],
                         "rack_position": row.get("rack_position", "")[:32], "bmc_host": row.get("bmc_host") or None,
                         "bmc_username": row.get("bmc_username") or None, "bmc_password": row.get("bmc_password") or None,
                         "bmc_cipher_suite": suite or None, "auto_install": _bool(row.get("auto_install", "")),
                         "boot_efi": _bool(row.get("boot_efi", "")), "notes": row.get("notes", "")})
    return rows, errors


def import_csv(text: str, actor) -> list[HardwareServer]:
    """Create every server of the CSV or none: any row error raises ImportErrors (with each line's errors)
    before anything is written; the rows are added in one SAVEPOINT. The caller commits."""
    rows, errors = parse_csv(text)
    if errors:
        raise ImportErrors(errors)
    if not rows:
        raise ImportErrors([(1, "the file has no servers")])
    created = []
    with db.session.begin_nested():
        for r in rows:
            password = r.pop("bmc_password")
            server = HardwareServer(**r)
            server.set_bmc_password(password)
            db.session.add(server)
            created.append(server)
        db.session.flush()
    audit("inventory.imported", "inventory", None, actor=actor, after={"servers": [s.name for s in created]},
          detail=f"{len(created)} servers from CSV")
    return created
