""":func:`make_plan`: spec + registry → :class:`~restorekit.Plan`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..catalogue import ModelEntry, fetch, load_catalogue, lookup
from ..checkpoint import read_state_dict, restorekit_metadata
from ..errors import UserError
from ..errors import where as locate
from ..registry import PluginRegistry, RegistryError, Resolved
from ..spec import PipelineSpec
from .checks import check_run, check_state_flow, resolve_device
from .networks import detect_generator, generator_params, validate_params
from .plans import ComponentPlan, NetworkPlan, Plan, StepPlan, SubmodulePlan


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
            entry = lookup(net.model, catalogue, where=locate(source, f"{where}.model", ""))
            if component is not None and component != entry.component:
                raise UserError.at(source, f"{where}.component",
                                   f"{component!r}, but model {entry.name!r} is a {entry.component!r} network")
            component = entry.component
            preset = preset if preset is not None else entry.preset
            net_params = {**entry.params, **net.params}
            weights_key = "model"
        assert component is not None  # NetworkSpec guarantees component or model
        resolved = get("generator", component, f"{where}.model" if entry is not None else f"{where}.component")
        if entry is not None and entry.preset is None:  # params in the file (bundled models): read them now
            weights = fetch(entry)  # after the component is known to be installed: nothing downloaded in vain
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
