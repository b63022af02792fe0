"""Business settings read from the app config, shared by the lifecycle and the notices."""

from __future__ import annotations

from flask import current_app


def retention_days() -> int:
    return int(current_app.config.get("HOSTBAY_RETENTION_DAYS", 3))
