"""Spec + registry → Plan: every component found, every params model validated, the device chosen.

Nothing heavy is built here; :func:`build_network` makes a module from a :class:`NetworkPlan`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from pydantic import BaseModel, ValidationError
from torch import nn

from .checkpoint import read_state_dict, restorekit_metadata
from .components import GeneratorComponent, StateDict
from .errors import UserError
from .registry import PluginRegistry, Resolved
from .spec import (
    InjectorSpec,
    LossSpec,
    NetworkSpec,
    PipelineSpec,
    StepSpec,
    ValidatorSpec,
    format_validation_error,
)


@dataclass(frozen=True)
class SubmodulePlan:
    """A checkpoint loaded into the sub-module ``name`` of a network (``networks.<n>.init_submodules``)."""

    name: str
    path: Path
    resolved: Resolved
    params: BaseModel


@dataclass(frozen=True)
class NetworkPlan:
    name: str
    spec: NetworkSpec
    resolved: Resolved
    params: BaseModel
    submodules: tuple[SubmodulePlan, ...] = ()

    @property
    def component(self) -> GeneratorComponent[Any]:
        return self.resolved.component  # type: ignore[return-value]


@dataclass(frozen=True)
class ComponentPlan:
    """An injector, loss or validator: its spec entry, the component and its validated params."""

    name: str
    spec: InjectorSpec | LossSpec | ValidatorSpec
    resolved: Resolved
    params: BaseModel

    def build(self, *args: Any) -> Any:
        return self.resolved.component.build(self.params, *args)


@dataclass(frozen=True)
class StepPlan:
    name: str
    spec: StepSpec
    injectors: list[ComponentPlan]
    losses: list[ComponentPlan]


@dataclass(frozen=True)
class Plan:
    spec: PipelineSpec
    source: str
    registry: PluginRegistry
    device: torch.device
    networks: dict[str, NetworkPlan]
    steps: list[StepPlan] = field(default_factory=list)
    validators: list[ComponentPlan] = field(default_factory=list)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"run.device: {name!r} asked for, but CUDA is not available (use 'auto' or 'cpu')")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(f"run.device: {name!r} asked for, but only {torch.cuda.device_count()} CUDA device(s)")
    return dev


def validate_params(model: type[BaseModel], data: Mapping[str, Any], source: str, where: str) -> BaseModel:
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        raise UserError(format_validation_error(exc, source, prefix=where, model=model)) from None


def generator_params(
    resolved: Resolved,
    *,
    params: Mapping[str, Any],
    preset: str | None,
    state_dict: StateDict | None,
    file_params: Mapping[str, Any] | None = None,
    source: str,
    where: str,
) -> BaseModel:
    """Params of a generator: preset < read from the checkpoint < written by restorekit < the user's."""
    comp: GeneratorComponent[Any] = resolved.component  # type: ignore[assignment]
    merged: dict[str, Any] = {}
    if preset is not None:
        if preset not in comp.presets:
            from .spec import did_you_mean

            raise UserError(
                f"{source}: {where.rsplit('.', 1)[0]}.preset: unknown preset {preset!r} for {comp.name!r}"
                f"{did_you_mean(preset, comp.presets)} (available: {', '.join(sorted(comp.presets)) or 'none'})"
            )
        merged.update(comp.presets[preset])
    if state_dict is not None and comp.params_from_state_dict is not None:
        inferred = comp.params_from_state_dict(state_dict)
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
        raise UserError(f"{source}: {exc}") from None
    own = module.state_dict()
    for key, value in converted.items():
        if key in own and own[key].shape != value.shape:
            raise UserError(
                f"{source}: {key} has shape {tuple(value.shape)} in the file, {tuple(own[key].shape)} in the network"
            )
    result = module.load_state_dict(converted, strict=False)
    if strict and (result.missing_keys or result.unexpected_keys):
        parts = []
        if result.missing_keys:
            parts.append(f"{len(result.missing_keys)} missing (e.g. {result.missing_keys[0]})")
        if result.unexpected_keys:
            parts.append(f"{len(result.unexpected_keys)} unexpected (e.g. {result.unexpected_keys[0]})")
        raise UserError(f"{source}: checkpoint does not fit {comp.name!r}: " + ", ".join(parts))


def build_network(plan: NetworkPlan, device: torch.device | None = None) -> nn.Module:
    """Build a network from its plan and load its checkpoint, if any."""
    comp = plan.component
    module = comp.build(plan.params)
    ckpt = plan.spec.checkpoint
    if ckpt is not None:
        load_weights(module, comp, plan.params, read_state_dict(ckpt), strict=plan.spec.strict, source=str(ckpt))
    for part in plan.submodules:
        try:
            sub = module.get_submodule(part.name)
        except AttributeError:
            raise UserError(f"networks.{plan.name}.init_submodules: {comp.name!r} has no sub-module {part.name!r}") from None
        load_weights(sub, part.resolved.component, part.params, read_state_dict(part.path), strict=True,  # type: ignore[arg-type]
                     source=str(part.path))
    if device is not None:
        module = module.to(device)
    return module


def detect_generator(registry: PluginRegistry, state_dict: Any, source: str) -> Resolved:
    """The one installed generator whose ``detect`` accepts ``state_dict``."""
    tried, hits = [], []
    for r in registry.generators():
        detect = getattr(r.component, "detect", None)
        if detect is None:
            continue
        tried.append(r.component.name)
        if detect(state_dict):
            hits.append(r)
    if not hits:
        raise UserError(
            f"{source}: no installed generator recognises this checkpoint (tried: {', '.join(sorted(tried)) or 'none'}); "
            "pass component=..."
        )
    if len(hits) > 1:
        names = ", ".join(sorted(h.component.name for h in hits))
        raise UserError(f"{source}: several generators recognise this checkpoint ({names}); pass component=...")
    return hits[0]


def make_plan(spec: PipelineSpec, registry: PluginRegistry, *, source: str = "pipeline") -> Plan:
    """Resolve every component of ``spec`` in ``registry`` and validate its params."""

    def get(kind: Any, name: str, where: str) -> Resolved:
        try:
            return registry.get(kind, name)
        except UserError as exc:
            raise UserError(f"{source}: {where}: {exc}") from None

    networks: dict[str, NetworkPlan] = {}
    for name, net in spec.networks.items():
        where = f"networks.{name}"
        resolved = get("generator", net.component, f"{where}.component")
        sd = None
        file_params: dict[str, Any] = {}
        if net.checkpoint is not None:
            if not Path(net.checkpoint).is_file():
                raise UserError(f"{source}: {where}.checkpoint: {net.checkpoint}: file not found")
            comp_name, file_params = restorekit_metadata(net.checkpoint)
            if comp_name is not None and comp_name != net.component:
                raise UserError(
                    f"{source}: {where}.checkpoint: {net.checkpoint} holds a {comp_name!r} network, "
                    f"not {net.component!r}"
                )
            if resolved.component.params_from_state_dict is not None:  # type: ignore[attr-defined]
                sd = read_state_dict(net.checkpoint)
        params = generator_params(
            resolved, params=net.params, preset=net.preset, state_dict=sd, file_params=file_params,
            source=source, where=f"{where}.params",
        )
        parts = []
        for sub, path in net.init_submodules.items():
            where_sub = f"{where}.init_submodules.{sub}"
            if not Path(path).is_file():
                raise UserError(f"{source}: {where_sub}: {path}: file not found")
            sub_sd = read_state_dict(path)
            sub_comp, sub_params = restorekit_metadata(path)
            sub_resolved = get("generator", sub_comp, where_sub) if sub_comp else detect_generator(registry, sub_sd, str(path))
            parts.append(SubmodulePlan(sub, Path(path), sub_resolved, generator_params(
                sub_resolved, params={}, preset=None, state_dict=sub_sd, file_params=sub_params,
                source=source, where=where_sub)))
        networks[name] = NetworkPlan(name, net, resolved, params, tuple(parts))

    steps: list[StepPlan] = []
    for sname, step in spec.steps.items():
        injectors = []
        for iname, inj in step.injectors.items():
            where = f"steps.{sname}.injectors.{iname}"
            r = get("injector", inj.component, f"{where}.component")
            injectors.append(ComponentPlan(iname, inj, r, validate_params(r.component.params, inj.params, source, f"{where}.params")))
        losses = []
        for lname, loss in step.losses.items():
            where = f"steps.{sname}.losses.{lname}"
            r = get("loss", loss.component, f"{where}.component")
            losses.append(ComponentPlan(lname, loss, r, validate_params(r.component.params, loss.params, source, f"{where}.params")))
        steps.append(StepPlan(sname, step, injectors, losses))

    validators = []
    for vname, val in spec.validators.items():
        where = f"validators.{vname}"
        r = get("validator", val.component, f"{where}.component")
        validators.append(ComponentPlan(vname, val, r, validate_params(r.component.params, val.params, source, f"{where}.params")))

    try:
        device = resolve_device(spec.run.device)
    except UserError as exc:
        raise UserError(f"{source}: {exc}") from None
    return Plan(spec, source, registry, device, networks, steps, validators)
