"""Services (VPS and dedicated) and the one state machine they share.

The ``ACTIONS`` table is the single source of which action is allowed in which state, for customers and staff;
the panel, the API and the jobs all read it through :func:`allowed` / :func:`require_action`. State changes go
through :func:`transition`, a conditional UPDATE on the expected current state, so two racing jobs cannot both
move a service.
"""

from __future__ import annotations

import contextvars
import re
import sys
from contextlib import contextmanager
from datetime import datetime

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, String, select, update
from sqlalchemy.orm import Mapped, mapped_column, relationship

from . import clock
from .db import db, new_uuid
from .errors import ActionNotAllowed

# --- states ---------------------------------------------------------------------------------------------------
PENDING = "pending"                # paid, waiting for its provisioning job
PROVISIONING = "provisioning"
ACTIVE = "active"
REBUILDING = "rebuilding"
REINSTALLING = "reinstalling"
RESIZING = "resizing"
MOVING = "moving"                  # staff move it to another node of its driver (core/move.py)
SUSPENDED = "suspended"
REMOVAL_QUEUED = "removal_queued"
TERMINATED = "terminated"
CANCELLED = "cancelled"

STATES = (PENDING, PROVISIONING, ACTIVE, REBUILDING, REINSTALLING, RESIZING, MOVING, SUSPENDED, REMOVAL_QUEUED,
          TERMINATED, CANCELLED)
BUSY = frozenset({PENDING, PROVISIONING, REBUILDING, REINSTALLING, RESIZING, MOVING})
HIDDEN_FROM_CUSTOMER = frozenset({REMOVAL_QUEUED, TERMINATED, CANCELLED})
ENDED = frozenset({TERMINATED, CANCELLED})
SUSPENDED_UNPAID, SUSPENDED_BY_STAFF = "unpaid", "staff"

STATE_LABELS = {
    PENDING: "Waiting to be set up", PROVISIONING: "Being set up", ACTIVE: "Active", REBUILDING: "Rebuilding",
    REINSTALLING: "Reinstalling", RESIZING: "Changing package", MOVING: "Moving to another host",
    SUSPENDED: "Suspended", REMOVAL_QUEUED: "Queued for removal", TERMINATED: "Terminated", CANCELLED: "Cancelled",
}

# Allowed transitions: from -> set of to.
TRANSITIONS = {
    PENDING: {PROVISIONING, CANCELLED},
    PROVISIONING: {ACTIVE, PENDING, CANCELLED},
    ACTIVE: {REBUILDING, REINSTALLING, RESIZING, MOVING, SUSPENDED, REMOVAL_QUEUED, CANCELLED},
    # a busy service whose work is stuck: staff may force it suspended or removed (core/force.py)
    REBUILDING: {ACTIVE, SUSPENDED, REMOVAL_QUEUED},
    REINSTALLING: {ACTIVE, SUSPENDED, REMOVAL_QUEUED},
    RESIZING: {ACTIVE, SUSPENDED, REMOVAL_QUEUED},
    MOVING: {ACTIVE},
    SUSPENDED: {ACTIVE, REMOVAL_QUEUED},
    REMOVAL_QUEUED: {TERMINATED},
    TERMINATED: set(),
    CANCELLED: set(),
}

# Actions per state. "customer" actions appear in the panel/API for the owner; "staff" ones for staff.
_RUNNING_ACTIONS = {"start", "stop", "restart", "reinstall", "change_package", "mount_iso", "eject_iso", "console",
                    "rdns", "cancel", "renew"}
_STUCK = frozenset({"retry", "mark_failed", "force_suspend", "force_terminate"})  # a busy service's work is stuck
ACTIONS: dict[str, dict[str, frozenset[str]]] = {
    PENDING: {"customer": frozenset(), "staff": frozenset({"retry", "cancel", "mark_failed"})},
    PROVISIONING: {"customer": frozenset(), "staff": frozenset({"retry", "cancel", "mark_failed"})},
    ACTIVE: {"customer": frozenset(_RUNNING_ACTIONS),
             "staff": frozenset(_RUNNING_ACTIONS | {"suspend", "terminate", "move", "force_stop", "force_restart",
                                                    "force_suspend", "force_terminate", "mark_failed"})},
    REBUILDING: {"customer": frozenset(), "staff": _STUCK},
    REINSTALLING: {"customer": frozenset(), "staff": _STUCK},
    RESIZING: {"customer": frozenset(), "staff": _STUCK},
    MOVING: {"customer": frozenset(), "staff": frozenset({"retry", "mark_failed"})},
    SUSPENDED: {"customer": frozenset({"renew"}),
                "staff": frozenset({"renew", "unsuspend", "terminate", "force_stop", "force_unsuspend",
                                    "force_terminate", "mark_failed"})},
    REMOVAL_QUEUED: {"customer": frozenset(), "staff": frozenset({"retry", "mark_failed"})},
    TERMINATED: {"customer": frozenset(), "staff": frozenset()},
    CANCELLED: {"customer": frozenset(), "staff": frozenset()},
}
# Actions that only make sense for one kind of service.
KIND_ACTIONS = {"vps": None, "dedicated": frozenset({"start", "stop", "restart", "reinstall", "cancel", "renew",
                                                      "rdns", "suspend", "unsuspend", "terminate", "retry",
                                                      "mark_failed"})}

# The capability rule: an action that needs an optional driver primitive is offered, charged and accepted only when
# the service's driver advertises one of these capabilities (see drivers.CAPABILITY_METHODS).
ACTION_CAPABILITIES: dict[str, frozenset[str]] = {
    "change_package": frozenset({"resize", "rebuild"}),  # growing needs resize, a smaller disk rebuild
    "mount_iso": frozenset({"iso"}),
    "eject_iso": frozenset({"iso"}),
    "console": frozenset({"console"}),
    "move": frozenset({"move"}),
}
UNSUPPORTED = {
    "change_package": "The package of this server cannot be changed on its platform.",
    "mount_iso": "ISO images cannot be mounted on this server's platform.",
    "eject_iso": "ISO images cannot be mounted on this server's platform.",
    "console": "A web console is not available for this server's platform.",
    "move": "This server's platform cannot move a server to another node.",
}

REFUSAL = {
    PENDING: "This service is waiting to be set up; actions become available when it is ready.",
    PROVISIONING: "This service is being set up; actions become available when it is ready.",
    REBUILDING: "This service is being rebuilt; actions are disabled until the change is complete.",
    REINSTALLING: "This service is being reinstalled; actions are disabled until the change is complete.",
    RESIZING: "The package change is in progress; actions are disabled until it is complete.",
    MOVING: "This server is being moved to another host; actions are disabled until the move is complete.",
    SUSPENDED: "This service is suspended for non-payment. Add funds and renew it to use it again.",
    REMOVAL_QUEUED: "This service is queued for removal and can no longer be changed.",
    TERMINATED: "This service has ended.",
    CANCELLED: "This service has been cancelled.",
}


STAFF_SUSPENSION_REFUSAL = "This service was suspended by our staff; please open a support ticket."


class Service(db.Model):
    __tablename__ = "services"
    # the renewal sweep's due-time query (state = active AND renews_at <= now), every 30 s: an index range scan
    # that costs nothing when nothing is due, however many services (ended ones included) there are
    __table_args__ = (Index("ix_services_state_renews_at", "state", "renews_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True, default=new_uuid)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    package_id: Mapped[int] = mapped_column(ForeignKey("packages.id"))
    kind: Mapped[str] = mapped_column(String(16), default="vps")
    state: Mapped[str] = mapped_column(String(20), default=PENDING)  # indexed by ix_services_state_renews_at
    hostname: Mapped[str] = mapped_column(String(253))
    cycle: Mapped[str] = mapped_column(String(16))
    price_cents: Mapped[int] = mapped_column(BigInteger)  # the recurring price the next renewal charges
    image_id: Mapped[int | None] = mapped_column(ForeignKey("images.id"))
    ssh_key_ids: Mapped[list] = mapped_column(JSON, default=list)  # reused by reinstall
    period_start: Mapped[datetime] = mapped_column()
    renews_at: Mapped[datetime] = mapped_column(index=True)
    suspended_at: Mapped[datetime | None] = mapped_column()
    # Why a suspended service is suspended: SUSPENDED_UNPAID (a renewal could not be paid: a payment lifts it) or
    # SUSPENDED_BY_STAFF (only staff lift it; the retention sweep keeps it). None while not suspended.
    suspension_reason: Mapped[str | None] = mapped_column(String(16))
    removal_queued_at: Mapped[datetime | None] = mapped_column()
    ended_at: Mapped[datetime | None] = mapped_column()
    cancel_at_period_end: Mapped[bool] = mapped_column(default=False)
    # infrastructure: admin-only
    node_id: Mapped[int | None] = mapped_column(ForeignKey("nodes.id"))
    infra_ref: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=lambda: clock.now())
    updated_at: Mapped[datetime] = mapped_column(default=lambda: clock.now(), onupdate=lambda: clock.now())

    user = relationship("User", lazy="joined")
    package = relationship("Package", lazy="joined")
    image = relationship("Image")
    node = relationship("Node")

    @property
    def label(self) -> str:
        return STATE_LABELS.get(self.state, self.state)

    @property
    def busy(self) -> bool:
        return self.state in BUSY

    @property
    def capabilities(self) -> frozenset[str]:
        """What the service's driver advertises (see :mod:`hostbay.core.service_drivers`)."""
        from .service_drivers import capabilities_of

        return capabilities_of(self)

    def actions_for(self, staff: bool = False) -> frozenset[str]:
        return allowed(self.state, self.kind, staff, self.capabilities)


def allowed(state: str, kind: str = "vps", staff: bool = False,
            capabilities: frozenset[str] | None = None) -> frozenset[str]:
    """The actions of the table for ``state`` and ``kind``; with ``capabilities`` (the driver's), the actions that
    need a capability the driver lacks are left out."""
    acts = ACTIONS[state]["staff" if staff else "customer"]
    limit = KIND_ACTIONS.get(kind)
    acts = acts & limit if limit is not None else acts
    if capabilities is not None:
        acts = frozenset(a for a in acts if a not in ACTION_CAPABILITIES or ACTION_CAPABILITIES[a] & capabilities)
    return acts


def require_action(service: Service, action: str, staff: bool = False) -> None:
    if action not in allowed(service.state, service.kind, staff):
        if service.state == SUSPENDED and service.suspension_reason == SUSPENDED_BY_STAFF:
            raise ActionNotAllowed(STAFF_SUSPENSION_REFUSAL)
        raise ActionNotAllowed(REFUSAL.get(service.state)
                               or f"“{action.replace('_', ' ')}” is not available for this service right now.")
    if action in ACTION_CAPABILITIES and not ACTION_CAPABILITIES[action] & service.capabilities:
        raise ActionNotAllowed(UNSUPPORTED.get(action) or f"“{action.replace('_', ' ')}” is not available for "
                               "this server's platform.")


_TRANSITIONING: contextvars.ContextVar[bool] = contextvars.ContextVar("hostbay_transitioning", default=False)


@contextmanager
def _transitioning():
    token = _TRANSITIONING.set(True)
    try:
        yield
    finally:
        _TRANSITIONING.reset(token)


def _check_table(expected: set[str], to: str) -> None:
    for frm in expected:
        if to not in TRANSITIONS[frm]:
            raise ValueError(f"illegal transition {frm} -> {to}")


def transition(service: Service, to: str, *, expect: str | set[str] | None = None, **values) -> bool:
    """Move ``service`` to ``to`` if it is still in ``expect`` (default: its loaded state). Returns False when
    another actor moved it first. Extra column ``values`` are written in the same UPDATE."""
    expected = {expect} if isinstance(expect, str) else set(expect or {service.state})
    _check_table(expected, to)
    with _transitioning():
        res = db.session.execute(
            update(Service).where(Service.id == service.id, Service.state.in_(expected))
            .values(state=to, updated_at=clock.now(), **values).execution_options(synchronize_session=False))
    if res.rowcount != 1:
        db.session.refresh(service)
        return False
    db.session.refresh(service)
    return True


def transition_bulk(service_ids: list[int], to: str, *, expect: str | set[str], **values) -> list[int]:
    """The bulk form of :func:`transition` (the renewal sweep's suspensions and cancellations): move every service
    of ``service_ids`` still in ``expect`` to ``to`` with one UPDATE per chunk, checked against the same table.
    Extra column ``values`` (the same for every row) are written with it. Returns the ids that moved."""
    expected = {expect} if isinstance(expect, str) else set(expect)
    _check_table(expected, to)
    ids = list(dict.fromkeys(service_ids))
    if not ids:
        return []
    t = Service.__table__
    moved: list[int] = []
    chunk = 10000 if db.engine.dialect.name == "postgresql" else 5000
    with _transitioning():
        for i in range(0, len(ids), chunk):
            part = ids[i:i + chunk]
            if db.engine.dialect.name == "postgresql":
                from sqlalchemy import Integer, any_, bindparam
                from sqlalchemy.dialects.postgresql import ARRAY

                cond = t.c.id == any_(bindparam("hb_ids", part, type_=ARRAY(Integer)))
            else:
                cond = t.c.id.in_(part)
            stmt = (update(t).where(cond, t.c.state.in_(expected))
                    .values(state=to, updated_at=clock.now(), **values).returning(t.c.id))
            moved.extend(db.session.execute(stmt).scalars())
    return moved


# --- the guard: every write of services.state goes through the table ------------------------------------------
class StateWriteOutsideTransition(RuntimeError):
    """Code wrote ``services.state`` without :func:`transition` / :func:`transition_bulk`."""


_STATE_SET = re.compile(r'^\s*UPDATE\s+"?services"?\s+SET\s+(?P<set>.*?)(?:\sFROM\s|\sWHERE\s|$)', re.S | re.I)
_STATE_COL = re.compile(r'(?:^|[\s,.])"?state"?\s*=', re.I)


def _from_test_code() -> bool:
    """Test set-up may put a row into any state directly; the rule binds hostbay's own code. The caller is the
    nearest frame outside SQLAlchemy, the standard library and this module."""
    import sysconfig

    libs = (sysconfig.get_paths()["stdlib"], "/sqlalchemy/", "/flask_sqlalchemy/", __file__)
    f = sys._getframe(2)
    while f is not None:
        name = f.f_code.co_filename
        if not any(part in name for part in libs) and not name.startswith("<"):
            return "/tests/" in name or name.rsplit("/", 1)[-1].startswith(("test_", "conftest"))
        f = f.f_back
    return False


def guard_state_writes(engine) -> None:
    """Raise :class:`StateWriteOutsideTransition` for any UPDATE that sets ``services.state`` outside the table's
    functions (installed by ``create_app`` in tests and when ``HOSTBAY_STATE_GUARD`` is set)."""
    from sqlalchemy import event

    if getattr(engine, "_hostbay_state_guard", False):
        return
    engine._hostbay_state_guard = True

    @event.listens_for(engine, "before_cursor_execute")
    def _guard(conn, cursor, statement, parameters, context, executemany):
        if _TRANSITIONING.get() or not statement.lstrip()[:6].upper() == "UPDATE":
            return
        m = _STATE_SET.match(statement)
        if m and _STATE_COL.search(m.group("set")) and not _from_test_code():
            raise StateWriteOutsideTransition(f"services.state written outside services.transition: {statement[:200]}")


def customer_services(user_id: int):
    """The services a customer sees: ended and removal-queued ones are hidden."""
    return select(Service).where(Service.user_id == user_id, Service.state.not_in(HIDDEN_FROM_CUSTOMER))


def get_customer_service(user_id: int, uuid: str) -> Service | None:
    """A service by public UUID, only if it belongs to ``user_id`` and is visible to customers."""
    return db.session.scalar(customer_services(user_id).where(Service.uuid == uuid))
