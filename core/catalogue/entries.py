"""Catalogue entries and their sources: :class:`ModelEntry`, catalogue TOML files, plugins' entries, lookup by name,
and the check that loaded weights are what their entry promises."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..model_entry import ModelEntry
from ..errors import UserError
from ..hookspecs import CATALOGUE_HOOK as HOOK

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from ..registry import PluginRegistry

ENV_CATALOGUE = "RESTOREKIT_CATALOGUE"


class _CatalogueFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    models: dict[str, dict[str, Any]] = Field(default_factory=dict)


def _entries_from_table(models: Mapping[str, Any], source: str) -> dict[str, ModelEntry]:
    from ..spec import validation_error

    out: dict[str, ModelEntry] = {}
    for name, table in models.items():
        if not isinstance(table, Mapping):
            raise UserError.at(source, f"models.{name}", "expected a table")
        try:
            out[name] = ModelEntry.model_validate({**table, "name": name, "source": source})
        except ValidationError as exc:
            raise validation_error(exc, source, prefix=f"models.{name}", model=ModelEntry) from None
    return out


def read_catalogue_file(path: str | os.PathLike[str]) -> dict[str, ModelEntry]:
    """Entries of one catalogue TOML file (``[models.<name>]`` tables)."""
    from ..spec import read_toml, validation_error

    p = Path(path)
    data = read_toml(p, "catalogue file")

    try:
        parsed = _CatalogueFile.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, str(p), model=_CatalogueFile) from None
    return _entries_from_table(parsed.models, str(p))


def packaged_catalogue_path() -> Path:
    return Path(__file__).parents[1] / "catalogue.toml"



def _plugin_entries(registry: "PluginRegistry") -> dict[str, ModelEntry]:
    """Entries from every plugin's ``restorekit_catalogue`` hook (collected by the registry like the component
    hooks: a hook that raises marks its plugin broken): ModelEntry objects, tables or catalogue files."""
    out: dict[str, ModelEntry] = {}
    for plugin, items in registry.catalogue_items():
        where = f"plugin {plugin!r}: {HOOK}()"
        for item in items:
            if isinstance(item, ModelEntry):
                out[item.name] = item.model_copy(update={"source": item.source or where})
            elif isinstance(item, (str, os.PathLike)):
                out.update(read_catalogue_file(item))
            elif isinstance(item, Mapping) and "name" in item:
                table = {k: v for k, v in item.items() if k != "name"}
                out.update(_entries_from_table({str(item["name"]): table}, where))
            else:
                raise UserError.at(where, None,
                                   f"returned {type(item).__name__}; expected ModelEntry, a table or a path")
    return out


def load_catalogue(
    extra: Iterable[str | os.PathLike[str]] | str | os.PathLike[str] | None = None,
    *,
    registry: "PluginRegistry | None" = None,
) -> dict[str, ModelEntry]:
    """Every known entry: packaged < plugins (``registry``) < ``$RESTOREKIT_CATALOGUE`` files < ``extra`` files."""
    entries: dict[str, ModelEntry] = {}
    base = packaged_catalogue_path()
    if base.is_file():
        entries.update(read_catalogue_file(base))
    if registry is not None:
        entries.update(_plugin_entries(registry))
    env = os.environ.get(ENV_CATALOGUE, "")
    for item in (p for p in env.split(os.pathsep) if p.strip()):
        entries.update(read_catalogue_file(item.strip()))
    if isinstance(extra, (str, os.PathLike)):
        extra = [extra]
    for item in extra or []:
        entries.update(read_catalogue_file(item))
    return entries


def lookup(name: str, entries: Mapping[str, ModelEntry], *, source: str | None = None,
           field: str | None = "model") -> ModelEntry:
    """The entry ``name``; an unknown name is a one-line error at ``source`` and ``field``, with a suggestion."""
    from ..spec import did_you_mean

    if name in entries:
        return entries[name]
    raise UserError.at(source, field, f"unknown model {name!r}{did_you_mean(name, entries)}; `restore-run --list-models` "
                       "lists the known names")


def looks_like_name(text: str) -> bool:
    """A catalogue-style name (no folder, no file suffix) rather than a path."""
    return "/" not in text and "\\" not in text and not Path(text).suffix



# ----------------------------------------------------------------------------------------------------
# checks after loading


def count_parameters(module: "nn.Module") -> int:
    return sum(p.numel() for p in module.parameters())


def check_component(entry: ModelEntry, component: str, path: Path) -> None:
    """The file at ``path`` holds the component ``entry`` promises (checked before anything is built)."""
    if component != entry.component:
        raise UserError.at(
            path, None, f"holds a {component!r} network, but catalogue entry {entry.name!r} says {entry.component!r}"
        )


def check_loaded(entry: ModelEntry, component: str, module: "nn.Module", path: Path) -> None:
    """The network loaded from ``path`` is what ``entry`` promises: component, scale and parameter count."""
    check_component(entry, component, path)
    scale = getattr(module, "scale", None)
    if scale is not None and int(scale) != entry.scale:
        raise UserError.at(path, None,
                           f"network scale is x{scale}, but catalogue entry {entry.name!r} says x{entry.scale}")
    if entry.parameters is not None:
        n = count_parameters(module)
        if n != entry.parameters:
            raise UserError.at(
                path, None, f"network has {n:,} parameters, but catalogue entry {entry.name!r} says "
                f"{entry.parameters:,}"
            )

