"""Fixtures for the REST API tests: real tokens through the domain function the account page uses."""

import pytest

from hostbay.core import credentials
from hostbay.core.db import db


@pytest.fixture
def app_config():
    return {"HOSTBAY_API_RATE_LIMIT": "100000 per minute", "HOSTBAY_WEBHOOK_ALLOW_PRIVATE": True}


@pytest.fixture
def make_token(app):
    def _make(user, scope="write", **kw):
        _tok, raw = credentials.create_api_token(user, f"test {scope}", scope=scope, **kw)
        db.session.commit()
        return raw

    return _make


def bearer(raw):
    return {"Authorization": f"Bearer {raw}"}
