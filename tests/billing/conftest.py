"""Shared fixtures for the billing tests: jobs stay queued (the set-up and resize handlers belong to the
lifecycle), so the tests see exactly what billing wrote."""

import pytest

from hostbay.core import services
from hostbay.core.db import db


@pytest.fixture(autouse=True)
def _manual_jobs(app):
    app.config["HOSTBAY_JOBS"] = "manual"


@pytest.fixture
def make_key():
    """``make_key(user)``: a real SSH public key in the user's account."""
    import base64
    import os
    import struct

    from hostbay.core.accounts import add_ssh_key

    def _make(user, name="laptop"):
        blob = struct.pack(">I", 11) + b"ssh-ed25519" + struct.pack(">I", 32) + os.urandom(32)
        key = add_ssh_key(user, name, "ssh-ed25519 " + base64.b64encode(blob).decode())
        db.session.commit()
        return key

    return _make


@pytest.fixture
def finish_job(app):
    return _finish_job


def _finish_job(service):
    """What the lifecycle handlers do when a set-up, resize or rebuild finishes: the service becomes active."""
    db.session.refresh(service)
    if service.state == services.PENDING:
        services.transition(service, services.PROVISIONING)
    services.transition(service, services.ACTIVE)
    db.session.commit()
    return service
