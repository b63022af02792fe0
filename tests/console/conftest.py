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
    """The loopback-VNC driver of proxy_main.py, known to the test app too: the console is offered only for a
    driver that advertises it."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("console_proxy_main", Path(__file__).with_name("proxy_main.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with register_plugin(mod.LoopVncPlugin(), name="loopvnc-tests"):
        yield
