"""Fixtures for the Proxmox plugin tests: the HTTPS API stand-in (hostbay.plugins.proxmox.standin) on loopback."""

from __future__ import annotations

import pytest

from hostbay.plugins.proxmox.standin import ProxmoxStandin
from pve_testenv import TEMPLATE, settings_for


@pytest.fixture
def standin(tmp_path):
    s = ProxmoxStandin(nodes=("pve1", "pve2"), task_delay=0.05, workdir=tmp_path / "pve",
                       templates={TEMPLATE: {"node": "pve1", "disk_gib": 1}}).start()
    yield s
    s.stop()


@pytest.fixture
def pve_settings(standin):
    return settings_for(standin)
