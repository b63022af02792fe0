"""Plugin loading: stevedore discovers the ``hostbay.plugins`` entry-point group, pluggy dispatches hooks.

A plugin that fails to import is recorded as failed with its reason and never takes the app down. The registry is
built by :func:`build_registry` (called by ``create_app()`` and the worker); no module global holds it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from importlib import metadata
from types import ModuleType
from typing import Any

import pluggy
from stevedore import ExtensionManager, NamedExtensionManager

from . import drivers, hookspecs

log = logging.getLogger(__name__)
GROUP = "hostbay.plugins"


@dataclass
class PluginInfo:
    name: str
    version: str = ""
    state: str = "loaded"  # loaded, failed, disabled
    error: str = ""
    hooks: list[str] = field(default_factory=list)
    module: ModuleType | None = None


class Registry:
    """The loaded plugins, their pluggy manager, and the drivers they contribute."""

    def __init__(self, pm: pluggy.PluginManager, plugins: list[PluginInfo]):
        self.pm = pm
        self.hook = pm.hook
        self.plugins = plugins
        self.drivers: dict[str, dict[str, type[drivers.Driver]]] = {}
        self.job_handlers: dict[str, Any] = {}
        self._collect()

    def _collect(self) -> None:
        sources = {
            "virt": self.hook.hostbay_virt_drivers,
            "power": self.hook.hostbay_power_drivers,
            "payment": self.hook.hostbay_payment_gateways,
            "network_filter": self.hook.hostbay_network_filters,
            "dns": self.hook.hostbay_dns_backends,
        }
        for kind, hook in sources.items():
            base = drivers.INTERFACES[kind]
            found: dict[str, type[drivers.Driver]] = {}
            for contributed in hook():
                for cls in contributed or []:
                    if not (isinstance(cls, type) and issubclass(cls, base)):
                        raise TypeError(f"{cls!r} returned by a {kind} hook is not a {base.__name__}")
                    if cls.name in found and found[cls.name] is not cls:
                        raise ValueError(f"two {kind} drivers are named {cls.name!r}")
                    found[cls.name] = cls
            self.drivers[kind] = found
        for contributed in self.hook.hostbay_job_handlers():
            self.job_handlers.update(contributed or {})

    def driver_class(self, kind: str, name: str) -> type[drivers.Driver]:
        try:
            return self.drivers[kind][name]
        except KeyError:
            from .errors import FatalDriverError

            raise FatalDriverError(f"no {kind} driver named {name!r} is loaded") from None

    def driver(self, kind: str, name: str, config: dict | None = None) -> drivers.Driver:
        return self.driver_class(kind, name)(config or {})

    def collect(self, hook_name: str) -> list:
        """Flatten the lists returned by a contribution hook."""
        out: list = []
        for part in getattr(self.hook, hook_name)():
            out.extend(part or [])
        return out

    def notify(self, hook_name: str, **kwargs) -> None:
        """Fire an event hook; a plugin's exception is logged, never raised into the caller."""
        hook = getattr(self.hook, hook_name)
        for impl in hook.get_hookimpls():
            try:
                impl.function(**{k: kwargs[k] for k in impl.argnames})
            except Exception:  # noqa: BLE001 - one broken plugin must not break the event
                log.exception("plugin %s failed in %s", impl.plugin_name, hook_name)


def _dist_version(ep) -> str:
    dist = getattr(ep, "dist", None)
    if dist is not None:
        return dist.version
    try:
        return metadata.version(ep.value.split(".")[0])
    except metadata.PackageNotFoundError:
        return ""


def _register(pm: pluggy.PluginManager, plugin: Any, info: PluginInfo) -> None:
    """Register one plugin; a plugin with a bad or misspelt hook is unregistered and marked failed."""
    try:
        pm.register(plugin, name=info.name)
        unknown = [hc.name for hc in pm.get_hookcallers(plugin) or [] if not hc.has_spec()]
        if unknown:
            pm.unregister(plugin)
            raise pluggy.PluginValidationError(plugin, f"unknown hook(s): {', '.join(unknown)}")
    except Exception as exc:  # noqa: BLE001 - isolation: one bad plugin never takes the app down
        info.state, info.error = "failed", f"{type(exc).__name__}: {exc}"
        log.error("plugin %s rejected: %s", info.name, info.error)


def build_registry(enabled: list[str] | None = None, extra_plugins: list[Any] | None = None) -> Registry:
    """Load the plugins of the entry-point group (only ``enabled`` ones when given) plus ``extra_plugins``
    (objects or modules with hook implementations, for tests and embedding)."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    infos: dict[str, PluginInfo] = {}
    eps = {ep.name: ep for ep in metadata.entry_points(group=GROUP)}

    def on_failure(manager, ep, exc):
        infos[ep.name] = PluginInfo(ep.name, _dist_version(ep), "failed", f"{type(exc).__name__}: {exc}")
        log.error("plugin %s failed to load: %s: %s", ep.name, type(exc).__name__, exc)

    if enabled is None:
        mgr = ExtensionManager(GROUP, on_load_failure_callback=on_failure)
    else:  # disabled plugins are not even imported
        mgr = NamedExtensionManager(GROUP, names=enabled, on_load_failure_callback=on_failure)
    for ext in mgr.extensions:
        info = PluginInfo(ext.name, _dist_version(ext.entry_point), module=ext.plugin)
        _register(pm, ext.plugin, info)
        infos[ext.name] = info
    for name, ep in eps.items():
        if name not in infos:
            disabled = enabled is not None and name not in enabled
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
    for info in infos.values():
        if info.state == "loaded":
            impls = [h for h in pm.get_hookcallers(pm.get_plugin(info.name)) or []]
            info.hooks = sorted(h.name for h in impls)
    return Registry(pm, sorted(infos.values(), key=lambda p: p.name))
