"""Fixtures for the Proxmox plugin tests: the HTTPS API stand-in (hostbay.plugins.proxmox.standin) on loopback.

Every stand-in a test creates (the ``standin`` fixture or its own) is recorded, and when the test ends every
request it received is replayed against Proxmox's API schema file (``pve_testenv.check_against_the_schema``): so
running any single test checks the requests the driver, the order flow, the workers or the demo made in it."""

from __future__ import annotations

import pytest

from hostbay.plugins.proxmox.standin import ProxmoxStandin
from pve_testenv import TEMPLATE, check_against_the_schema, settings_for


@pytest.fixture(scope="session")
def pve_requests() -> list[dict]:
    """Every request every stand-in of this session received (each test's are checked when it ends)."""
    return []


@pytest.fixture(autouse=True)
def standins_checked_against_the_schema(monkeypatch, pve_requests):
    """Records the stand-ins the test creates; at its end replays their requests against the schema."""
    made: list[ProxmoxStandin] = []
    original = ProxmoxStandin.__init__

    def recording_init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(ProxmoxStandin, "__init__", recording_init)
    yield made
    seen = []
    for s in made:
        with s.lock:
            seen.extend(s.requests)
    pve_requests.extend(seen)
    check_against_the_schema(seen)


@pytest.fixture
def standin(tmp_path):
    s = ProxmoxStandin(nodes=("pve1", "pve2"), task_delay=0.05, workdir=tmp_path / "pve",
                       templates={TEMPLATE: {"node": "pve1", "disk_gib": 1}}).start()
    yield s
    s.stop()


@pytest.fixture
def pve_settings(standin):
    return settings_for(standin)
