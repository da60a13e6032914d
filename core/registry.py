"""Plugin manager: entry points, registry.toml, conflicts and broken-plugin isolation.

Nothing here runs at import time: :meth:`PluginRegistry.load` (or the tests' own registrations) builds a
fresh registry per run.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import sys
import tomllib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping

import pluggy
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from . import hookspecs
from .components import (
    KINDS,
    Component,
    GeneratorComponent,
    InjectorComponent,
    Kind,
    LossComponent,
    ValidatorComponent,
)
from .errors import PluginWarning, UserError, where

GROUP = "restorekit.plugins"
ENV_REGISTRY = "RESTOREKIT_REGISTRY"
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
PLURAL: dict[Kind, str] = {"generator": "generators", "injector": "injectors", "loss": "losses", "validator": "validators"}


# ----------------------------------------------------------------------------------------------------
# registry.toml

PACKAGED = "registry.toml (shipped with restorekit)"


class CatalogueEntry(BaseModel):
    """One plugin in a registry file. In a user file every field is optional: only the fields written there are
    laid over the shipped entry (``[plugins.srflow] enabled = false`` is a complete overlay)."""

    model_config = ConfigDict(extra="forbid")
    entry_point: str | None = Field(None, description="module[:object] the entry point names")
    distribution: str = Field("restorekit", description="The distribution that ships it")
    summary: str = Field("", description="One line")
    enabled: bool = Field(True, description="false turns the plugin off")
    generators: list[str] = Field(default_factory=list)
    injectors: list[str] = Field(default_factory=list)
    losses: list[str] = Field(default_factory=list)
    validators: list[str] = Field(default_factory=list)

    def provides(self, kind: Kind) -> list[str]:
        return list(getattr(self, PLURAL[kind]))


class RegistryConfig(BaseModel):
    """registry.toml: the catalogue of known plugins, switches, and pins for name clashes.

    Remembers which file set each plugin entry and pin (:meth:`origin`), so that an error names the file that
    holds the mistake.
    """

    model_config = ConfigDict(extra="forbid")
    plugins: dict[str, CatalogueEntry] = Field(default_factory=dict)
    pins: dict[Literal["generator", "injector", "loss", "validator"], dict[str, str]] = Field(
        default_factory=dict, description="kind -> component name -> plugin that provides it"
    )
    _origins: dict[str, str] = PrivateAttr(default_factory=dict)
    _files: list[str] = PrivateAttr(default_factory=list)

    def origin(self, key: str) -> str:
        """The file that set ``plugins.<name>[.<field>]`` or ``pins.<kind>.<name>``."""
        parts = key.split(".")
        for n in range(len(parts), 0, -1):
            found = self._origins.get(".".join(parts[:n]))
            if found is not None:
                return found
        return "registry config"

    @property
    def user_files(self) -> list[str]:
        """The user's registry files laid over the shipped one, in order."""
        return [f for f in self._files if f != PACKAGED]

    def with_source(self, source: str) -> "RegistryConfig":
        """Mark every setting of this config as coming from ``source``."""
        self._files = [source]
        self._origins = {}
        for name, entry in self.plugins.items():
            self._origins[f"plugins.{name}"] = source
            for f in entry.model_fields_set:
                self._origins[f"plugins.{name}.{f}"] = source
        for kind, pins in self.pins.items():
            for comp in pins:
                self._origins[f"pins.{kind}.{comp}"] = source
        return self

    def merged(self, other: "RegistryConfig") -> "RegistryConfig":
        """``other`` laid over this config: a plugin entry of ``other`` replaces only the fields it sets."""
        plugins = dict(self.plugins)
        for name, entry in other.plugins.items():
            base = plugins.get(name)
            update = {f: getattr(entry, f) for f in entry.model_fields_set}
            plugins[name] = base.model_copy(update=update) if base is not None else entry
        pins = {k: {**self.pins.get(k, {}), **other.pins.get(k, {})} for k in {*self.pins, *other.pins}}
        out = RegistryConfig(plugins=plugins, pins=pins)
        out._origins = {**self._origins, **other._origins}
        out._files = [*self._files, *other._files]
        return out


def packaged_registry_path() -> Path:
    return Path(__file__).with_name("registry.toml")


def read_registry_config(path: Path, *, source: str | None = None) -> RegistryConfig:
    """A registry file; its settings remember ``source`` (default: the path) as their origin."""
    from .spec import format_validation_error

    if not path.is_file():
        raise UserError.at(path, None, "registry file not found")
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise UserError.at(path, None, f"TOML syntax error: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError.at(path, None, f"cannot read ({exc})") from None
    try:
        config = RegistryConfig.model_validate(data)
    except ValidationError as exc:
        raise UserError(format_validation_error(exc, str(path), model=RegistryConfig)) from None
    return config.with_source(source or str(path))


def default_registry_config(user_file: str | os.PathLike[str] | None = None) -> RegistryConfig:
    """The packaged catalogue, overlaid with ``user_file`` (or ``$RESTOREKIT_REGISTRY``)."""
    base = packaged_registry_path()
    config = read_registry_config(base, source=PACKAGED) if base.is_file() else RegistryConfig()
    user = user_file or os.environ.get(ENV_REGISTRY)
    if user:
        config = config.merged(read_registry_config(Path(user)))
    return config


# ----------------------------------------------------------------------------------------------------
# the registry


@dataclass
class PluginInfo:
    name: str
    distribution: str | None = None
    version: str | None = None
    status: Literal["ok", "broken", "disabled"] = "ok"
    reason: str = ""
    provides: dict[Kind, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Resolved:
    """A component found in the registry, with the plugin that provides it."""

    kind: Kind
    component: Component[Any]
    plugin: str
    version: str | None


class RegistryError(UserError):
    """A mistake in a registry file (or ``$RESTOREKIT_LOAD_PLUGINS``): the message names that file, not the
    pipeline that needed the component."""


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    msg = text[0] if text else ""
    return f"{type(exc).__name__}: {msg}"[:300]


def _did_you_mean(word: str, options: Iterable[str]) -> str:
    from .spec import did_you_mean

    return did_you_mean(word, list(options))


def _quoted(names: Iterable[str]) -> str:
    items = sorted(repr(n) for n in names)
    return " and ".join(items) if len(items) < 3 else ", ".join(items[:-1]) + " and " + items[-1]


class PluginRegistry:
    """Typed view of the plugins: kind → component name → (component, plugin)."""

    def __init__(self, config: RegistryConfig | None = None, *, trace: bool = False) -> None:
        self.config = config or RegistryConfig()
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self.warnings: list[str] = []
        self._components: dict[Kind, dict[str, list[Resolved]]] = {k: {} for k in KINDS}
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
                raise RegistryError.at(only_source, None, f"no plugin {name!r} is installed{_did_you_mean(name, eps)} "
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
                info.status, info.reason = "broken", f"import failed: {_one_line(exc)}"
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
                                    f"no plugin {name!r} is installed{_did_you_mean(name, eps)}; entry ignored"))
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
                                    f"no plugin {plugin!r} is installed{_did_you_mean(plugin, eps)}"))

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
            info.status, info.reason = "broken", f"invalid hooks: {_one_line(exc)}"
            self.plugins[info.name] = info
            return
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            self.pm.unregister(name=info.name)
            info.status, info.reason = "broken", f"unknown hook: {_one_line(exc)}"
        self.plugins[info.name] = info

    # -- collecting components -------------------------------------------------------------------------
    def _collect(self) -> None:
        if self._collected:
            return
        self._components = {k: {} for k in KINDS}
        for info in self.plugins.values():
            info.provides = {}
        for kind in KINDS:
            hook = HOOKS[kind]
            for impl in getattr(self.pm.hook, hook).get_hookimpls():
                info = self.plugins.get(impl.plugin_name)
                if info is None or info.status != "ok":
                    continue
                # one plugin at a time, through pluggy's hook caller (so --trace-plugins sees the call)
                others = [p for n, p in self.pm.list_name_plugin() if n != info.name and p is not None]
                self.pm.trace.root.get("plugin")(info.name)  # names the plugin of the hook call traced next
                try:
                    results = self.pm.subset_hook_caller(hook, remove_plugins=others)()
                    comps = self._check_components(kind, results[0] if results else None)
                except Exception as exc:  # noqa: BLE001 - a broken hook breaks only its plugin
                    info.status, info.reason = "broken", f"{hook} failed: {_one_line(exc)}"
                    continue
                for comp in comps:
                    self._components[kind].setdefault(comp.name, []).append(
                        Resolved(kind, comp, info.name, info.version)
                    )
                    info.provides.setdefault(kind, []).append(comp.name)
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
        self._collect()
        found = self._components[kind].get(name, [])
        pin = self.pin(kind, name)
        if pin is not None:
            pinned = [r for r in found if r.plugin == pin]
            if pinned:
                return pinned[0]
            key = f"pins.{kind}.{name}"
            raise RegistryError.at(self.config.origin(key), key, self._pin_problem(kind, name, pin, found))
        if len(found) > 1:
            raise UserError(
                f"{kind} {name!r} is provided by plugins {_quoted(r.plugin for r in found)}; pin one in "
                f"{self._pin_file()}: [pins.{kind}] {name} = \"<plugin>\""
            )
        if found:
            return found[0]
        raise UserError(self._missing(kind, name))

    def _pin_file(self) -> str:
        files = self.config.user_files
        return files[-1] if files else f"your registry file (restore-run --registry FILE or ${ENV_REGISTRY})"

    def _pin_problem(self, kind: Kind, name: str, pin: str, found: list[Resolved]) -> str:
        info = self.plugins.get(pin)
        if info is None:
            return f"no plugin {pin!r} is installed{_did_you_mean(pin, self.plugins)}"
        if info.status == "disabled":
            return f"plugin {pin!r} is {info.reason}"
        if info.status == "broken":
            return f"plugin {pin!r} is broken ({info.reason})"
        others = f" (provided by {_quoted(r.plugin for r in found)})" if found else ""
        return f"plugin {pin!r} provides no {kind} {name!r}{others}"

    def _missing(self, kind: Kind, name: str) -> str:
        """Why ``name`` is not available: a typo first, then a provider turned off or broken."""
        avail = self.names(kind)
        available = f" (available: {', '.join(avail) or 'none'})"
        known, unknown = [], []  # providers the catalogue names for it; plugins whose components are unknown
        for pname, info in sorted(self.plugins.items()):
            if info.status == "ok":
                continue
            entry = self.config.plugins.get(pname)
            if entry is not None and name in entry.provides(kind):
                known.append(info)
            elif entry is None or not any(entry.provides(k) for k in KINDS):
                unknown.append(info)
        if known:
            info = known[0]
            if info.status == "disabled":
                return f"{kind} {name!r} is provided by plugin {info.name!r}, which is {info.reason}"
            return f"{kind} {name!r} is unavailable: plugin {info.name!r} is broken ({info.reason})"
        hint = _did_you_mean(name, avail)
        if hint:
            return f"unknown {kind} {name!r}{hint}{available}"
        if unknown:
            states = "turned off" if all(i.status == "disabled" for i in unknown) else "broken or turned off"
            return (f"unknown {kind} {name!r}{available}; plugin(s) {_quoted(i.name for i in unknown)} are {states} "
                    "and were not asked (restore-run --list-plugins)")
        return f"unknown {kind} {name!r}{available}"

    def plugin_failed(self, resolved: Resolved, what: str, exc: BaseException, source: str) -> None:
        """A plugin's optional callable (``detect``...) raised: warn once per plugin, component and callable."""
        key = (resolved.plugin, resolved.component.name, what)
        if key in self._failed_once:
            return
        self._failed_once.add(key)
        self.warn(
            f"plugin {resolved.plugin!r}: {resolved.kind} {resolved.component.name!r} {what}() failed on {source} "
            f"({_one_line(exc)}); skipped"
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
