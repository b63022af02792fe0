"""Fixtures for the ISO tests: small ISO limits (the active service and ISO bytes come from tests/conftest.py)."""

from __future__ import annotations

import pytest

KIB = 1024


@pytest.fixture
def app_config():
    return {"HOSTBAY_ISO_MAX_BYTES": 64 * KIB, "HOSTBAY_ISO_QUOTA_COUNT": 3,
            "HOSTBAY_ISO_QUOTA_BYTES": 200 * KIB}
