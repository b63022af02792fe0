"""The status plugin's settings: read from the app config (tests, ``create_app(config)``) or else the environment,
so core needs to know nothing about them. Documented in docs/operations.md ("Status page")."""

from __future__ import annotations

import os

from flask import current_app

DEFAULTS = {
    "HOSTBAY_STATUS_CACHE_SECONDS": "30",
    "HOSTBAY_STATUS_MAX_AGE": "15",
    "HOSTBAY_STATUS_PAGE_NAME": "hostbay",
    "HOSTBAY_STATUS_PAGE_ID": "hostbay",
}


def setting(name: str) -> str:
    value = current_app.config.get(name)
    if value is None:
        value = os.environ.get(name) or DEFAULTS[name]
    return str(value)
