"""Generators: params (preset < checkpoint < file metadata < the user's), weights loaded with one-line errors,
networks built from their plan, the generator that recognises a checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch
from pydantic import BaseModel, ValidationError
from torch import nn

from ..components import GeneratorComponent, StateDict
from ..errors import UserError, one_line
from ..registry import PluginRegistry, RegistryError, Resolved
from ..spec import validation_error

if TYPE_CHECKING:
    from .plans import NetworkPlan


def validate_params(model: type[BaseModel], data: Mapping[str, Any], source: str, where: str) -> BaseModel:
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        raise validation_error(exc, source, prefix=where, model=model) from None


def generator_params(
    resolved: Resolved,
    *,
    params: Mapping[str, Any],
    preset: str | None,
    state_dict: StateDict | None,
    file_params: Mapping[str, Any] | None = None,
    source: str,
    where: str,
    checkpoint: str | Path | None = None,
) -> BaseModel:
    """Params of a generator: preset < read from the checkpoint < written by restorekit < the user's.

    ``checkpoint`` (the file ``state_dict`` came from) is named in errors about the tensors."""
    comp: GeneratorComponent[Any] = resolved.component  # type: ignore[assignment]
    merged: dict[str, Any] = {}
    if preset is not None:
        if preset not in comp.presets:
            from ..spec import did_you_mean

            raise UserError.at(
                source, f"{where.rsplit('.', 1)[0]}.preset", f"unknown preset {preset!r} for {comp.name!r}"
                f"{did_you_mean(preset, comp.presets)} (available: {', '.join(sorted(comp.presets)) or 'none'})"
            )
        merged.update(comp.presets[preset])
    if state_dict is not None and comp.params_from_state_dict is not None:
        try:
            inferred = comp.params_from_state_dict(state_dict)
        except Exception as exc:  # noqa: BLE001 - a mistake in the file, or a plugin's bug named with the plugin
            err = exc if isinstance(exc, UserError) else plugin_bug(resolved, "params_from_state_dict", exc)
            raise UserError.at(source, None, UserError.at(checkpoint, None, err)) from None
        known = comp.params.model_fields
        merged.update({k: v for k, v in inferred.items() if k in known})
    merged.update(file_params or {})
    merged.update(params)
    return validate_params(comp.params, merged, source, where)


def load_weights(
    module: nn.Module, comp: GeneratorComponent[Any], params: BaseModel, sd: StateDict, *, strict: bool, source: str
) -> None:
    """Convert ``sd`` to the module's key names (the component's job) and load it; a tensor of the wrong
    shape, or (``strict``) a missing or unexpected tensor, is a one-line :class:`UserError`."""
    try:
        converted = comp.convert_state_dict(sd, params) if comp.convert_state_dict is not None else dict(sd)
    except UserError as exc:
        raise UserError.at(source, None, exc) from None
    except Exception as exc:  # noqa: BLE001 - a plugin's bug, named with the component and the file
        raise UserError.at(source, None, f"generator {comp.name!r}: convert_state_dict() failed "
                                         f"({one_line(exc, named=True)})") from None
    own = module.state_dict()
    for key, value in converted.items():
        if key in own and own[key].shape != value.shape:
            raise UserError.at(
                source, key, f"has shape {tuple(value.shape)} in the file, {tuple(own[key].shape)} in the network"
            )
    result = module.load_state_dict(converted, strict=False)
    if strict and (result.missing_keys or result.unexpected_keys):
        parts = []
        if result.missing_keys:
            parts.append(f"{len(result.missing_keys)} missing (e.g. {result.missing_keys[0]})")
        if result.unexpected_keys:
            parts.append(f"{len(result.unexpected_keys)} unexpected (e.g. {result.unexpected_keys[0]})")
        raise UserError.at(source, None, f"checkpoint does not fit {comp.name!r}: " + ", ".join(parts))


def plugin_bug(resolved: Resolved, what: str, exc: BaseException) -> UserError:
    """A plugin's hook that raised something other than a :class:`UserError`: one line naming the plugin."""
    return UserError(f"plugin {resolved.plugin!r}: {resolved.kind} {resolved.component.name!r} {what}() failed "
                     f"({one_line(exc, named=True)})")


def find_component(registry: PluginRegistry, kind: Any, name: str, source: str, field: str | None) -> Resolved:
    """``registry.get(kind, name)``; a mistake is located at ``source`` and ``field`` (one in a registry file
    names that file, :class:`~restorekit.registry.RegistryError`)."""
    try:
        return registry.get(kind, name)
    except RegistryError:
        raise
    except UserError as exc:
        raise UserError.at(source, field, exc) from None


def build_network(plan: "NetworkPlan", device: torch.device | None = None) -> nn.Module:
    """Build a network from its plan and load its weights (each file read once)."""
    from .weights import build_generator

    return build_generator(plan.generator, strict=plan.spec.strict, submodules=plan.submodules,
                           where=f"networks.{plan.name}", device=device)


def detect_generator(registry: PluginRegistry, state_dict: Any, source: str) -> Resolved:
    """The one installed generator whose ``detect`` accepts ``state_dict``."""
    tried, hits = [], []
    for r in registry.generators():
        detect = getattr(r.component, "detect", None)
        if detect is None:
            continue
        tried.append(r.component.name)
        try:
            accepted = bool(detect(state_dict))
        except Exception as exc:  # noqa: BLE001 - a plugin's faulty detect() must not break loading for the others
            registry.plugin_failed(r, "detect", exc, source)
            continue
        if accepted:
            hits.append(r)
    if not hits:
        raise UserError.at(source, None, f"no installed generator recognises this checkpoint "
                                         f"(tried: {', '.join(sorted(tried)) or 'none'}); pass component=...")
    if len(hits) > 1:
        names = ", ".join(sorted(h.component.name for h in hits))
        raise UserError.at(source, None, f"several generators recognise this checkpoint ({names}); pass component=...")
    return hits[0]

