"""Registry files: ``registry.toml`` (shipped) laid under the user's file (``--registry`` or
``$RESTOREKIT_REGISTRY``), partial overlays, and where each setting came from (so errors name the right file)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from ..components import Kind
from ..errors import UserError

ENV_REGISTRY = "RESTOREKIT_REGISTRY"
PLURAL: dict[Kind, str] = {"generator": "generators", "injector": "injectors", "loss": "losses", "validator": "validators"}

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
    return Path(__file__).parents[1] / "registry.toml"


def read_registry_config(path: Path, *, source: str | None = None) -> RegistryConfig:
    """A registry file; its settings remember ``source`` (default: the path) as their origin."""
    from ..spec import read_toml, validation_error

    data = read_toml(path, "registry file")
    try:
        config = RegistryConfig.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, str(path), model=RegistryConfig) from None
    return config.with_source(source or str(path))


def default_registry_config(user_file: str | os.PathLike[str] | None = None) -> RegistryConfig:
    """The packaged catalogue, overlaid with ``user_file`` (or ``$RESTOREKIT_REGISTRY``)."""
    base = packaged_registry_path()
    config = read_registry_config(base, source=PACKAGED) if base.is_file() else RegistryConfig()
    user = user_file or os.environ.get(ENV_REGISTRY)
    if user:
        config = config.merged(read_registry_config(Path(user)))
    return config


class RegistryError(UserError):
    """A mistake in a registry file (or ``$RESTOREKIT_LOAD_PLUGINS``): the message names that file, not the
    pipeline that needed the component."""
