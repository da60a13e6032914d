"""Plugin manager: entry points, registry.toml, conflicts and broken-plugin isolation.

Nothing here runs at import time: :meth:`PluginRegistry.load` (or the tests' own registrations) builds a
fresh registry per run.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal

import pluggy
from pydantic import BaseModel, ConfigDict, Field, ValidationError

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
from .errors import UserError

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


class CatalogueEntry(BaseModel):
    """One plugin in registry.toml."""

    model_config = ConfigDict(extra="forbid")
    entry_point: str = Field(description="module[:object] the entry point names")
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
    """registry.toml: the catalogue of known plugins, switches, and pins for name clashes."""

    model_config = ConfigDict(extra="forbid")
    plugins: dict[str, CatalogueEntry] = Field(default_factory=dict)
    pins: dict[Literal["generator", "injector", "loss", "validator"], dict[str, str]] = Field(
        default_factory=dict, description="kind -> component name -> plugin that provides it"
    )

    def merged(self, other: "RegistryConfig") -> "RegistryConfig":
        plugins = {**self.plugins, **other.plugins}
        pins = {k: {**self.pins.get(k, {}), **other.pins.get(k, {})} for k in {*self.pins, *other.pins}}
        return RegistryConfig(plugins=plugins, pins=pins)


def packaged_registry_path() -> Path:
    return Path(__file__).with_name("registry.toml")


def read_registry_config(path: Path) -> RegistryConfig:
    from .spec import format_validation_error

    if not path.is_file():
        raise UserError(f"{path}: registry file not found")
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: TOML syntax error: {exc}") from None
    try:
        return RegistryConfig.model_validate(data)
    except ValidationError as exc:
        raise UserError(format_validation_error(exc, str(path), model=RegistryConfig)) from None


def default_registry_config(user_file: str | os.PathLike[str] | None = None) -> RegistryConfig:
    """The packaged catalogue, overlaid with ``user_file`` (or ``$RESTOREKIT_REGISTRY``)."""
    base = packaged_registry_path()
    config = read_registry_config(base) if base.is_file() else RegistryConfig()
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


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    msg = text[0] if text else ""
    return f"{type(exc).__name__}: {msg}"[:300]


class PluginRegistry:
    """Typed view of the plugins: kind → component name → (component, plugin)."""

    def __init__(self, config: RegistryConfig | None = None, *, trace: bool = False) -> None:
        self.config = config or RegistryConfig()
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self._components: dict[Kind, dict[str, list[Resolved]]] = {k: {} for k in KINDS}
        self._collected = False
        if trace or os.environ.get(ENV_TRACE):
            self.pm.trace.root.setwriter(print)
            self.pm.enable_tracing()

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
        if only is None and os.environ.get(ENV_LOAD) is not None:
            only = [n.strip() for n in os.environ[ENV_LOAD].split(",") if n.strip()]
        wanted = set(only) if only is not None else None
        seen: set[str] = set()
        for ep in sorted(md.entry_points(group=GROUP), key=lambda e: e.name):
            if ep.name in seen or (wanted is not None and ep.name not in wanted):
                continue
            seen.add(ep.name)
            dist = getattr(ep, "dist", None)
            info = PluginInfo(
                ep.name,
                distribution=dist.metadata["Name"] if dist is not None else None,
                version=dist.version if dist is not None else None,
            )
            entry = reg.config.plugins.get(ep.name)
            if entry is not None and not entry.enabled:
                info.status, info.reason = "disabled", "turned off in registry.toml"
                reg.plugins[ep.name] = info
                reg.pm.set_blocked(ep.name)
                continue
            try:
                obj = ep.load()
            except Exception as exc:  # noqa: BLE001 - isolate any failure of a plugin's import
                info.status, info.reason = "broken", f"import failed: {_one_line(exc)}"
                reg.plugins[ep.name] = info
                continue
            reg._register(obj, info)
        return reg

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
            caller = getattr(self.pm.hook, HOOKS[kind])
            for impl in caller.get_hookimpls():
                info = self.plugins.get(impl.plugin_name)
                if info is None or info.status != "ok":
                    continue
                try:
                    result = impl.function()
                    comps = self._check_components(kind, result)
                except Exception as exc:  # noqa: BLE001 - a broken hook breaks only its plugin
                    info.status, info.reason = "broken", f"{HOOKS[kind]} failed: {_one_line(exc)}"
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

    def get(self, kind: Kind, name: str) -> Resolved:
        """The component ``name`` of ``kind``; :class:`UserError` if unknown, ambiguous or broken."""
        self._collect()
        found = self._components[kind].get(name, [])
        pin = self.config.pins.get(kind, {}).get(name)
        if pin is not None:
            pinned = [r for r in found if r.plugin == pin]
            if not pinned:
                raise UserError(
                    f"registry.toml: pins.{kind}.{name} = {pin!r}, but plugin {pin!r} "
                    f"provides no {kind} {name!r}{self._broken_hint(kind, name)}"
                )
            return pinned[0]
        if len(found) > 1:
            plugins = " and ".join(sorted(repr(r.plugin) for r in found))
            raise UserError(
                f"{kind} {name!r} is provided by plugins {plugins}; pin one in registry.toml "
                f"([pins.{kind}] {name} = \"<plugin>\")"
            )
        if found:
            return found[0]
        broken = self._broken_hint(kind, name)
        if broken:
            raise UserError(f"{kind} {name!r} is unavailable:{broken}")
        from .spec import did_you_mean

        avail = self.names(kind)
        raise UserError(
            f"unknown {kind} {name!r}{did_you_mean(name, avail)} (available: {', '.join(avail) or 'none'})"
        )

    def _broken_hint(self, kind: Kind, name: str) -> str:
        hints = []
        for pname, info in self.plugins.items():
            if info.status == "ok":
                continue
            entry = self.config.plugins.get(pname)
            if entry is not None and name not in entry.provides(kind):
                continue
            verb = "is turned off in registry.toml" if info.status == "disabled" else f"is broken ({info.reason})"
            hints.append(f" plugin {pname!r} {verb}")
        return ";".join(hints)

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

