"""The datacenter task queue: work people do by hand at the racks.

A :class:`DatacenterTask` is an OS install, a power action, a hardware swap or a wipe, for one inventory server,
with who asked for it, a state (open → in progress → done | failed) and notes. Tasks are created by the dedicated
lifecycle (:mod:`hostbay.core.dedicated`) when something cannot be automated (no BMC, no automated installer) and
by staff. When a task finishes, :func:`finish` records the outcome and calls the lifecycle back, which moves the
service and server on (install done → active; wipe done → available) and writes the customer's activity log.

Customers see a task only as "Queued for datacenter handling" and its outcome in plain words, never the rack,
location, server name or notes.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, String, Text, select, update
from sqlalchemy.orm import Mapped, mapped_column, relationship

from . import clock
from .activity import audit
from .db import db, new_uuid
from .errors import UserError

OPEN, IN_PROGRESS, DONE, FAILED = "open", "in_progress", "done", "failed"
STATES = (OPEN, IN_PROGRESS, DONE, FAILED)
STATE_LABELS = {OPEN: "Open", IN_PROGRESS: "In progress", DONE: "Done", FAILED: "Failed"}
INSTALL_OS, POWER, HARDWARE_SWAP, WIPE = "install_os", "power", "hardware_swap", "wipe"
KINDS = (INSTALL_OS, POWER, HARDWARE_SWAP, WIPE)
KIND_LABELS = {INSTALL_OS: "Install OS", POWER: "Power action", HARDWARE_SWAP: "Hardware swap", WIPE: "Wipe disks"}
QUEUED_TEXT = "Queued for datacenter handling"


class DatacenterTask(db.Model):
    __tablename__ = "datacenter_tasks"

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True, default=new_uuid)
    key: Mapped[str | None] = mapped_column(String(200), unique=True)  # idempotency of automatic tasks
    kind: Mapped[str] = mapped_column(String(16), index=True)
    state: Mapped[str] = mapped_column(String(16), default=OPEN, index=True)
    server_id: Mapped[int] = mapped_column(ForeignKey("hardware_servers.id"), index=True)
    service_id: Mapped[int | None] = mapped_column(ForeignKey("services.id"), index=True)
    params: Mapped[dict] = mapped_column(JSON, default=dict)  # e.g. {"action": "on"}, {"image": "Debian 12"}
    requested_by_type: Mapped[str] = mapped_column(String(16), default="system")  # customer, staff, system
    requested_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    notes: Mapped[str] = mapped_column(Text, default="")  # staff only
    created_at: Mapped[datetime] = mapped_column(default=lambda: clock.now(), index=True)
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()

    server = relationship("HardwareServer", lazy="joined")
    requested_by = relationship("User", foreign_keys=[requested_by_id])

    @property
    def label(self) -> str:
        return KIND_LABELS.get(self.kind, self.kind)

    @property
    def state_label(self) -> str:
        return STATE_LABELS.get(self.state, self.state)

    @property
    def finished(self) -> bool:
        return self.state in (DONE, FAILED)

    def describe(self) -> str:
        p = self.params or {}
        if self.kind == POWER:
            return f"Power {p.get('action', '?')}"
        if self.kind == INSTALL_OS:
            return f"Install {p.get('image') or 'the operating system'}" + (" (reinstall)" if p.get("reinstall") else "")
        return self.label


def create(kind: str, server, *, service=None, params: dict | None = None, requested_by=None,
           requested_by_type: str | None = None, key: str | None = None, notes: str = "") -> DatacenterTask:
    """Open a task (idempotent on ``key``). The caller commits."""
    if kind not in KINDS:
        raise UserError(f"Unknown task kind {kind!r}.")
    if key:
        existing = db.session.scalar(select(DatacenterTask).filter_by(key=key))
        if existing is not None:
            return existing
    rtype = requested_by_type or ("system" if requested_by is None else
                                  "staff" if getattr(requested_by, "is_staff", False) else "customer")
    task = DatacenterTask(kind=kind, server_id=server.id, service_id=getattr(service, "id", None),
                          params=params or {}, requested_by_type=rtype,
                          requested_by_id=getattr(requested_by, "id", None), key=key, notes=notes)
    db.session.add(task)
    db.session.flush()
    audit("dctask.opened", "dctask", task.uuid, actor=requested_by, actor_type=None if requested_by else "system",
          after={"kind": kind, "server": server.name, "params": params or {},
                 "service": getattr(service, "uuid", None)})
    return task


def start(task: DatacenterTask, actor, notes: str = "") -> DatacenterTask:
    res = db.session.execute(update(DatacenterTask).where(DatacenterTask.id == task.id, DatacenterTask.state == OPEN)
                             .values(state=IN_PROGRESS, started_at=clock.now(), assignee_id=actor.id)
                             .execution_options(synchronize_session=False))
    db.session.refresh(task)
    if res.rowcount != 1:
        raise UserError("This task is no longer open.")
    if notes:
        _add_note(task, actor, notes)
    audit("dctask.started", "dctask", task.uuid, actor=actor, after={"state": IN_PROGRESS})
    return task


def _add_note(task: DatacenterTask, actor, notes: str) -> None:
    stamp = f"[{clock.now():%Y-%m-%d %H:%M} {getattr(actor, 'email', 'system')}] "
    task.notes = ((task.notes + "\n") if task.notes else "") + stamp + notes.strip()[:2000]


def add_note(task: DatacenterTask, actor, notes: str) -> None:
    if not notes.strip():
        raise UserError("Write a note first.")
    _add_note(task, actor, notes)
    audit("dctask.note", "dctask", task.uuid, actor=actor, detail=notes[:500])


def finish(task: DatacenterTask, actor, ok: bool, notes: str = "") -> DatacenterTask:
    """Mark the task done or failed (from open or in progress) and let the lifecycle act on the outcome."""
    to = DONE if ok else FAILED
    was = task.state
    res = db.session.execute(update(DatacenterTask)
                             .where(DatacenterTask.id == task.id, DatacenterTask.state.in_((OPEN, IN_PROGRESS)))
                             .values(state=to, finished_at=clock.now(),
                                     assignee_id=task.assignee_id or getattr(actor, "id", None))
                             .execution_options(synchronize_session=False))
    db.session.refresh(task)
    if res.rowcount != 1:
        raise UserError("This task is finished already.")
    if notes:
        _add_note(task, actor, notes)
    audit(f"dctask.{to}", "dctask", task.uuid, actor=actor, before={"state": was}, after={"state": to},
          detail=notes[:500])
    from . import dedicated

    dedicated.task_finished(task, actor)
    return task


def open_tasks(location: str | None = None):
    from .inventory import HardwareServer

    q = select(DatacenterTask).join(HardwareServer, HardwareServer.id == DatacenterTask.server_id) \
        .where(DatacenterTask.state.in_((OPEN, IN_PROGRESS)))
    if location:
        q = q.where(HardwareServer.location == location)
    return q.order_by(DatacenterTask.created_at, DatacenterTask.id)


def customer_view(service) -> list[dict]:
    """What the owner of ``service`` may see of its tasks: the kind in plain words and the outcome."""
    rows = db.session.scalars(select(DatacenterTask).where(DatacenterTask.service_id == service.id,
                                                           DatacenterTask.kind != WIPE)
                              .order_by(DatacenterTask.created_at.desc(), DatacenterTask.id.desc()).limit(5))
    out = []
    for t in rows:
        what = {INSTALL_OS: "Operating system installation", POWER: f"Power {(t.params or {}).get('action', '')}".strip(),
                HARDWARE_SWAP: "Hardware work"}.get(t.kind, "Datacenter work")
        status = {OPEN: QUEUED_TEXT, IN_PROGRESS: "In progress at the datacenter", DONE: "Completed",
                  FAILED: "Could not be completed; our staff will contact you"}[t.state]
        out.append({"what": what, "status": status, "state": t.state, "at": t.finished_at or t.created_at})
    return out
