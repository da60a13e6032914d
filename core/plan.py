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

from .catalogue import ModelEntry, check_loaded, fetch, load_catalogue, lookup
from .checkpoint import META_FILE, STATE_FILE, read_state_dict, restorekit_metadata
from .components import FlowModel, GeneratorComponent, StateDict
from .errors import UserError
from .registry import PluginRegistry, RegistryError, Resolved
from .spec import (
    FLOW_MODES,
    InferSpec,
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
    model: ModelEntry | None = None
    """The catalogue entry of ``networks.<n>.model``: its file is fetched (downloaded once) when the network is built."""

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
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError(f"run.device: {name!r} is not a device (auto, cpu, cuda or cuda:N)") from None
    if dev.index is not None and dev.index < 0:
        raise UserError(f"run.device: {name!r}: device index out of range")
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
    checkpoint: str | Path | None = None,
) -> BaseModel:
    """Params of a generator: preset < read from the checkpoint < written by restorekit < the user's.

    ``checkpoint`` (the file ``state_dict`` came from) is named in errors about the tensors."""
    comp: GeneratorComponent[Any] = resolved.component  # type: ignore[assignment]
    merged: dict[str, Any] = {}
    if preset is not None:
        if preset not in comp.presets:
            from .spec import did_you_mean

            raise UserError.at(
                source, f"{where.rsplit('.', 1)[0]}.preset", f"unknown preset {preset!r} for {comp.name!r}"
                f"{did_you_mean(preset, comp.presets)} (available: {', '.join(sorted(comp.presets)) or 'none'})"
            )
        merged.update(comp.presets[preset])
    if state_dict is not None and comp.params_from_state_dict is not None:
        try:
            inferred = comp.params_from_state_dict(state_dict)
        except UserError as exc:
            raise UserError.at(source, None, f"{checkpoint}: {exc}" if checkpoint is not None else exc) from None
        except Exception as exc:  # noqa: BLE001 - a plugin's bug, named with the plugin and the file
            bug = _plugin_bug(resolved, "params_from_state_dict", exc)
            raise UserError.at(source, None, f"{checkpoint}: {bug}" if checkpoint is not None else bug) from None
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
                                         f"({type(exc).__name__}: {exc})") from None
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


def _plugin_bug(resolved: Resolved, what: str, exc: BaseException) -> str:
    return f"plugin {resolved.plugin!r}: {resolved.kind} {resolved.component.name!r} {what}() failed ({type(exc).__name__}: {exc})"


def build_network(plan: NetworkPlan, device: torch.device | None = None) -> nn.Module:
    """Build a network from its plan and load its checkpoint, if any."""
    comp = plan.component
    module = comp.build(plan.params)
    ckpt = plan.spec.checkpoint
    if ckpt is None and plan.model is not None:
        ckpt = fetch(plan.model)
    if ckpt is not None:
        load_weights(module, comp, plan.params, read_state_dict(ckpt), strict=plan.spec.strict, source=str(ckpt))
    if plan.model is not None and ckpt is not None:
        check_loaded(plan.model, comp.name, module, Path(ckpt))
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


STATE_INPUTS = ("hq", "lq")
"""The state keys every training step starts with."""


def _declared(plan: ComponentPlan, what: str) -> list[str] | None:
    fn = getattr(plan.resolved.component, what, None)
    if fn is None:
        return None
    try:
        return [str(k) for k in fn(plan.params)]
    except Exception as exc:  # noqa: BLE001 - a plugin's bug, named
        raise UserError(_plugin_bug(plan.resolved, what, exc)) from None


def check_state_flow(steps: list[StepPlan], source: str) -> None:
    """Every state key an injector or loss reads must be ``hq``, ``lq`` or written by an injector before it (in its
    step, or in an earlier step of the iteration: the state carries over). Components declare their keys
    (``reads``/``writes``); after an injector that does not declare what it writes, nothing more can be checked."""
    known: list[str] = list(STATE_INPUTS)
    for step in steps:
        for part, items in (("injectors", step.injectors), ("losses", step.losses)):
            for item in items:
                reads = _declared(item, "reads")
                for key in reads or []:
                    if key not in known:
                        kind = "injector" if part == "injectors" else "loss"
                        raise UserError.at(
                            source, f"steps.{step.name}.{part}.{item.name}",
                            f"{kind} {item.name!r} ({item.resolved.component.name}) reads state key {key!r}, which no "
                            f"injector before it writes (state keys at this point: {', '.join(known)})",
                        )
                if part == "injectors":
                    writes = _declared(item, "writes")
                    if writes is None:
                        return  # an injector that does not say what it writes: the rest cannot be checked
                    known += [k for k in writes if k not in known]


def make_plan(spec: PipelineSpec, registry: PluginRegistry, *, source: str = "pipeline") -> Plan:
    """Resolve every component of ``spec`` in ``registry`` and validate its params."""

    def get(kind: Any, name: str, where: str) -> Resolved:
        try:
            return registry.get(kind, name)
        except RegistryError:
            raise  # the mistake is in a registry file, which the message names
        except UserError as exc:
            raise UserError.at(source, where, exc) from None

    networks: dict[str, NetworkPlan] = {}
    catalogue: dict[str, ModelEntry] | None = None
    for name, net in spec.networks.items():
        where = f"networks.{name}"
        entry: ModelEntry | None = None
        component, preset, net_params, weights, weights_key = net.component, net.preset, net.params, net.checkpoint, "checkpoint"
        if net.model is not None:
            catalogue = catalogue if catalogue is not None else load_catalogue(registry=registry)
            entry = lookup(net.model, catalogue, where=f"{source}: {where}.model")
            if component is not None and component != entry.component:
                raise UserError.at(source, f"{where}.component",
                                   f"{component!r}, but model {entry.name!r} is a {entry.component!r} network")
            component = entry.component
            preset = preset if preset is not None else entry.preset
            net_params = {**entry.params, **net.params}
            weights_key = "model"
            if entry.preset is None:  # its params are in the file (bundled models): read them now
                weights = fetch(entry)
        assert component is not None  # NetworkSpec guarantees component or model
        resolved = get("generator", component, f"{where}.component")
        sd = None
        file_params: dict[str, Any] = {}
        if weights is not None:
            if not Path(weights).is_file():
                raise UserError.at(source, f"{where}.checkpoint", f"{weights}: file not found")
            comp_name, file_params = restorekit_metadata(weights)
            if comp_name is not None and comp_name != component:
                raise UserError.at(source, f"{where}.{weights_key}",
                                   f"{weights} holds a {comp_name!r} network, not {component!r}")
            if resolved.component.params_from_state_dict is not None:  # type: ignore[attr-defined]
                sd = read_state_dict(weights)
        params = generator_params(
            resolved, params=net_params, preset=preset, state_dict=sd, file_params=file_params,
            source=source, where=f"{where}.params", checkpoint=weights if sd is not None else None,
        )
        parts = []
        for sub, path in net.init_submodules.items():
            where_sub = f"{where}.init_submodules.{sub}"
            if not Path(path).is_file():
                raise UserError.at(source, where_sub, f"{path}: file not found")
            sub_sd = read_state_dict(path)
            sub_comp, sub_params = restorekit_metadata(path)
            sub_resolved = get("generator", sub_comp, where_sub) if sub_comp else detect_generator(registry, sub_sd, str(path))
            parts.append(SubmodulePlan(sub, Path(path), sub_resolved, generator_params(
                sub_resolved, params={}, preset=None, state_dict=sub_sd, file_params=sub_params,
                source=source, where=where_sub, checkpoint=path)))
        networks[name] = NetworkPlan(name, net, resolved, params, tuple(parts), entry)

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
    check_state_flow(steps, source)

    validators = []
    for vname, val in spec.validators.items():
        where = f"validators.{vname}"
        r = get("validator", val.component, f"{where}.component")
        validators.append(ComponentPlan(vname, val, r, validate_params(r.component.params, val.params, source, f"{where}.params")))

    try:
        device = resolve_device(spec.run.device)
    except UserError as exc:
        raise UserError.at(source, None, exc) from None
    check_run(spec, networks, device, source)
    return Plan(spec, source, registry, device, networks, steps, validators)


# ----------------------------------------------------------------------------------------------------
# checks that need more than the spec (files, the device, the network's shape): made here so --dry-run reports them


def check_infer_model(spec: InferSpec, model: Any, *, network: str, component: str, source: str) -> None:
    """``[infer]`` against its network: an integer ``scale``, a flow for the flow modes, tiles that exceed their
    overlap by the network's ``size_multiple``. Inference calls it with the built network; ``--dry-run`` with the
    network built on the meta device (no weights, no memory)."""
    scale = getattr(model, "scale", None)
    if not isinstance(scale, int) or scale < 1:
        raise UserError.at(source, f"networks.{network}", f"component {component!r} has no integer 'scale'")
    multiple = max(1, int(getattr(model, "size_multiple", 1) or 1))
    if spec.mode in FLOW_MODES and not isinstance(model, FlowModel):
        raise UserError.at(source, None, f"infer.mode = {spec.mode!r} needs a flow network (encode/decode), but "
                                         f"networks.{network} is component {component!r}, which is not one")
    tile = spec.tile
    if tile is not None and tile.size // multiple * multiple - tile.overlap < multiple:
        raise UserError.at(source, "infer.tile", f"size ({tile.size}) must exceed overlap ({tile.overlap}) by at "
                                                 f"least the size multiple of {component!r} ({multiple})")


def check_run(spec: PipelineSpec, networks: Mapping[str, NetworkPlan], device: torch.device, source: str) -> None:
    """Plan-time checks: fp16 training needs CUDA, a resume folder is whole, injectors name known networks, the
    files ``[infer]`` reads exist."""
    mode = spec.run.mode
    if mode == "train" and spec.run.precision == "fp16" and device.type != "cuda":
        raise UserError.at(source, "run.precision", f"fp16 needs a CUDA device (running on {device}); use bf16 or fp32")
    train = spec.train
    if mode == "train" and train is not None and isinstance(train.resume, Path) and not (
        (train.resume / STATE_FILE).is_file() and (train.resume / META_FILE).is_file()
    ):
        raise UserError.at(source, "train.resume", f"{train.resume}: not a complete checkpoint folder")
    for sname, step in spec.steps.items():
        for iname, inj in step.injectors.items():
            net = inj.params.get("network")
            if isinstance(net, str) and net not in spec.networks:
                raise UserError.at(source, f"steps.{sname}.injectors.{iname}.params.network",
                                   f"unknown network {net!r} (available: {', '.join(sorted(spec.networks))})")
    infer = spec.infer
    if infer is None or mode not in ("infer", "train"):
        return
    for field, used in (("reference", infer.mode in ("latent_transfer", "interpolate")), ("temperature_map", True)):
        path = getattr(infer, field)
        if used and path is not None and not Path(path).is_file():
            raise UserError.at(source, f"infer.{field}", f"{path}: file not found")

