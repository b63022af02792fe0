"""Helpers for the Proxmox plugin tests (a module name of its own, so it never collides with another conftest)."""

TEMPLATE = 9000


def settings_for(standin, **overrides) -> dict:
    """Driver settings for a node of the stand-in cluster (trusting its self-signed certificate via ca_bundle)."""
    values = {"api_url": standin.url, "token_id": standin.token_id, "token_secret": standin.token_secret,
              "verify_tls": True, "ca_bundle": standin.ca_file, "node": standin.nodes[0], "storage": "local-lvm",
              "iso_storage": "local", "bridge": "vmbr0", "vmid_min": 100, "vmid_max": 199, "full_clone": True,
              "timeout": 5, "task_timeout": 30, "stop_timeout": 2}
    values.update(overrides)
    return values
