"""Plugin manager: entry points, registry.toml, conflicts and broken-plugin isolation.

Nothing here runs at import time: :meth:`PluginRegistry.load` (or the tests' own registrations) builds a
fresh registry per run.

Layout (one job per module): ``config`` (registry files, overlays, where each setting came from), ``manager``
(:class:`PluginRegistry`: loading plugins, calling their hooks, looking components up), ``resolve`` (pins, clashes
and the one-cause error for a component that is not available), ``info`` (:class:`PluginInfo`, :class:`Resolved`).
"""

from __future__ import annotations

from ..components import KINDS, Kind
from .config import (
    ENV_REGISTRY,
    PACKAGED,
    PLURAL,
    CatalogueEntry,
    RegistryConfig,
    RegistryError,
    default_registry_config,
    packaged_registry_path,
    read_registry_config,
)
from .info import PluginInfo, Resolved
from .manager import COMPONENT_TYPES, ENV_LOAD, ENV_TRACE, GROUP, HOOKS, PluginRegistry

__all__ = [
    "COMPONENT_TYPES",
    "ENV_LOAD",
    "ENV_REGISTRY",
    "ENV_TRACE",
    "GROUP",
    "HOOKS",
    "KINDS",
    "PACKAGED",
    "PLURAL",
    "CatalogueEntry",
    "Kind",
    "PluginInfo",
    "PluginRegistry",
    "RegistryConfig",
    "RegistryError",
    "Resolved",
    "default_registry_config",
    "packaged_registry_path",
    "read_registry_config",
]
