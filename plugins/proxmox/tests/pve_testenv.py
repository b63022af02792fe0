"""Helpers for the Proxmox plugin tests (a module name of its own, so it never collides with another conftest)."""

from __future__ import annotations

import json
from contextlib import contextmanager
from urllib.parse import quote, unquote

from hostbay.plugins.proxmox.standin import Schema, schema_path

TEMPLATE = 9000


def settings_for(standin, **overrides) -> dict:
    """Driver settings for a node of the stand-in cluster (trusting its self-signed certificate via ca_bundle)."""
    values = {"api_url": standin.url, "token_id": standin.token_id, "token_secret": standin.token_secret,
              "verify_tls": True, "ca_bundle": standin.ca_file, "node": standin.nodes[0], "storage": "local-lvm",
              "iso_storage": "local", "bridge": "vmbr0", "vmid_min": 100, "vmid_max": 199, "full_clone": True,
              "timeout": 5, "task_timeout": 30, "stop_timeout": 2}
    values.update(overrides)
    return values


_SCHEMA: tuple[dict, Schema] | None = None


def _schema() -> tuple[dict, Schema]:
    global _SCHEMA
    if _SCHEMA is None:
        _SCHEMA = (json.loads(schema_path().read_text())["paths"], Schema())
    return _SCHEMA


def check_against_the_schema(requests: list[dict]) -> None:
    """Each request's method and path template exist in the schema file, its parameter names are declared there,
    its required parameters are present, it was not refused as malformed (400/501), and every ``sshkeys`` value is
    percent-encoded (``%20`` for spaces, no ``+`` or space left)."""
    raw, schema = _schema()
    requests = [r for r in requests if not r.get("deliberate")]
    for r in requests:
        tpl, path_params = schema.match(r["path"])
        assert tpl == r["template"] and tpl in raw and r["method"] in raw[tpl], r
        declared = raw[tpl][r["method"]]["parameters"]
        for name in r["params"]:
            base = name.rstrip("0123456789")
            assert name in declared or (base != name and f"{base}[n]" in declared), (r["method"], tpl, name)
        for name, decl in declared.items():
            if not decl.get("optional") and not name.endswith("[n]"):
                assert name in r["params"] or name in path_params, (r["method"], tpl, "missing", name)
        assert r["status"] not in (400, 501), r
    for r in requests:
        key = r["params"].get("sshkeys")
        if key is not None:
            assert "%20" in key and " " not in key and "+" not in key and key == quote(unquote(key), safe=""), key


@contextmanager
def deliberate_requests(standin):
    """Requests a test sends by hand inside this block to see the stand-in refuse them: marked, so the replay at the
    end of the test leaves them out (the driver's own requests around them are still checked)."""
    start = len(standin.requests)
    try:
        yield
    finally:
        with standin.lock:
            for r in standin.requests[start:]:
                r["deliberate"] = True
