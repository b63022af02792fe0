"""The power state of a server as its driver reports it, cached with the time it was read.

The service page shows ``state`` and how old the reading is, and offers Start only when the server is stopped,
Stop and Restart only when it is running (:func:`power_actions`). A reading older than ``CACHE_SECONDS`` is
refreshed from the driver when the page is shown (outside any database transaction, like every driver call);
a power action marks the cache stale so the next page shows the new state. When the driver cannot be asked, the
state is ``unknown`` and no power action is offered (the customer is told the state could not be read).

A dedicated server is read through its BMC's power driver (:func:`hostbay.core.dedicated.power_driver_for`, the
inventory server's ``power_target``), also outside any transaction. One without a BMC
(or whose power driver is not loaded) has the state ``manual``: its power is switched by the datacenter team
(a datacenter task), so every power action is offered and none is refused for the state. The panel and the
API both read the state here and refuse actions with :func:`refusal`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ForeignKey, String, delete, select
from sqlalchemy.orm import Mapped, mapped_column

from . import clock
from .db import db
from .drivers import PowerState

log = logging.getLogger(__name__)

CACHE_SECONDS = 30
MANUAL = "manual"
LABELS = {PowerState.RUNNING.value: "Running", PowerState.STOPPED.value: "Stopped",
          PowerState.PAUSED.value: "Paused", PowerState.MISSING.value: "Not found on its host",
          PowerState.UNKNOWN.value: "Could not be read", MANUAL: "Switched by our datacenter team"}
POWER_ACTIONS = frozenset({"start", "stop", "restart"})


class PowerReading(db.Model):
    __tablename__ = "power_readings"

    service_id: Mapped[int] = mapped_column(ForeignKey("services.id", ondelete="CASCADE"), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    checked_at: Mapped[datetime] = mapped_column()


@dataclass(frozen=True)
class Power:
    state: str
    checked_at: datetime | None

    @property
    def label(self) -> str:
        return LABELS.get(self.state, self.state)

    @property
    def age_seconds(self) -> int | None:
        if self.checked_at is None:
            return None
        return max(0, int((clock.now() - self.checked_at).total_seconds()))

    @property
    def age_text(self) -> str:
        age = self.age_seconds
        if age is None:
            return "not read yet"
        if age < 60:
            return f"checked {age} s ago"
        return f"checked {age // 60} min ago"


def _read_bmc(service) -> str:
    from . import dedicated, inventory

    server = inventory.server_of(service)
    if server is None:
        return PowerState.UNKNOWN.value
    drv = dedicated.power_driver_for(server)
    if drv is None:
        return MANUAL
    try:
        target = server.power_target()
        db.session.commit()  # no transaction is held while the BMC answers
        return PowerState(drv.power_state(target)).value
    except Exception:  # noqa: BLE001 - shown as "could not be read"; the reason goes to the log only
        log.warning("power state of service %s could not be read", service.uuid, exc_info=True)
        return PowerState.UNKNOWN.value


def _read_driver(service) -> str:
    from .lifecycle import driver_for

    if service.kind == "dedicated":
        return _read_bmc(service)
    if service.kind != "vps" or not service.infra_ref or service.node is None:
        return PowerState.UNKNOWN.value
    try:
        drv, ref = driver_for(service), dict(service.infra_ref)
        db.session.commit()  # no transaction is held while the driver answers
        return PowerState(drv.status(ref)).value
    except Exception:  # noqa: BLE001 - the page shows "could not be read"; the reason goes to the log only
        log.warning("power state of service %s could not be read", service.uuid, exc_info=True)
        return PowerState.UNKNOWN.value


def power_of(service, *, max_age: int = CACHE_SECONDS) -> Power:
    """The cached reading of ``service``, refreshed from the driver when older than ``max_age`` seconds."""
    row = db.session.get(PowerReading, service.id)
    now = clock.now()
    if row is not None and (now - row.checked_at).total_seconds() <= max_age:
        return Power(row.state, row.checked_at)
    state = _read_driver(service)
    now = clock.now()
    row = db.session.get(PowerReading, service.id)
    if row is None:
        db.session.add(PowerReading(service_id=service.id, state=state, checked_at=now))
    else:
        row.state, row.checked_at = state, now
    try:
        db.session.commit()
    except Exception:  # noqa: BLE001 - two page views stored a reading at once; either is fine
        db.session.rollback()
    return Power(state, now)


def mark_stale(service) -> None:
    """Forget the reading (after a power action); the caller commits."""
    db.session.execute(delete(PowerReading).where(PowerReading.service_id == service.id))


def power_actions(power: Power) -> frozenset[str]:
    """The power actions that make sense in ``power``'s state."""
    if power.state == MANUAL:
        return POWER_ACTIONS
    if power.state == PowerState.STOPPED.value:
        return frozenset({"start"})
    if power.state == PowerState.RUNNING.value:
        return frozenset({"stop", "restart"})
    return frozenset()


def refusal(action: str, power: Power) -> str | None:
    """Why ``action`` is refused in ``power``'s state, or None when it is allowed."""
    if action not in POWER_ACTIONS or action in power_actions(power):
        return None
    if power.state == PowerState.RUNNING.value:
        return "The server is running already."
    if power.state == PowerState.STOPPED.value:
        return "The server is stopped; start it instead."
    return "The server's power state could not be read; try again in a minute or contact support."


def latest(service_id: int) -> PowerReading | None:
    return db.session.scalar(select(PowerReading).where(PowerReading.service_id == service_id))
