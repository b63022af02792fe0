"""Fixtures for the Proxmox plugin tests: the HTTPS API stand-in (hostbay.plugins.proxmox.standin) on loopback."""

from __future__ import annotations

import pytest

from hostbay.plugins.proxmox.standin import ProxmoxStandin

TEMPLATE = 9000


def settings_for(standin, **overrides) -> dict:
    values = {"api_url": standin.url, "token_id": standin.token_id, "token_secret": standin.token_secret,
              "verify_tls": True, "ca_bundle": standin.ca_file, "node": standin.nodes[0], "storage": "local-lvm",
              "iso_storage": "local", "bridge": "vmbr0", "vmid_min": 100, "vmid_max": 199, "full_clone": True,
              "timeout": 5, "task_timeout": 30, "stop_timeout": 2}
    values.update(overrides)
    return values


@pytest.fixture
def standin(tmp_path):
    s = ProxmoxStandin(nodes=("pve1", "pve2"), task_delay=0.05, workdir=tmp_path / "pve",
                       templates={TEMPLATE: {"node": "pve1", "disk_gib": 1}}).start()
    yield s
    s.stop()


@pytest.fixture
def pve_settings(standin):
    return settings_for(standin)
