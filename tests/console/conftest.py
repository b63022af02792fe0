"""Fixtures for the console tests (the active service and ISO helpers are shared, in tests/conftest.py)."""

from __future__ import annotations

import pytest

KIB = 1024


@pytest.fixture
def app_config():
    return {"HOSTBAY_ISO_MAX_BYTES": 64 * KIB, "HOSTBAY_ISO_QUOTA_COUNT": 3,
            "HOSTBAY_ISO_QUOTA_BYTES": 200 * KIB}


@pytest.fixture(autouse=True)
def loopvnc_driver(app, register_plugin):
    """The loopback-VNC driver the test console proxy loads (hostbay.testing.console), known to the test app too:
    the console is offered only for a driver that advertises it."""
    from hostbay.testing.console import LoopVncPlugin

    with register_plugin(LoopVncPlugin(), name="loopvnc-tests"):
        yield
