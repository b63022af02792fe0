import pytest

from hostbay.testing import VirtDriverConformance
from hostbay_example_driver import JsonFileDriver


class TestJsonFileDriver(VirtDriverConformance):
    @pytest.fixture(autouse=True)
    def _folder(self, tmp_path):
        self.folder = tmp_path

    def make_driver(self):
        return JsonFileDriver({"directory": str(self.folder)})

    def make_unreachable_driver(self):
        return None  # local files: nothing to reach

    def observed(self, drv, ref):
        import json

        data = json.loads((self.folder / f"{ref['id']}.json").read_text())
        return {"vcpus": data["vcpus"], "memory_mib": data["memory_mib"], "disk_gib": data["disk_gib"],
                "system_disk": data["installs"], "iso": None}


def test_discovered_through_entry_point(registry):
    """Installed with pip, the plugin is found by hostbay's loader and its driver is registered."""
    info = {p.name: p for p in registry.plugins}["example"]
    assert info.state == "loaded" and info.version == "1.0.0"
    assert registry.drivers["virt"]["example-json"] is JsonFileDriver
