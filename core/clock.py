"""One injectable clock for all lifecycle and billing code, so tests can move time.

Times are naive UTC datetimes throughout the database layer.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from flask import current_app, has_app_context


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)


class FrozenClock:
    """A clock that only moves when told to (tests, demos)."""

    def __init__(self, start: datetime | None = None):
        self._now = (start or SystemClock().now()).replace(microsecond=0)

    def now(self) -> datetime:
        return self._now

    def set(self, when: datetime) -> None:
        self._now = when

    def advance(self, **kwargs) -> datetime:
        self._now += timedelta(**kwargs)
        return self._now


_default = SystemClock()


def get_clock():
    if has_app_context():
        return current_app.extensions.get("hostbay.clock", _default)
    return _default


def now() -> datetime:
    return get_clock().now()
