"""Plugin loading: stevedore discovers the ``hostbay.plugins`` entry-point group, pluggy dispatches hooks.

Core itself is a plugin: the modules of :data:`DEFAULT_PLUGINS` (core's job handlers, schedules, staff menu and
event listeners) are registered first, through the same hooks as any third-party plugin.

Isolation: a plugin that fails to import, implements a hook that has no specification, whose contribution hook
raises, returns something that is not a driver class (or not a handler), reuses a driver name or job kind that an
earlier plugin took, or ships a driver that advertises a capability whose method it does not override, is
unregistered and listed as failed with the reason; the rest loads. Every other hook implementation is called
through pluggy's hook caller (its order, its wrappers) with an isolating shim: one failing listener is logged and
the others still run.

Opt-in plugins (:data:`OPT_IN`, the author kit's ``fake`` drivers) load only when ``HOSTBAY_PLUGINS`` names them,
in the demo and in tests. The registry is built by :func:`build_registry` (called by ``create_app()`` and the
worker); no module global holds it.
"""

from __future__ import annotations

import functools
import importlib
import logging
from dataclasses import dataclass, field
from importlib import metadata
from types import ModuleType
from typing import Any, Callable

import pluggy
from stevedore import NamedExtensionManager

from . import drivers, hookspecs

log = logging.getLogger(__name__)
GROUP = "hostbay.plugins"

# Core's own contributions, registered like any plugin (cf. Datasette's DEFAULT_PLUGINS).
DEFAULT_PLUGINS: tuple[str, ...] = ("hostbay.core.builtin",)
# Installed plugins that load only when named (HOSTBAY_PLUGINS), in the demo and in tests.
OPT_IN = frozenset({"fake"})

# Contribution hooks gathered once when the registry is built, per kind of driver.
DRIVER_HOOKS = {
    "virt": "hostbay_virt_drivers",
    "power": "hostbay_power_drivers",
    "payment": "hostbay_payment_gateways",
    "network_filter": "hostbay_network_filters",
    "dns": "hostbay_dns_backends",
}
# Hooks the registry calls per plugin (to attribute a failure); every other hook goes through the isolating shim.
BUILD_HOOKS = frozenset(DRIVER_HOOKS.values()) | {"hostbay_job_handlers", "hostbay_scheduled_jobs"}


@dataclass
class PluginInfo:
    name: str
    version: str = ""
    state: str = "loaded"  # loaded, failed, disabled
    error: str = ""
    hooks: list[str] = field(default_factory=list)
    module: ModuleType | None = None
    builtin: bool = False


class ContributionError(Exception):
    """A plugin's contribution hook returned something the registry cannot accept."""


def capability_gaps(cls: type[drivers.Driver]) -> list[str]:
    """The capabilities ``cls`` advertises without overriding the methods they need (empty: it keeps its word)."""
    base = next((b for b in drivers.INTERFACES.values() if issubclass(cls, b)), None)
    if base is None:
        return []
    needs = drivers.CAPABILITY_METHODS.get(base, {})
    gaps = []
    for cap in sorted(cls.capabilities):
        for method in needs.get(cap, ()):
            if getattr(cls, method, None) is getattr(base, method, None):
                gaps.append(f"{cap} (needs {method}())")
    return gaps


class Registry:
    """The loaded plugins, their pluggy manager, and what they contribute (drivers, job handlers, schedules)."""

    def __init__(self, pm: pluggy.PluginManager, plugins: list[PluginInfo]):
        self.pm = pm
        self.hook = pm.hook
        self.plugins = plugins
        self.drivers: dict[str, dict[str, type[drivers.Driver]]] = {}
        self.job_handlers: dict[str, Callable] = {}
        self.schedules: list[tuple[str, int]] = []
        self._collect()

    # --- contributions --------------------------------------------------------------------------------------
    def _info(self, plugin_name: str) -> PluginInfo | None:
        return next((p for p in self.plugins if p.name == plugin_name), None)

    def _fail(self, plugin_name: str, reason: str) -> None:
        info = self._info(plugin_name)
        plugin = self.pm.get_plugin(plugin_name)
        if plugin is not None:
            self.pm.unregister(plugin)
        if info is not None:
            info.state, info.error, info.hooks = "failed", reason, []
        log.error("plugin %s rejected: %s", plugin_name, reason)

    def _per_plugin(self, hook_name: str):
        """(plugin name, result) for each implementation, in registration order; a raising one fails its plugin."""
        out = []
        for impl in getattr(self.hook, hook_name).get_hookimpls():
            fn = getattr(impl.function, "__wrapped__", impl.function)
            try:
                out.append((impl.plugin_name, fn()))
            except Exception as exc:  # noqa: BLE001 - isolation: the plugin fails, the registry loads
                out.append((impl.plugin_name, ContributionError(f"{hook_name} raised {type(exc).__name__}: {exc}")))
        return out

    def _gather(self) -> tuple[dict, dict, list, dict[str, str]]:
        found: dict[str, dict[str, type[drivers.Driver]]] = {}
        failures: dict[str, str] = {}
        owner: dict[tuple[str, str], str] = {}
        for kind, hook_name in DRIVER_HOOKS.items():
            base = drivers.INTERFACES[kind]
            found[kind] = {}
            for plugin, contributed in self._per_plugin(hook_name):
                try:
                    if isinstance(contributed, Exception):
                        raise contributed
                    staged = {}
                    for cls in contributed or []:
                        if not (isinstance(cls, type) and issubclass(cls, base)):
                            raise ContributionError(f"{cls!r} returned by {hook_name} is not a {base.__name__}")
                        gaps = capability_gaps(cls)
                        if gaps:
                            raise ContributionError(f"{kind} driver {cls.name!r} advertises capabilities it does not "
                                                    f"implement: {', '.join(gaps)}")
                        taken = owner.get((kind, cls.name))
                        if (taken is not None and taken != plugin) or (cls.name in staged and staged[cls.name] is not cls):
                            raise ContributionError(f"the {kind} driver name {cls.name!r} is taken by {taken or plugin}")
                        staged[cls.name] = cls
                except ContributionError as exc:
                    failures.setdefault(plugin, str(exc))
                    continue
                for name, cls in staged.items():
                    owner[(kind, name)] = plugin
                    found[kind][name] = cls
        from .jobs import QUEUE_CLASSES

        handlers: dict[str, Callable] = {}
        for plugin, contributed in self._per_plugin("hostbay_job_handlers"):
            try:
                if isinstance(contributed, Exception):
                    raise contributed
                if not isinstance(contributed or {}, dict):
                    raise ContributionError(f"hostbay_job_handlers returned {type(contributed).__name__}, not a dict")
                for kind, fn in (contributed or {}).items():
                    if not callable(fn):
                        raise ContributionError(f"the handler of job kind {kind!r} is not callable")
                    queue = getattr(fn, "hostbay_queue", None)
                    if queue is not None and queue not in QUEUE_CLASSES:
                        raise ContributionError(f"the handler of job kind {kind!r} declares the unknown queue "
                                                f"{queue!r} (one of {', '.join(QUEUE_CLASSES)})")
                    if kind in handlers and handlers[kind] is not fn:
                        raise ContributionError(f"the job kind {kind!r} is taken by {owner[('job', kind)]}")
            except ContributionError as exc:
                failures.setdefault(plugin, str(exc))
                continue
            for kind, fn in (contributed or {}).items():
                handlers[kind] = fn
                owner[("job", kind)] = plugin
        schedules: list[tuple[str, int]] = []
        for plugin, contributed in self._per_plugin("hostbay_scheduled_jobs"):
            try:
                if isinstance(contributed, Exception):
                    raise contributed
                entries = [tuple(e) for e in contributed or []]
                for e in entries:
                    if len(e) != 2 or not isinstance(e[0], str) or not isinstance(e[1], int) or e[1] <= 0:
                        raise ContributionError(f"hostbay_scheduled_jobs entry {e!r} is not (kind, seconds)")
            except (ContributionError, TypeError) as exc:
                failures.setdefault(plugin, str(exc))
                continue
            schedules.extend(e for e in entries if e not in schedules)
        return found, handlers, schedules, failures

    def _collect(self) -> None:
        while True:  # a failed plugin is unregistered and everything gathered again without it
            found, handlers, schedules, failures = self._gather()
            if not failures:
                break
            for plugin, reason in failures.items():
                self._fail(plugin, reason)
        # updated in place, dropping only what an earlier collection contributed (entries set by hand stay)
        prev = getattr(self, "_contributed", {"drivers": {}, "handlers": set(), "schedules": []})
        for kind, names in prev["drivers"].items():
            for name in names:
                self.drivers.get(kind, {}).pop(name, None)
        for kind in found:
            self.drivers.setdefault(kind, {}).update(found[kind])
        for kind in prev["handlers"]:
            self.job_handlers.pop(kind, None)
        self.job_handlers.update(handlers)
        self.schedules[:] = [e for e in self.schedules if e not in prev["schedules"]] + schedules
        self._contributed = {"drivers": {k: set(v) for k, v in found.items()}, "handlers": set(handlers),
                             "schedules": list(schedules)}

    def add(self, plugin: Any, name: str | None = None) -> str:
        """Register one more plugin after the build (tests, embedding), with the same checks and isolation."""
        name = name or getattr(plugin, "__name__", None) or f"{type(plugin).__name__}-{id(plugin)}"
        info = PluginInfo(name, "", "loaded", module=plugin)
        _register(self.pm, plugin, info)
        self.pm.check_pending()
        self.plugins.append(info)
        self._collect()
        return name

    def remove(self, name: str) -> None:
        plugin = self.pm.get_plugin(name)
        if plugin is not None:
            self.pm.unregister(plugin)
        self.plugins = [p for p in self.plugins if p.name != name]
        self._collect()

    # --- use ------------------------------------------------------------------------------------------------
    def driver_class(self, kind: str, name: str) -> type[drivers.Driver]:
        try:
            return self.drivers[kind][name]
        except KeyError:
            from .errors import FatalDriverError

            raise FatalDriverError(f"no {kind} driver named {name!r} is loaded") from None

    def driver(self, kind: str, name: str, config: dict | None = None) -> drivers.Driver:
        return self.driver_class(kind, name)(config or {})

    def collect(self, hook_name: str, **kwargs) -> list:
        """Flatten the lists returned by a contribution hook (called through pluggy; a failing plugin costs only
        its own part)."""
        out: list = []
        for part in getattr(self.hook, hook_name)(**kwargs):
            out.extend(part or [])
        return out

    def notify(self, hook_name: str, **kwargs) -> None:
        """Fire an event hook through pluggy's hook caller (its order and wrappers); a listener's exception is
        logged and the other listeners still run. Code that changes data fires events with
        :func:`hostbay.core.jobs.notify_after_commit` instead, which calls this once the change is committed."""
        getattr(self.hook, hook_name)(**kwargs)


def _dist_version(ep) -> str:
    dist = getattr(ep, "dist", None)
    if dist is not None:
        return dist.version
    try:
        return metadata.version(ep.value.split(".")[0])
    except metadata.PackageNotFoundError:
        return ""


def _isolated(fn: Callable, plugin_name: str, hook_name: str) -> Callable:
    """Wrap a hook implementation so its exception is logged instead of aborting pluggy's call loop. Inside an app
    context a listener runs in a SAVEPOINT, so a failing one leaves no half-written rows for the others."""
    @functools.wraps(fn)
    def shim(*args, **kwargs):
        try:
            from flask import has_app_context

            if has_app_context() and hook_name in hookspecs.EVENT_HOOKS:
                from .db import db

                with db.session.begin_nested():
                    return fn(*args, **kwargs)
            return fn(*args, **kwargs)
        except Exception:  # noqa: BLE001 - one broken plugin must not break the event or the page
            log.exception("plugin %s failed in %s", plugin_name, hook_name)
            return None
    return shim


def _register(pm: pluggy.PluginManager, plugin: Any, info: PluginInfo) -> None:
    """Register one plugin; a plugin with a bad or misspelt hook is unregistered and marked failed. Its
    implementations of hooks other than the build-time contributions get the isolating shim."""
    try:
        pm.register(plugin, name=info.name)
        unknown = [hc.name for hc in pm.get_hookcallers(plugin) or [] if not hc.has_spec()]
        if unknown:
            pm.unregister(plugin)
            raise pluggy.PluginValidationError(plugin, f"unknown hook(s): {', '.join(unknown)}")
        for hc in pm.get_hookcallers(plugin) or []:
            if hc.name in BUILD_HOOKS:
                continue
            for impl in hc.get_hookimpls():
                if impl.plugin is plugin and not (impl.hookwrapper or getattr(impl, "wrapper", False)):
                    impl.function = _isolated(impl.function, info.name, hc.name)
    except Exception as exc:  # noqa: BLE001 - isolation: one bad plugin never takes the app down
        info.state, info.error = "failed", f"{type(exc).__name__}: {exc}"
        log.error("plugin %s rejected: %s", info.name, info.error)


def build_registry(enabled: list[str] | None = None, extra_plugins: list[Any] | None = None,
                   include: list[str] | tuple[str, ...] = ()) -> Registry:
    """Load core's built-in plugin, the plugins of the entry-point group (only ``enabled`` ones when given; the
    opt-in ones only when named in ``enabled`` or ``include``) plus ``extra_plugins`` (objects or modules with hook
    implementations, for tests and embedding)."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    infos: dict[str, PluginInfo] = {}
    for modname in DEFAULT_PLUGINS:
        info = PluginInfo(modname, "", builtin=True)
        try:
            info.module = importlib.import_module(modname)
        except Exception as exc:  # noqa: BLE001 - reported like any plugin
            info.state, info.error = "failed", f"{type(exc).__name__}: {exc}"
        else:
            _register(pm, info.module, info)
        infos[modname] = info
    eps = {ep.name: ep for ep in metadata.entry_points(group=GROUP)}

    def on_failure(manager, ep, exc):
        infos[ep.name] = PluginInfo(ep.name, _dist_version(ep), "failed", f"{type(exc).__name__}: {exc}")
        log.error("plugin %s failed to load: %s: %s", ep.name, type(exc).__name__, exc)

    if enabled is None:
        names = [n for n in eps if n not in OPT_IN or n in include]
    else:  # disabled plugins are not even imported
        names = list(dict.fromkeys([*enabled, *include]))
    mgr = NamedExtensionManager(GROUP, names=names, on_load_failure_callback=on_failure)
    for ext in mgr.extensions:
        info = PluginInfo(ext.name, _dist_version(ext.entry_point), module=ext.plugin)
        _register(pm, ext.plugin, info)
        infos[ext.name] = info
    for name, ep in eps.items():
        if name not in infos:
            if name in OPT_IN and name not in names:
                infos[name] = PluginInfo(name, _dist_version(ep), "disabled",
                                         "opt-in: loaded only when HOSTBAY_PLUGINS names it")
                continue
            disabled = name not in names
            infos[name] = PluginInfo(name, _dist_version(ep), "disabled" if disabled else "failed",
                                     "" if disabled else "did not load")
    for name in enabled or []:
        if name not in infos:
            infos[name] = PluginInfo(name, "", "failed", "enabled in HOSTBAY_PLUGINS but not installed")
    for i, plugin in enumerate(extra_plugins or []):
        name = getattr(plugin, "__name__", None) or f"{type(plugin).__name__}-{i}"
        info = PluginInfo(name, "", "loaded", module=plugin)
        _register(pm, plugin, info)
        infos[name] = info
    pm.check_pending()
    registry = Registry(pm, sorted(infos.values(), key=lambda p: (not p.builtin, p.name)))
    for info in registry.plugins:
        if info.state == "loaded":
            plugin = pm.get_plugin(info.name)
            info.hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or []) if plugin is not None else []
    return registry
