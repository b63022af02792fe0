"""Plugin discovery through entry points, the enable list, and isolation of broken plugins."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hostbay.core.drivers import VirtDriver
from hostbay.core.hookspecs import hookimpl
from hostbay.core.plugins import build_registry

BUNDLED = {"kvm", "proxmox", "dedicated_ipmi", "crypto_payments", "status"}


def make_dist(root: Path, name: str, module_source: str) -> None:
    """Install a one-module distribution with a hostbay.plugins entry point by writing its files on sys.path."""
    (root / f"{name}.py").write_text(textwrap.dedent(module_source))
    info = root / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[hostbay.plugins]\n{name} = {name}\n")


def run_hostbay(args, pythonpath: Path, tmp_path: Path, **env):
    full_env = dict(os.environ, PYTHONPATH=str(pythonpath), HOSTBAY_INSTANCE_PATH=str(tmp_path / "inst"), **env)
    full_env.pop("HOSTBAY_DATABASE_URL", None)
    return subprocess.run([sys.executable, "-m", "hostbay.web.cli", *args], capture_output=True, text=True,
                          env=full_env, timeout=120)


def test_bundled_plugins_are_discovered():
    reg = build_registry()
    by_name = {p.name: p for p in reg.plugins}
    assert BUNDLED <= set(by_name)
    assert all(by_name[n].state == "loaded" for n in BUNDLED)


def test_enable_list_imports_only_named_plugins():
    reg = build_registry(enabled=["kvm", "nonexistent"])
    by_name = {p.name: p for p in reg.plugins}
    assert by_name["kvm"].state == "loaded"
    assert by_name["proxmox"].state == "disabled"
    assert by_name["nonexistent"].state == "failed" and "not installed" in by_name["nonexistent"].error
    assert "fake" not in reg.drivers["virt"]


def test_broken_plugins_are_listed_and_the_app_still_starts(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    make_dist(site, "broken_plugin", "raise ImportError('libfoo is not installed')\n")
    make_dist(site, "misspelt_plugin", """
        from hostbay.core.hookspecs import hookimpl

        @hookimpl
        def hostbay_virt_driverz():
            return []
    """)
    out = run_hostbay(["plugins", "list"], site, tmp_path)
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line for line in out.stdout.splitlines()[1:]}
    assert "failed" in rows["broken_plugin"] and "libfoo is not installed" in rows["broken_plugin"]
    assert "failed" in rows["misspelt_plugin"] and "hostbay_virt_driverz" in rows["misspelt_plugin"]
    for name in BUNDLED:
        assert "loaded" in rows[name], rows[name]
    # the app itself starts and serves
    probe = subprocess.run(
        [sys.executable, "-c", "from hostbay.web import create_app; a = create_app({'TESTING': True});"
         "from hostbay.core.db import db\nwith a.app_context(): db.create_all()\n"
         "print(a.test_client().get('/healthz').status_code)"],
        capture_output=True, text=True, timeout=120,
        env=dict(os.environ, PYTHONPATH=str(site), HOSTBAY_INSTANCE_PATH=str(tmp_path / "inst2")))
    assert probe.stdout.strip().endswith("200"), probe.stderr


def test_example_third_party_plugin_listed(tmp_path):
    pytest.importorskip("hostbay_example_driver")
    out = run_hostbay(["plugins", "list"], tmp_path, tmp_path)
    line = next(l for l in out.stdout.splitlines() if l.startswith("example "))
    assert "1.0.0" in line and "loaded" in line and "hostbay_virt_drivers" in line


def test_registry_rejects_a_non_driver():
    class NotADriver:
        name = "x"

    class Plugin:
        @hookimpl
        def hostbay_virt_drivers(self):
            return [NotADriver]

    with pytest.raises(TypeError):
        build_registry(enabled=[], extra_plugins=[Plugin()])


def test_event_hook_failure_does_not_propagate(caplog):
    seen = []

    class Bad:
        @hookimpl
        def hostbay_service_suspended(self, service, reason):
            raise RuntimeError("plugin bug")

    class Good:
        @hookimpl
        def hostbay_service_suspended(self, service, reason):
            seen.append(reason)

    reg = build_registry(enabled=[], extra_plugins=[Bad(), Good()])
    reg.notify("hostbay_service_suspended", service=None, reason="unpaid")
    assert seen == ["unpaid"]
    assert "plugin bug" in caplog.text


def test_driver_settings_validation():
    from hostbay.core.drivers import Setting
    from hostbay.core.errors import SettingsError

    class D(VirtDriver):
        name, label = "d", "D"
        settings = [Setting("uri", "URI", type="url"), Setting("timeout", "Timeout", type="int", default=30)]
        create = status = start = stop = restart = reinstall = delete = lambda *a, **k: None

    with pytest.raises(SettingsError) as err:
        D({"uri": "nope", "timeout": "x"})
    assert set(err.value.errors) == {"uri", "timeout"}
    assert D({"uri": "qemu:///system"}).config == {"uri": "qemu:///system", "timeout": 30}


def test_fake_plugin_loads_without_pytest(tmp_path):
    """The embedded demo runs on the fake drivers, on an installation that has no test tools."""
    blocker = tmp_path / "pytest.py"
    blocker.write_text("raise ImportError('pytest is not installed here')\n")
    out = run_hostbay(["plugins", "list"], tmp_path, tmp_path)
    line = next(l for l in out.stdout.splitlines() if l.startswith("fake "))
    assert "loaded" in line, out.stdout + out.stderr


def test_core_and_web_never_import_a_plugin():
    """The hook specs are the only door: core and the web app know no plugin module."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    offenders = [str(p.relative_to(root)) for d in ("core", "web") for p in (root / d).rglob("*.py")
                 if re.search(r"(?:from|import)\s+hostbay\.plugins\.", p.read_text())]
    assert offenders == []
