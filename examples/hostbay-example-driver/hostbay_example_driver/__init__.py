"""A small third-party virtualization driver: servers are JSON files in a folder.

It shows everything a plugin author needs: a driver class with declarative settings and capabilities, the
contribution hook, and a test module that runs hostbay's conformance suite against it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from hostbay.core.drivers import PowerState, Setting, VirtDriver
from hostbay.core.errors import FatalDriverError
from hostbay.core.hookspecs import hookimpl


class JsonFileDriver(VirtDriver):
    name = "example-json"
    label = "Example (JSON files)"
    settings = [Setting("directory", "State folder", help="Where server files are kept.")]
    capabilities = frozenset({"resize"})

    def _path(self, ref) -> Path:
        return Path(self.config["directory"]) / f"{ref['id']}.json"

    def _load(self, ref) -> dict:
        try:
            return json.loads(self._path(ref).read_text())
        except FileNotFoundError:
            raise FatalDriverError(f"server {ref['id']} does not exist") from None

    def _save(self, ref, data) -> None:
        path = self._path(ref)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)

    def create(self, spec, progress):
        ref = {"id": spec.uuid}
        if not self._path(ref).exists():
            progress(50, "Writing server file")
            self._save(ref, {"state": "running", "vcpus": spec.vcpus, "memory_mib": spec.memory_mib,
                             "disk_gib": spec.disk_gib, "installs": 1})
        progress(100, "Server running")
        return ref

    def status(self, ref):
        if not self._path(ref).exists():
            return PowerState.MISSING
        return PowerState(self._load(ref)["state"])

    def _set(self, ref, state):
        data = self._load(ref)
        data["state"] = state
        self._save(ref, data)

    def start(self, ref):
        self._set(ref, "running")

    def stop(self, ref, timeout=60):
        self._set(ref, "stopped")

    def restart(self, ref):
        self._set(ref, "running")

    def reinstall(self, ref, spec, progress):
        data = self._load(ref)  # a missing server is a FatalDriverError
        self._save(ref, {"state": "running", "vcpus": spec.vcpus, "memory_mib": spec.memory_mib,
                         "disk_gib": spec.disk_gib, "installs": data.get("installs", 1) + 1})
        return ref

    def delete(self, ref):
        self._path(ref).unlink(missing_ok=True)

    def resize(self, ref, spec, progress):
        data = self._load(ref)
        data.update(vcpus=spec.vcpus, memory_mib=spec.memory_mib, disk_gib=max(data["disk_gib"], spec.disk_gib))
        self._save(ref, data)
        return ref


@hookimpl
def hostbay_virt_drivers():
    return [JsonFileDriver]
