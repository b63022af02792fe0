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

BUNDLED = {"kvm", "proxmox", "dedicated_ipmi", "crypto_payments", "status", "powerdns", "os_installer"}  # every bundled plugin
OPT_IN_BUNDLED = {"fake"}  # bundled too, loaded only when named (tests, the demo)


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


def test_bundled_names_every_bundled_plugin():
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(Path(__file__).resolve().parents[2] / "setup.cfg")
    declared = {line.split("=")[0].strip() for line in cfg["options.entry_points"]["hostbay.plugins"].splitlines()
                if line.strip()}
    assert declared == BUNDLED | OPT_IN_BUNDLED


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


class _Good:
    """A well-behaved plugin contributing one driver, to show that the others still load."""

    @hookimpl
    def hostbay_virt_drivers(self):
        class GoodDriver(VirtDriver):
            name, label = "good", "Good"
            create = status = start = stop = restart = reinstall = delete = lambda *a, **k: None

        return [GoodDriver]


def _states(reg):
    return {p.name: p for p in reg.plugins}


def test_registry_isolates_a_non_driver():
    """Changed rule: a contribution that is not a driver class fails its plugin, not the registry."""
    class NotADriver:
        name = "x"

    class Plugin:
        @hookimpl
        def hostbay_virt_drivers(self):
            return [NotADriver]

    reg = build_registry(enabled=[], extra_plugins=[Plugin(), _Good()])
    by_name = _states(reg)
    assert by_name["Plugin-0"].state == "failed" and "is not a VirtDriver" in by_name["Plugin-0"].error
    assert by_name["_Good-1"].state == "loaded" and set(reg.drivers["virt"]) == {"good"}


def test_raising_contribution_hook_is_isolated():
    class Raising:
        @hookimpl
        def hostbay_virt_drivers(self):
            raise RuntimeError("libvirt headers missing")

        @hookimpl
        def hostbay_job_handlers(self):
            return {"raising.sync": lambda op, payload: None}

    reg = build_registry(enabled=[], extra_plugins=[Raising(), _Good()])
    by_name = _states(reg)
    assert by_name["Raising-0"].state == "failed"
    assert "hostbay_virt_drivers raised RuntimeError: libvirt headers missing" in by_name["Raising-0"].error
    assert by_name["_Good-1"].state == "loaded" and "good" in reg.drivers["virt"]
    assert "raising.sync" not in reg.job_handlers  # a failed plugin contributes nothing at all
    assert reg.pm.get_plugin("Raising-0") is None


def test_duplicate_driver_name_and_job_kind_are_isolated():
    class SameName:
        @hookimpl
        def hostbay_virt_drivers(self):
            return _Good().hostbay_virt_drivers()  # another class, the same name "good"

    class SameKind:
        @hookimpl
        def hostbay_job_handlers(self):
            return {"service.provision": lambda op, payload: None}  # core's kind

    reg = build_registry(enabled=[], extra_plugins=[_Good(), SameName(), SameKind()])
    by_name = _states(reg)
    assert by_name["_Good-0"].state == "loaded"
    assert by_name["SameName-1"].state == "failed" and "'good' is taken by _Good-0" in by_name["SameName-1"].error
    assert by_name["SameKind-2"].state == "failed" and "'service.provision' is taken" in by_name["SameKind-2"].error
    assert reg.job_handlers["service.provision"].__module__ == "hostbay.core.lifecycle"


def test_driver_advertising_a_capability_it_lacks_is_listed_as_failed():
    class Liar:
        @hookimpl
        def hostbay_virt_drivers(self):
            class NoResize(VirtDriver):
                name, label = "liar", "Liar"
                capabilities = frozenset({"resize", "console"})
                create = status = start = stop = restart = reinstall = delete = lambda *a, **k: None
                console_target = lambda self, ref: None  # noqa: E731 - console kept, resize() not overridden

            return [NoResize]

    reg = build_registry(enabled=[], extra_plugins=[Liar(), _Good()])
    by_name = _states(reg)
    assert by_name["Liar-0"].state == "failed"
    assert "advertises capabilities it does not implement: resize (needs resize())" in by_name["Liar-0"].error
    assert "liar" not in reg.drivers["virt"] and "good" in reg.drivers["virt"]


def test_every_bundled_driver_keeps_its_capability_promises():
    reg = build_registry(include=["fake"])
    assert all(p.state != "failed" for p in reg.plugins), [(p.name, p.error) for p in reg.plugins]
    assert {"kvm", "fake"} <= set(reg.drivers["virt"])


def test_core_registers_through_the_hooks_like_a_plugin():
    reg = build_registry(enabled=[])
    core = _states(reg)["hostbay.core.builtin"]
    assert core.state == "loaded" and core.builtin
    assert {"hostbay_job_handlers", "hostbay_scheduled_jobs", "hostbay_admin_menu",
            "hostbay_wallet_credited"} <= set(core.hooks)
    assert {"service.provision", "rdns.apply", "payments.reconcile_stale", "core.ping"} <= set(reg.job_handlers)
    assert ("lifecycle.renewal_sweep", 30) in reg.schedules  # every 30 s: a due service waits well under 60 s
    # the sweeps live in hostbay.core.renewals and keep their job kinds and queue classes
    assert {k: reg.job_handlers[k].__module__ for k in ("lifecycle.renewal_sweep", "lifecycle.retention_sweep",
                                                         "lifecycle.retry_renewals", "lifecycle.notices")} \
        == dict.fromkeys(("lifecycle.renewal_sweep", "lifecycle.retention_sweep", "lifecycle.retry_renewals",
                          "lifecycle.notices"), "hostbay.core.renewals")
    assert ("Services", "staff_services.index", "services.view") in reg.collect("hostbay_admin_menu")


def test_fake_plugin_is_opt_in():
    reg = build_registry()
    fake = _states(reg)["fake"]
    assert fake.state == "disabled" and "HOSTBAY_PLUGINS" in fake.error and "fake" not in reg.drivers["virt"]
    assert "fake" in build_registry(enabled=["kvm", "fake"]).drivers["virt"]
    assert "fake" in build_registry(include=["fake"]).drivers["virt"]


def test_plugins_list_with_default_settings_does_not_load_fake(tmp_path):
    out = run_hostbay(["plugins", "list"], tmp_path, tmp_path)
    assert out.returncode == 0, out.stderr
    line = next(l for l in out.stdout.splitlines() if l.startswith("fake "))
    assert "disabled" in line and "loaded" not in line.split()[2], line
    demo = run_hostbay(["plugins", "list"], tmp_path, tmp_path, HOSTBAY_DEMO="1")
    assert "loaded" in next(l for l in demo.stdout.splitlines() if l.startswith("fake ")).split()[2]


def test_event_hook_failure_does_not_propagate(caplog):
    """Through pluggy's hook caller: a raising listener is logged, the others (and wrappers) still run."""
    seen = []

    class Bad:
        @hookimpl
        def hostbay_service_suspended(self, service, reason):
            raise RuntimeError("plugin bug")

    class Good:
        @hookimpl
        def hostbay_service_suspended(self, service, reason):
            seen.append(reason)

    class Wrapper:
        @hookimpl(wrapper=True)
        def hostbay_service_suspended(self, service, reason):
            seen.append("before")
            result = yield
            seen.append("after")
            return result

    reg = build_registry(enabled=[], extra_plugins=[Good(), Bad(), Wrapper()])
    reg.notify("hostbay_service_suspended", service=None, reason="unpaid")
    assert seen == ["before", "unpaid", "after"]  # the wrapper ran; Bad (called first, LIFO) did not stop Good
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
    out = run_hostbay(["plugins", "list"], tmp_path, tmp_path, HOSTBAY_DEMO="1")  # the demo loads it
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
