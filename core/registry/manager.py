"""The plugin manager: plugins loaded from entry points (switches and checks from the registry config), registered
directly, their hooks called one plugin at a time (a broken plugin is isolated and named), components looked up."""

from __future__ import annotations

import importlib.metadata as md
import os
import sys
import warnings
from typing import Any, Iterable, Iterator, Mapping

import pluggy
from pydantic import BaseModel

from .. import hookspecs
from ..components import (
    KINDS,
    Component,
    GeneratorComponent,
    InjectorComponent,
    Kind,
    LossComponent,
    ValidatorComponent,
)
from ..errors import PluginWarning, one_line, where
from .config import PACKAGED, RegistryConfig, RegistryError, default_registry_config
from .info import PluginInfo, Resolved, did_you_mean
from .resolve import resolve

GROUP = "restorekit.plugins"
ENV_LOAD = "RESTOREKIT_LOAD_PLUGINS"
ENV_TRACE = "RESTOREKIT_TRACE_PLUGINS"

HOOKS: dict[Kind, str] = {
    "generator": "restorekit_generators",
    "injector": "restorekit_injectors",
    "loss": "restorekit_losses",
    "validator": "restorekit_validators",
}
COMPONENT_TYPES: dict[Kind, type[Component[Any]]] = {
    "generator": GeneratorComponent,
    "injector": InjectorComponent,
    "loss": LossComponent,
    "validator": ValidatorComponent,
}


class PluginRegistry:
    """Typed view of the plugins: kind → component name → (component, plugin)."""

    def __init__(self, config: RegistryConfig | None = None, *, trace: bool = False) -> None:
        self.config = config or RegistryConfig()
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self.warnings: list[str] = []
        self._components: dict[Kind, dict[str, list[Resolved]]] = {k: {} for k in KINDS}
        self._catalogue: list[tuple[str, list[Any]]] = []
        self._collected = False
        self._failed_once: set[tuple[str, str, str]] = set()
        if trace or os.environ.get(ENV_TRACE, "") not in ("", "0"):
            self.pm.trace.root.setwriter(sys.stderr.write)
            self.pm.enable_tracing()

    def warn(self, message: str) -> None:
        """A one-line :class:`~restorekit.PluginWarning` (kept in :attr:`warnings` too)."""
        self.warnings.append(message)
        warnings.warn(message, PluginWarning, stacklevel=3)

    # -- loading -----------------------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        config: RegistryConfig | None = None,
        *,
        only: Iterable[str] | None = None,
        trace: bool = False,
    ) -> "PluginRegistry":
        """Load every plugin of the entry-point group (``only`` or ``$RESTOREKIT_LOAD_PLUGINS`` restricts)."""
        reg = cls(config if config is not None else default_registry_config(), trace=trace)
        only_source = "only="
        if only is None and os.environ.get(ENV_LOAD) is not None:
            only = [n.strip() for n in os.environ[ENV_LOAD].split(",") if n.strip()]
            only_source = f"${ENV_LOAD}"
        eps: dict[str, md.EntryPoint] = {}
        for ep in sorted(md.entry_points(group=GROUP), key=lambda e: e.name):
            eps.setdefault(ep.name, ep)
        wanted = set(only) if only is not None else None
        for name in sorted(wanted or ()):
            if name not in eps:
                raise RegistryError.at(only_source, None, f"no plugin {name!r} is installed{did_you_mean(name, eps)} "
                                                          f"(installed: {', '.join(eps) or 'none'})")
        reg._check_config(eps)
        for name, ep in eps.items():
            if wanted is not None and name not in wanted:
                continue
            dist = getattr(ep, "dist", None)
            info = PluginInfo(
                name,
                distribution=dist.metadata["Name"] if dist is not None else None,
                version=dist.version if dist is not None else None,
            )
            entry = reg.config.plugins.get(name)
            if entry is not None and not entry.enabled:
                info.status = "disabled"
                info.reason = f"turned off in {reg.config.origin(f'plugins.{name}.enabled')} (plugins.{name}.enabled = false)"
                reg.plugins[name] = info
                reg.pm.set_blocked(name)
                continue
            try:
                obj = ep.load()
            except Exception as exc:  # noqa: BLE001 - isolate any failure of a plugin's import
                info.status, info.reason = "broken", f"import failed: {one_line(exc, named=True)}"
                reg.plugins[name] = info
                continue
            reg._register(obj, info)
        return reg

    def _check_config(self, eps: Mapping[str, md.EntryPoint]) -> None:
        """Warn about registry settings that name no installed plugin or the wrong entry point."""
        for name, entry in self.config.plugins.items():
            source = self.config.origin(f"plugins.{name}")
            if name not in eps:
                if source != PACKAGED:
                    self.warn(where(source, f"plugins.{name}",
                                    f"no plugin {name!r} is installed{did_you_mean(name, eps)}; entry ignored"))
                continue
            if entry.entry_point is not None and entry.entry_point != eps[name].value:
                key = f"plugins.{name}.entry_point"
                self.warn(where(self.config.origin(key), key,
                                f"{entry.entry_point!r} is not the installed entry point {eps[name].value!r}"))
        for kind, pins in self.config.pins.items():
            for comp, plugin in pins.items():
                if plugin not in eps:
                    key = f"pins.{kind}.{comp}"
                    self.warn(where(self.config.origin(key), key,
                                    f"no plugin {plugin!r} is installed{did_you_mean(plugin, eps)}"))

    def register(self, plugin: object, name: str, *, version: str | None = None) -> PluginInfo:
        """Register a plugin object or module directly (tests, notebooks)."""
        info = PluginInfo(name, distribution=None, version=version)
        self._register(plugin, info)
        return info

    def _register(self, obj: object, info: PluginInfo) -> None:
        self._collected = False
        try:
            self.pm.register(obj, name=info.name)
        except Exception as exc:  # noqa: BLE001 - pluggy validation errors, duplicate names
            info.status, info.reason = "broken", f"invalid hooks: {one_line(exc, named=True)}"
            self.plugins[info.name] = info
            return
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            self.pm.unregister(name=info.name)
            info.status, info.reason = "broken", f"unknown hook: {one_line(exc, named=True)}"
        self.plugins[info.name] = info

    # -- collecting components -------------------------------------------------------------------------
    def _each_plugin(self, hook: str) -> Iterator[tuple[PluginInfo, Any]]:
        """``hook`` of each healthy plugin, one at a time through pluggy's hook caller (so --trace-plugins sees
        the call); a hook that raises marks only its plugin broken."""
        for impl in getattr(self.pm.hook, hook).get_hookimpls():
            info = self.plugins.get(impl.plugin_name)
            if info is None or info.status != "ok":
                continue
            others = [p for n, p in self.pm.list_name_plugin() if n != info.name and p is not None]
            self.pm.trace.root.get("plugin")(info.name)  # names the plugin of the hook call traced next
            try:
                results = self.pm.subset_hook_caller(hook, remove_plugins=others)()
            except Exception as exc:  # noqa: BLE001 - a broken hook breaks only its plugin
                info.status, info.reason = "broken", f"{hook} failed: {one_line(exc, named=True)}"
                continue
            yield info, results[0] if results else None

    def _collect(self) -> None:
        if self._collected:
            return
        self._components = {k: {} for k in KINDS}
        for info in self.plugins.values():
            info.provides = {}
        for kind in KINDS:
            hook = HOOKS[kind]
            for info, result in self._each_plugin(hook):
                try:
                    comps = self._check_components(kind, result)
                except Exception as exc:  # noqa: BLE001 - a broken hook breaks only its plugin
                    info.status, info.reason = "broken", f"{hook} failed: {one_line(exc, named=True)}"
                    continue
                for comp in comps:
                    self._components[kind].setdefault(comp.name, []).append(
                        Resolved(kind, comp, info.name, info.version)
                    )
                    info.provides.setdefault(kind, []).append(comp.name)
        self._catalogue = []
        for info, result in self._each_plugin(hookspecs.CATALOGUE_HOOK):
            if result is not None and not isinstance(result, (list, tuple)):
                info.status, info.reason = "broken", f"{hookspecs.CATALOGUE_HOOK} must return a list"
                continue
            self._catalogue.append((info.name, list(result or [])))
        # plugins that broke in a later hook must not keep components from earlier hooks
        broken = {n for n, i in self.plugins.items() if i.status != "ok"}
        for kind in KINDS:
            for name in list(self._components[kind]):
                keep = [r for r in self._components[kind][name] if r.plugin not in broken]
                if keep:
                    self._components[kind][name] = keep
                else:
                    del self._components[kind][name]
        self._collected = True

    @staticmethod
    def _check_components(kind: Kind, result: Any) -> list[Component[Any]]:
        if result is None:
            return []
        if not isinstance(result, (list, tuple)):
            raise TypeError(f"must return a list of {COMPONENT_TYPES[kind].__name__}, got {type(result).__name__}")
        expected = COMPONENT_TYPES[kind]
        names: set[str] = set()
        for comp in result:
            if not isinstance(comp, expected):
                raise TypeError(f"returned {type(comp).__name__}, expected {expected.__name__}")
            if not (isinstance(comp.params, type) and issubclass(comp.params, BaseModel)):
                raise TypeError(f"component {comp.name!r}: params must be a pydantic model class")
            if not callable(comp.build):
                raise TypeError(f"component {comp.name!r}: build is not callable")
            if comp.name in names:
                raise TypeError(f"component {comp.name!r} returned twice")
            names.add(comp.name)
        return list(result)

    # -- lookup ----------------------------------------------------------------------------------------
    def catalogue_items(self) -> list[tuple[str, list[Any]]]:
        """``(plugin, items)`` of each healthy plugin's ``restorekit_catalogue`` hook, as it returned them
        (:mod:`restorekit.catalogue` reads them)."""
        self._collect()
        return [(name, items) for name, items in self._catalogue if self.plugins[name].status == "ok"]

    def names(self, kind: Kind) -> list[str]:
        self._collect()
        return sorted(self._components[kind])

    def candidates(self, kind: Kind, name: str) -> list[Resolved]:
        self._collect()
        return list(self._components[kind].get(name, []))

    def provided_by(self, kind: Kind, name: str, plugin: str) -> Resolved | None:
        """The component ``name`` of ``kind`` as the plugin ``plugin`` provides it (whoever wins a clash)."""
        return next((r for r in self.candidates(kind, name) if r.plugin == plugin), None)

    def pin(self, kind: Kind, name: str) -> str | None:
        """The plugin pinned for ``kind`` ``name`` in the registry config, if any."""
        return self.config.pins.get(kind, {}).get(name)

    def get(self, kind: Kind, name: str) -> Resolved:
        """The component ``name`` of ``kind``; :class:`UserError` if unknown, ambiguous or broken.

        Each error names one cause: a pin in a registry file (:class:`RegistryError`, naming that file), a clash,
        a mistyped name (with a suggestion), a provider turned off or broken.
        """
        return resolve(self, kind, name)

    def plugin_failed(self, resolved: Resolved, what: str, exc: BaseException, source: str) -> None:
        """A plugin's optional callable (``detect``...) raised: warn once per plugin, component and callable."""
        key = (resolved.plugin, resolved.component.name, what)
        if key in self._failed_once:
            return
        self._failed_once.add(key)
        self.warn(
            f"plugin {resolved.plugin!r}: {resolved.kind} {resolved.component.name!r} {what}() failed on {source} "
            f"({one_line(exc, named=True)}); skipped"
        )

    def generators(self) -> list[Resolved]:
        self._collect()
        return [r for rs in self._components["generator"].values() for r in rs]

    def conflicts(self) -> dict[Kind, dict[str, list[str]]]:
        self._collect()
        out: dict[Kind, dict[str, list[str]]] = {}
        for kind in KINDS:
            for name, rs in self._components[kind].items():
                if len(rs) > 1 and name not in self.config.pins.get(kind, {}):
                    out.setdefault(kind, {})[name] = sorted(r.plugin for r in rs)
        return out

    def plugin_infos(self) -> list[PluginInfo]:
        self._collect()
        return sorted(self.plugins.values(), key=lambda i: i.name)
