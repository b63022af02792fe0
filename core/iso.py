"""Customer ISO images: upload with quota, staff approval, mount and eject.

Files live in ``HOSTBAY_ISO_DIR`` (default ``<instance>/isos``), outside every static folder, under a random stored
name; the client's file name is only a display label. An upload is streamed to a ``.part`` file in that folder with
a size limit while its SHA-256 is computed, then checked (size, ISO 9660 signature) and admitted under the account's
quota in one transaction that locks the account row, so two parallel uploads cannot both take the last slot.

Staff approve or reject pending images (audited). Only approved images of the service's owner can be mounted.
Mount and eject run as jobs (``service.mount_iso`` / ``service.eject_iso``) that call the service's VirtDriver and
log customer activity. At most one image is mounted per service (``iso_mounts.service_id`` is unique); an image with
a mount row cannot be deleted (the foreign key refuses it even under a race).
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO

from flask import current_app
from sqlalchemy import BigInteger, ForeignKey, String, Text, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column, relationship

from . import clock, jobs, services
from .accounts import User
from .activity import audit, log_activity
from .db import db, new_uuid
from .errors import FatalDriverError, NotFound, TransientDriverError, UserError

PENDING, APPROVED, REJECTED = "pending", "approved", "rejected"
STATES = (PENDING, APPROVED, REJECTED)
STATE_LABELS = {PENDING: "Waiting for approval", APPROVED: "Approved", REJECTED: "Rejected"}
COUNTED = (PENDING, APPROVED)  # rejected images do not count towards the quota (their file is removed)

ISO9660_OFFSET = 32769  # sector 16 (2048-byte sectors) + 1: the primary volume descriptor's "CD001"
ISO9660_MAGIC = b"CD001"
MOUNTING, MOUNTED, EJECTING = "mounting", "mounted", "ejecting"
_STORED_NAME = re.compile(r"^[0-9a-f]{32}\.iso$")


class IsoImage(db.Model):
    __tablename__ = "iso_images"

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True, default=new_uuid)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(120))           # display name, from the client's file name
    stored_name: Mapped[str] = mapped_column(String(64), unique=True)  # random; never the client's name
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default=PENDING, index=True)
    staff_note: Mapped[str] = mapped_column(Text, default="")
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    decided_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=lambda: clock.now())

    user = relationship("User", foreign_keys=[user_id])
    decided_by = relationship("User", foreign_keys=[decided_by_id])

    @property
    def label(self) -> str:
        return STATE_LABELS.get(self.state, self.state)

    @property
    def path(self) -> Path:
        if not _STORED_NAME.match(self.stored_name or ""):
            raise ValueError("unsafe stored name")
        return iso_dir() / self.stored_name


class IsoQuota(db.Model):
    """Optional per-account override of the ISO quota (NULL column: the largest quota among the packages of the
    account's live services, else the configured default)."""

    __tablename__ = "iso_quotas"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    max_count: Mapped[int | None] = mapped_column()
    max_bytes: Mapped[int | None] = mapped_column(BigInteger)


class IsoMount(db.Model):
    """The image in a service's CD-ROM drive (or on its way in or out)."""

    __tablename__ = "iso_mounts"

    id: Mapped[int] = mapped_column(primary_key=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("services.id"), unique=True)
    iso_id: Mapped[int] = mapped_column(ForeignKey("iso_images.id"), index=True)
    state: Mapped[str] = mapped_column(String(16), default=MOUNTING)
    created_at: Mapped[datetime] = mapped_column(default=lambda: clock.now())

    iso = relationship("IsoImage", lazy="joined")


# --------------------------------------------------------------------------------------------------------------
# Storage and quota
# --------------------------------------------------------------------------------------------------------------

def iso_dir() -> Path:
    cfg = current_app.config
    path = Path(cfg.get("HOSTBAY_ISO_DIR") or Path(cfg["INSTANCE_PATH"]) / "isos").resolve()
    static = Path(current_app.static_folder).resolve() if current_app.static_folder else None
    if static is not None and (path == static or static in path.parents):
        raise RuntimeError("HOSTBAY_ISO_DIR must not be inside a static folder")
    if not path.is_dir():
        # 0711: the hypervisor's user (libvirt relabels the file it opens) may traverse, nobody may list.
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o711)
    return path


@dataclass(frozen=True)
class Quota:
    max_count: int
    max_bytes: int
    used_count: int
    used_bytes: int

    @property
    def count_pct(self) -> int:
        return min(100, round(100 * self.used_count / self.max_count)) if self.max_count else 100

    @property
    def bytes_pct(self) -> int:
        return min(100, round(100 * self.used_bytes / self.max_bytes)) if self.max_bytes else 100

    @property
    def full(self) -> bool:
        return self.used_count >= self.max_count or self.used_bytes >= self.max_bytes


def package_quota(user_id: int) -> tuple[int | None, int | None]:
    """The largest ISO quota (count, bytes) among the packages of the account's live services; None where no
    such package sets one."""
    from .catalog import Package
    from .services import HIDDEN_FROM_CUSTOMER, Service

    count, size = db.session.execute(
        select(func.max(Package.iso_quota_count), func.max(Package.iso_quota_bytes))
        .join(Service, Service.package_id == Package.id)
        .where(Service.user_id == user_id, Service.state.not_in(HIDDEN_FROM_CUSTOMER))).one()
    return count, size


def quota_for(user_id: int) -> Quota:
    """The account's quota, per limit: the staff override when set, else the largest among the packages of its
    live services, else the configured default."""
    cfg = current_app.config
    override = db.session.get(IsoQuota, user_id)
    pkg_count, pkg_bytes = package_quota(user_id)
    if override and override.max_count is not None:
        max_count = override.max_count
    else:
        max_count = pkg_count if pkg_count is not None else cfg["HOSTBAY_ISO_QUOTA_COUNT"]
    if override and override.max_bytes is not None:
        max_bytes = override.max_bytes
    else:
        max_bytes = pkg_bytes if pkg_bytes is not None else cfg["HOSTBAY_ISO_QUOTA_BYTES"]
    used_count, used_bytes = db.session.execute(
        select(func.count(IsoImage.id), func.coalesce(func.sum(IsoImage.size_bytes), 0))
        .where(IsoImage.user_id == user_id, IsoImage.state.in_(COUNTED))).one()
    return Quota(int(max_count), int(max_bytes), int(used_count), int(used_bytes))


def set_quota(user_id: int, max_count: int | None, max_bytes: int | None, actor=None) -> IsoQuota:
    row = db.session.get(IsoQuota, user_id) or IsoQuota(user_id=user_id)
    row.max_count, row.max_bytes = max_count, max_bytes
    db.session.add(row)
    audit("iso.quota", "user", user_id, actor=actor, after={"max_count": max_count, "max_bytes": max_bytes})
    return row


def format_bytes(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)  # pragma: no cover


def max_upload_bytes(user_id: int | None = None) -> int:
    """The size limit of one upload: the per-file limit, and no more than the room left in the quota."""
    limit = current_app.config["HOSTBAY_ISO_MAX_BYTES"]
    if user_id is not None:
        q = quota_for(user_id)
        limit = min(limit, max(0, q.max_bytes - q.used_bytes))
    return limit


class IsoTooLarge(UserError):
    pass


class IsoQuotaExceeded(UserError):
    pass


class NotAnIso(UserError):
    pass


def display_name(filename: str | None) -> str:
    """A safe display label from the client's file name (never used as a path)."""
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = unicodedata.normalize("NFC", name)
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] not in ("C", "Z") or ch == " ").strip(" .")
    return name[:120] or "image.iso"


class Incoming:
    """A writable stream for one upload: a ``.part`` file in the ISO folder, with a byte limit and a running
    SHA-256. Use as ``stream_factory`` of werkzeug's form parser or feed ``write`` directly."""

    def __init__(self, limit: int):
        self.limit = limit
        self.size = 0
        self.sha = hashlib.sha256()
        self.path = iso_dir() / f".{secrets.token_hex(16)}.part"
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        self.fh: IO[bytes] = os.fdopen(fd, "wb")

    # file protocol used by werkzeug's multipart parser
    def write(self, data: bytes) -> int:
        self.size += len(data)
        if self.size > self.limit:
            raise IsoTooLarge(f"The ISO is larger than the {format_bytes(self.limit)} you may upload.")
        self.sha.update(data)
        return self.fh.write(data)

    def seek(self, *args):
        return self.fh.seek(*args)

    def tell(self):
        return self.fh.tell()

    def read(self, *args):  # pragma: no cover - not used for reading
        raise OSError("write-only")

    def flush(self):
        self.fh.flush()

    def close(self):
        if not self.fh.closed:
            self.fh.close()

    def discard(self):
        self.close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


def _has_iso9660_signature(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(ISO9660_OFFSET)
        return fh.read(len(ISO9660_MAGIC)) == ISO9660_MAGIC


def admit_upload(user: User, incoming: Incoming, filename: str | None) -> IsoImage:
    """Check a finished upload and store it as a pending image. On any refusal the part file is removed."""
    try:
        incoming.close()
        if incoming.size == 0:
            raise NotAnIso("The file is empty.")
        if incoming.size > current_app.config["HOSTBAY_ISO_MAX_BYTES"]:
            raise IsoTooLarge(f"The ISO is larger than the "
                              f"{format_bytes(current_app.config['HOSTBAY_ISO_MAX_BYTES'])} you may upload.")
        if incoming.size < ISO9660_OFFSET + len(ISO9660_MAGIC) or not _has_iso9660_signature(incoming.path):
            raise NotAnIso("This file is not an ISO 9660 image (a bootable CD/DVD image ending in .iso).")
        # Lock the account row: parallel uploads of one account are admitted one after the other.
        db.session.execute(select(User.id).where(User.id == user.id).with_for_update())
        q = quota_for(user.id)
        if q.used_count + 1 > q.max_count:
            raise IsoQuotaExceeded(f"You can keep at most {q.max_count} ISO images. Delete one to upload another.")
        if q.used_bytes + incoming.size > q.max_bytes:
            raise IsoQuotaExceeded(
                f"This ISO ({format_bytes(incoming.size)}) does not fit in your ISO storage: "
                f"{format_bytes(max(0, q.max_bytes - q.used_bytes))} of {format_bytes(q.max_bytes)} left.")
        stored = f"{secrets.token_hex(16)}.iso"
        final = iso_dir() / stored
        os.replace(incoming.path, final)
        iso = IsoImage(user_id=user.id, name=display_name(filename), stored_name=stored, size_bytes=incoming.size,
                       sha256=incoming.sha.hexdigest(), state=PENDING)
        db.session.add(iso)
        try:
            db.session.flush()
        except Exception:
            final.unlink(missing_ok=True)
            raise
        audit("iso.upload", "iso", iso.uuid, actor=user, after={"name": iso.name, "size": iso.size_bytes,
                                                                 "sha256": iso.sha256})
        db.session.info.setdefault("hostbay_iso_files", []).append(str(final))
        return iso
    except BaseException:
        incoming.discard()
        raise


def upload_bytes(user: User, data: bytes, filename: str) -> IsoImage:
    """Store ``data`` as an upload (scripts and tests; the web form streams through :class:`Incoming`)."""
    inc = Incoming(current_app.config["HOSTBAY_ISO_MAX_BYTES"])
    try:
        inc.write(data)
    except BaseException:
        inc.discard()
        raise
    return admit_upload(user, inc, filename)


def get_own(user_id: int, iso_uuid: str) -> IsoImage:
    iso = db.session.scalar(select(IsoImage).where(IsoImage.uuid == iso_uuid, IsoImage.user_id == user_id))
    if iso is None:
        raise NotFound("No such ISO image.")
    return iso


def list_for(user_id: int) -> list[IsoImage]:
    return db.session.scalars(select(IsoImage).where(IsoImage.user_id == user_id)
                              .order_by(IsoImage.created_at.desc(), IsoImage.id.desc())).all()


def delete_iso(user: User, iso: IsoImage) -> None:
    if iso.user_id != user.id:
        raise NotFound("No such ISO image.")
    # Mounts on services that have ended hold nothing any more.
    db.session.execute(delete(IsoMount).where(
        IsoMount.iso_id == iso.id,
        IsoMount.service_id.in_(select(services.Service.id).where(services.Service.state.in_(services.ENDED)))))
    if db.session.scalar(select(func.count(IsoMount.id)).where(IsoMount.iso_id == iso.id)):
        raise UserError("This ISO is mounted on a server. Eject it first.")
    path = iso.path
    try:
        with db.session.begin_nested():
            db.session.execute(delete(IsoImage).where(IsoImage.id == iso.id))
    except IntegrityError:  # a mount was requested at the same moment
        raise UserError("This ISO is mounted on a server. Eject it first.") from None
    audit("iso.delete", "iso", iso.uuid, actor=user, before={"name": iso.name, "state": iso.state})
    db.session.info.setdefault("hostbay_iso_unlink", []).append(str(path))
    current_app.extensions["hostbay"].notify("hostbay_iso_deleted", iso=iso)


# --------------------------------------------------------------------------------------------------------------
# Staff decisions
# --------------------------------------------------------------------------------------------------------------

def pending_queue() -> list[IsoImage]:
    return db.session.scalars(select(IsoImage).where(IsoImage.state == PENDING)
                              .order_by(IsoImage.created_at, IsoImage.id)).all()


def decide(iso: IsoImage, approve: bool, staff: User, note: str = "") -> IsoImage:
    """Approve or reject a pending image (a conditional UPDATE: the first decision wins)."""
    note = (note or "").strip()[:2000]
    if not approve and not note:
        raise UserError("Give the customer a reason for the rejection.")
    to = APPROVED if approve else REJECTED
    res = db.session.execute(
        update(IsoImage).where(IsoImage.id == iso.id, IsoImage.state == PENDING)
        .values(state=to, staff_note=note, decided_by_id=staff.id, decided_at=clock.now())
        .execution_options(synchronize_session=False))
    if res.rowcount != 1:
        db.session.refresh(iso)
        raise UserError(f"This ISO was already {iso.state}.")
    db.session.refresh(iso)
    audit(f"iso.{'approve' if approve else 'reject'}", "iso", iso.uuid, actor=staff,
          before={"state": PENDING}, after={"state": to}, detail=note)
    if not approve:
        db.session.info.setdefault("hostbay_iso_unlink", []).append(str(iso.path))
    return iso


from sqlalchemy import event as _event  # noqa: E402
from sqlalchemy.orm import Session as _Session  # noqa: E402


@_event.listens_for(_Session, "after_commit")
def _unlink_after_commit(session) -> None:
    session.info.pop("hostbay_iso_files", None)
    for path in session.info.pop("hostbay_iso_unlink", ()):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


@_event.listens_for(_Session, "after_rollback")
def _forget_after_rollback(session) -> None:
    if session.in_transaction():
        return
    session.info.pop("hostbay_iso_unlink", None)
    for path in session.info.pop("hostbay_iso_files", ()):  # uploads whose row was not committed
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


# --------------------------------------------------------------------------------------------------------------
# Mount and eject
# --------------------------------------------------------------------------------------------------------------

def mountable_for(service) -> list[IsoImage]:
    return db.session.scalars(select(IsoImage).where(IsoImage.user_id == service.user_id,
                                                     IsoImage.state == APPROVED)
                              .order_by(IsoImage.name)).all()


def mount_of(service) -> IsoMount | None:
    return db.session.scalar(select(IsoMount).where(IsoMount.service_id == service.id))


def request_mount(service, iso_uuid: str, actor=None) -> jobs.Operation:
    services.require_action(service, "mount_iso", staff=bool(actor is not None and actor.is_staff
                                                               and actor.id != service.user_id))
    iso = db.session.scalar(select(IsoImage).where(IsoImage.uuid == iso_uuid,
                                                   IsoImage.user_id == service.user_id))
    if iso is None:
        raise NotFound("No such ISO image.")
    if iso.state != APPROVED:
        raise UserError("Only approved ISO images can be mounted. This one is "
                        f"{iso.label.lower()}.")
    mount = IsoMount(service_id=service.id, iso_id=iso.id, state=MOUNTING)
    try:
        with db.session.begin_nested():
            db.session.add(mount)
    except IntegrityError:
        raise UserError("An ISO is already in this server's drive. Eject it first.") from None
    return jobs.enqueue("service.mount_iso", key=f"mount_iso:{service.uuid}:{mount.id}", service=service,
                        payload={"mount_id": mount.id, "iso_id": iso.id}, title="Mount ISO")


def request_eject(service, actor=None) -> jobs.Operation:
    services.require_action(service, "eject_iso", staff=bool(actor is not None and actor.is_staff
                                                               and actor.id != service.user_id))
    mount = mount_of(service)
    if mount is None:
        raise UserError("No ISO is mounted on this server.")
    res = db.session.execute(update(IsoMount).where(IsoMount.id == mount.id, IsoMount.state == MOUNTED)
                             .values(state=EJECTING).execution_options(synchronize_session=False))
    if res.rowcount != 1:
        raise UserError("The ISO is still being mounted or ejected; try again in a moment.")
    return jobs.enqueue("service.eject_iso", key=f"eject_iso:{service.uuid}:{mount.id}", service=service,
                        payload={"mount_id": mount.id}, title="Eject ISO")


def _driver_for(service):
    from .service_drivers import driver_for

    return driver_for(service, need_server=True)


def _load(op):
    service = db.session.get(services.Service, op.service_id)
    if service is None:
        raise FatalDriverError(f"operation {op.id} has no service")
    return service


def _free_drive(mount_id: int) -> None:
    """After a failed mount: free the drive slot so the customer can try again (the operation keeps the error)."""
    db.session.rollback()
    db.session.execute(delete(IsoMount).where(IsoMount.id == mount_id))
    db.session.commit()


@jobs.handler("service.mount_iso", queue=jobs.DRIVER)
def handle_mount(op, payload):
    """Insert the ISO into the drive. Safe to re-run: inserting the same image twice is harmless."""
    service = _load(op)
    mount = db.session.get(IsoMount, payload["mount_id"])
    if mount is None:
        return {"skipped": "mount withdrawn"}
    iso = mount.iso
    try:
        if iso.state != APPROVED or iso.user_id != service.user_id:
            raise FatalDriverError(f"iso {iso.uuid} is not an approved image of the service owner",
                                   customer_message="This ISO image cannot be mounted.")
        if not iso.path.exists():
            raise FatalDriverError(f"iso file {iso.path} is missing",
                                   customer_message="The ISO file is missing. Our staff have been notified.")
        driver, ref, path = _driver_for(service), dict(service.infra_ref), str(iso.path)
        jobs.call_driver(op, driver.mount_iso, ref, path)  # the driver-call template
    except TransientDriverError:
        if op.attempts < op.max_attempts:
            raise  # retried later; the drive stays reserved
        _free_drive(payload["mount_id"])
        raise
    except Exception:
        _free_drive(payload["mount_id"])
        raise
    mount.state = MOUNTED
    log_activity(service.user_id, "iso_mount", f"ISO “{iso.name}” inserted; the server boots from it on its "
                                               f"next start.", service.id)
    db.session.commit()
    return {"iso": iso.uuid, "text": "ISO inserted"}


def _back_to_mounted(mount_id: int) -> None:
    db.session.rollback()
    db.session.execute(update(IsoMount).where(IsoMount.id == mount_id).values(state=MOUNTED))
    db.session.commit()


@jobs.handler("service.eject_iso", queue=jobs.DRIVER)
def handle_eject(op, payload):
    """Take the ISO out of the drive. Safe to re-run: ejecting an empty drive is harmless."""
    service = _load(op)
    mount = db.session.get(IsoMount, payload["mount_id"])
    if mount is None:
        return {"skipped": "nothing mounted"}
    name = mount.iso.name
    try:
        driver, ref = _driver_for(service), dict(service.infra_ref)
        jobs.call_driver(op, driver.eject_iso, ref)  # the driver-call template
    except TransientDriverError:
        if op.attempts < op.max_attempts:
            raise
        _back_to_mounted(payload["mount_id"])
        raise
    except Exception:
        _back_to_mounted(payload["mount_id"])
        raise
    db.session.delete(mount)
    log_activity(service.user_id, "iso_eject", f"ISO “{name}” ejected; the server boots from its disk again.",
                 service.id)
    db.session.commit()
    return {"ejected": True, "text": "ISO ejected"}


def purge_stale_parts(max_age_seconds: int = 6 * 3600) -> int:
    """Remove ``.part`` files of uploads that never finished (a crashed worker)."""
    import time

    n = 0
    for p in iso_dir().glob(".*.part"):
        try:
            if time.time() - p.stat().st_mtime > max_age_seconds:
                p.unlink()
                n += 1
        except FileNotFoundError:
            pass
    return n


@jobs.handler("iso.purge_parts", every=3600, queue=jobs.NOTIFY)
def handle_purge(op, payload):
    return {"removed": purge_stale_parts()}

