"""The checks of a whole component, per kind: generators (every generator check, flow checks, training), losses,
validators and injectors, and :func:`check_component` choosing by kind."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from ..components import (
    KINDS,
    FlowModel,
    InjectorComponent,
    Kind,
    LossComponent,
    Sample,
    ValidationContext,
    ValidationResult,
    ValidatorComponent,
)
from ..registry import PluginRegistry
from .data import make_samples, tiny_state
from .exports import check_export
from .flows import check_flow
from .generators import build_generator, check_forward, check_size_multiple, check_state_dict_roundtrip, jitter
from .kit import check_params, fail, resolve_component, work_folder
from .training import check_training


def check_generator(
    registry: PluginRegistry,
    name: str,
    params: Mapping[str, Any] | None = None,
    *,
    tmp_dir: str | Path | None = None,
    train: bool = True,
    flow_atol: float = 1e-3,
) -> nn.Module:
    """All generator checks: builds, forward, ``size_multiple``, save/load round trip, flow round trip (flows),
    export equal to eager (components that claim ``exportable=True``: :func:`check_export`) and (``train``) a
    two-step training. Returns the built model."""
    comp = resolve_component(registry, "generator", name)
    who = f"generator {name!r}"
    model = build_generator(comp, params)
    if comp.flow is not None and comp.flow != isinstance(model, FlowModel):
        raise fail(who, f"declares flow={comp.flow}, but build returned "
                        f"{'no' if comp.flow else 'a'} FlowModel (encode, decode, latent_shapes)")
    check_forward(model, name=who)
    check_size_multiple(model, name=who)
    if isinstance(model, FlowModel):
        check_flow(model, atol=flow_atol, name=who)
    with work_folder(tmp_dir) as root:
        if comp.exportable:
            check_export(model, name=who, tmp_dir=root / "export")
        if model.state_dict():  # a learning-free generator has nothing to save
            check_state_dict_roundtrip(registry, name, copy.deepcopy(model), root)
        if train and any(p.requires_grad for p in model.parameters()):
            check_training(registry, generator=(name, dict(params or {})), tmp_dir=root / "train")
    return model



def check_loss(
    registry: PluginRegistry,
    name: str,
    params: Mapping[str, Any] | None = None,
    *,
    state: Mapping[str, Any] | None = None,
    tmp_dir: str | Path | None = None,
    train: bool = True,
    generator: tuple[str, Mapping[str, Any]] = ("kit_upsampler", {}),
    injectors: Mapping[str, tuple[str, Mapping[str, Any]]] | None = None,
) -> Tensor:
    """``build(params)`` gives a callable (function or ``nn.Module``); ``loss(state)`` on :func:`tiny_state` (or
    ``state``) is a finite 0-d tensor whose gradient reaches every tensor of the state that requires grad and is
    finite; then (``train``) it drives a few training steps. Returns the loss value."""
    comp: LossComponent[Any] = resolve_component(registry, "loss", name)
    who = f"loss {name!r}"
    loss = comp.build(check_params(comp, params))
    if not callable(loss):
        raise fail(who, f"build(params) must return a callable, got {type(loss).__name__}")
    state = dict(state) if state is not None else tiny_state()
    value = loss(state)
    if not isinstance(value, Tensor) or value.dim() != 0:
        raise fail(who, f"loss(state) must return a 0-d tensor, got {getattr(value, 'shape', type(value).__name__)}")
    if not torch.isfinite(value):
        raise fail(who, f"loss(state) is not finite: {value.item()}")
    leaves = [v for v in state.values() if isinstance(v, Tensor) and v.requires_grad]
    if value.requires_grad:
        grads = torch.autograd.grad(value, leaves, allow_unused=True)
        if all(g is None for g in grads):
            raise fail(who, "the loss has no gradient with respect to the state")
        if any(g is not None and not torch.isfinite(g).all() for g in grads):
            raise fail(who, "the loss's gradient is not finite")
    elif leaves:
        raise fail(who, "loss(state) does not depend on any state entry that requires grad")
    if train:
        check_training(registry, generator=generator, injectors=injectors,
                       losses={"kit": (name, dict(params or {}))}, tmp_dir=tmp_dir)
    return value.detach()


def check_validator(
    registry: PluginRegistry,
    name: str,
    params: Mapping[str, Any] | None = None,
    *,
    generator: tuple[str, Mapping[str, Any]] = ("kit_upsampler", {}),
    samples: Sequence[Sample] | None = None,
    tmp_dir: str | Path | None = None,
    train: bool = True,
) -> ValidationResult:
    """``validator(model, samples, ctx)`` with a model built from ``generator`` returns a
    :class:`~restorekit.ValidationResult`: finite float metrics, and one ``per_image`` row per sample holding the
    sample's ``name`` and numbers; then (``train``) it runs as the validator of a tiny training. Returns the result."""
    comp: ValidatorComponent[Any] = resolve_component(registry, "validator", name)
    who = f"validator {name!r}"
    validator = comp.build(check_params(comp, params))
    if not callable(validator):
        raise fail(who, f"build(params) must return a callable, got {type(validator).__name__}")
    gname, gparams = generator
    model = build_generator(resolve_component(registry, "generator", gname), gparams).eval()
    jitter(model)
    unit = model.scale * model.size_multiple  # type: ignore[operator]
    samples = list(samples) if samples is not None else make_samples(
        2, scale=model.scale, size=unit * max(1, math.ceil(32 / unit)))  # type: ignore[arg-type]
    with work_folder(tmp_dir) as root:
        ctx = ValidationContext(device=torch.device("cpu"), scale=model.scale, step=0,  # type: ignore[arg-type]
                                output_dir=root / "kit_validation")
        with torch.no_grad():
            result = validator(model, samples, ctx)
        if not isinstance(result, ValidationResult):
            raise fail(who, f"must return restorekit.ValidationResult, got {type(result).__name__}")
        if not result.metrics:
            raise fail(who, "returned no metrics")
        for key, value in result.metrics.items():
            if not isinstance(key, str) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise fail(who, f"metric {key!r} = {value!r} is not a finite number")
        if len(result.per_image) != len(samples):
            raise fail(who, f"{len(result.per_image)} per_image rows for {len(samples)} samples")
        for row, sample in zip(result.per_image, samples):
            if row.get("name") != sample.name:
                raise fail(who, f"per_image row {row!r} does not carry the sample's name {sample.name!r}")
            if not any(isinstance(v, (int, float)) and not isinstance(v, bool) for k, v in row.items() if k != "name"):
                raise fail(who, f"per_image row {row!r} holds no number")
        if train:
            check_training(registry, generator=generator, validators={"kit": (name, dict(params or {}))},
                           tmp_dir=root / "train")
    return result


def check_injector(
    registry: PluginRegistry,
    name: str,
    params: Mapping[str, Any] | None = None,
    *,
    networks: Mapping[str, nn.Module] | None = None,
    state: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``build(params, networks)`` gives a callable; ``injector(state, step)`` returns a dict of new state entries
    (tensors or lists of tensors, finite). ``networks`` defaults to ``{"generator": <kit_upsampler>}``."""
    comp: InjectorComponent[Any] = resolve_component(registry, "injector", name)
    who = f"injector {name!r}"
    if networks is None:
        networks = {"generator": build_generator(resolve_component(registry, "generator", "kit_upsampler"))}
    injector = comp.build(check_params(comp, params), networks)
    out = injector(dict(state) if state is not None else tiny_state(), 0)
    if not isinstance(out, dict) or not out:
        raise fail(who, f"injector(state, step) must return a non-empty dict, got {out!r}")
    for key, value in out.items():
        tensors = value if isinstance(value, (list, tuple)) else [value]
        for t in tensors:
            if isinstance(t, Tensor) and t.is_floating_point() and not torch.isfinite(t).all():
                raise fail(who, f"state entry {key!r} is not finite")
    return out


def check_component(
    registry: PluginRegistry,
    kind: Kind,
    name: str,
    params: Mapping[str, Any] | None = None,
    *,
    tmp_dir: str | Path | None = None,
    **options: Any,
) -> Any:
    """Run the checks of ``kind`` on the component ``name`` (:func:`check_generator`, :func:`check_loss`,
    :func:`check_validator`, :func:`check_injector`); ``options`` go to that function."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}")
    if kind == "generator":
        return check_generator(registry, name, params, tmp_dir=tmp_dir, **options)
    if kind == "loss":
        return check_loss(registry, name, params, tmp_dir=tmp_dir, **options)
    if kind == "validator":
        return check_validator(registry, name, params, tmp_dir=tmp_dir, **options)
    return check_injector(registry, name, params, **options)
