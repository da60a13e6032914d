"""The one door for weights: :func:`resolve_generator` decides which network and which weights (catalogue name or
file, component read from the file's metadata, given, or detected; params off the tensors' shapes) reading only
headers; :func:`build_generator` builds it and reads the tensors once. ``make_plan``, ``restorekit.load``, the
quick path and the benchmark all come through here."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from pydantic import BaseModel
from torch import nn

from ..catalogue import ModelEntry, check_component, check_loaded, fetch, load_catalogue, lookup
from ..checkpoint import read_state_dict, restorekit_metadata
from ..components import GeneratorComponent
from ..errors import UserError
from ..registry import PluginRegistry, Resolved
from .networks import detect_generator, find_component, generator_params, load_weights


@dataclass(frozen=True)
class ResolvedGenerator:
    """A generator ready to build: the registry's record, validated params, the weights file (None: no weights,
    or a catalogue file not fetched yet — :meth:`weights` fetches it) and the catalogue entry it came from."""

    resolved: Resolved
    params: BaseModel
    path: Path | None = None
    entry: ModelEntry | None = None

    @property
    def component(self) -> GeneratorComponent[Any]:
        return self.resolved.component  # type: ignore[return-value]

    def weights(self) -> Path | None:
        """The weights file, fetched (downloaded once into the cache) for a catalogue entry."""
        if self.path is None and self.entry is not None:
            return fetch(self.entry)
        return self.path


def resolve_generator(
    registry: PluginRegistry,
    *,
    model: str | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    component: str | None = None,
    preset: str | None = None,
    params: Mapping[str, Any] | None = None,
    catalogue: Mapping[str, ModelEntry] | None = None,
    source: str,
    where: str | None = None,
    file_field: str | None = "checkpoint",
) -> ResolvedGenerator:
    """Which generator, params and weights: from a catalogue ``model`` name or a ``checkpoint`` file, with an
    optional ``component`` (else the file's metadata, else detection), ``preset`` and ``params`` over what the
    file holds. Reads headers only (:func:`restorekit.checkpoint.read_state_dict` ``header_only``). Mistakes are
    one line at ``source: where.<field>`` (``file_field``: the checkpoint's field, None: ``where`` itself);
    ``catalogue``: the entries (default: every known one)."""

    def field_of(name: str | None) -> str | None:
        return f"{where}.{name}" if where and name else where

    def at(name: str | None, message: str) -> UserError:
        return UserError.at(source, field_of(name), message)

    entry: ModelEntry | None = None
    params = dict(params or {})
    weights_field = file_field
    if model is not None:
        entries = catalogue if catalogue is not None else load_catalogue(registry=registry)
        entry = lookup(model, entries, source=source, field=field_of("model"))
        if component is not None and component != entry.component:
            raise at("component", f"{component!r}, but model {entry.name!r} is a {entry.component!r} network")
        if entry.component not in registry.names("generator"):  # before downloading anything
            raise at("model", f"catalogue entry needs the generator {entry.component!r}, which no installed plugin "
                              "provides (restore-run --list-plugins)")
        component, weights_field = entry.component, "model"
        preset = preset if preset is not None else entry.preset
        params = {**entry.params, **params}
        if entry.preset is None:  # params in the file (bundled models): read them now
            checkpoint = fetch(entry)  # after the component is known to be installed: nothing downloaded in vain
    path = Path(checkpoint) if checkpoint is not None else None
    header = None
    file_params: dict[str, Any] = {}
    if path is not None:
        if not path.is_file():
            raise at(weights_field, f"{path}: file not found")
        found, file_params = restorekit_metadata(path)
        header = read_state_dict(path, header_only=True)
        if entry is not None:  # the file holds what the entry promises
            check_component(entry, found or detect_generator(registry, header, str(path)).component.name, path)
        elif component is not None and found is not None and found != component:
            raise at(weights_field, f"{path} holds a {found!r} network, not {component!r}")
        component = component or found
    if component is None:
        if header is None:
            raise at("component", "give a component, a catalogue model or a checkpoint")
        resolved = detect_generator(registry, header, str(path))
    else:
        resolved = find_component(registry, "generator", component, source,
                                  field_of("component" if entry is None else "model"))
    parsed = generator_params(resolved, params=params, preset=preset, state_dict=header, file_params=file_params,
                              source=source, where=f"{where}.params" if where else "params", checkpoint=path)
    return ResolvedGenerator(resolved, parsed, path, entry)


def build_generator(gen: ResolvedGenerator, *, strict: bool = True,
                    submodules: Sequence[tuple[str, ResolvedGenerator]] = (), where: str = "network",
                    device: torch.device | None = None) -> nn.Module:
    """Build ``gen`` and load its weights (each file read once), then the ``submodules`` (name, generator)
    into their sub-modules; the catalogue entry's promises (component, scale, parameter count) are checked."""
    comp = gen.component
    module = comp.build(gen.params)
    path = gen.weights()
    if path is not None:
        load_weights(module, comp, gen.params, read_state_dict(path), strict=strict, source=str(path))
        if gen.entry is not None:
            check_loaded(gen.entry, comp.name, module, path)
    for name, part in submodules:
        try:
            sub = module.get_submodule(name)
        except AttributeError:
            raise UserError.at(None, f"{where}.init_submodules", f"{comp.name!r} has no sub-module {name!r}") from None
        part_path = part.weights()
        assert part_path is not None
        load_weights(sub, part.component, part.params, read_state_dict(part_path), strict=True, source=str(part_path))
    return module.to(device) if device is not None else module


__all__ = ["ResolvedGenerator", "build_generator", "resolve_generator"]
