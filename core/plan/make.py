""":func:`make_plan`: spec + registry → :class:`~restorekit.Plan`."""

from __future__ import annotations

from typing import Any

from ..catalogue import ModelEntry, load_catalogue
from ..errors import located
from ..registry import PluginRegistry
from ..spec import PipelineSpec
from .checks import check_run, check_state_flow, resolve_device
from .networks import find_component, validate_params
from .plans import ComponentPlan, NetworkPlan, Plan, StepPlan
from .weights import resolve_generator


def make_plan(spec: PipelineSpec, registry: PluginRegistry, *, source: str = "pipeline") -> Plan:
    """Resolve every component of ``spec`` in ``registry`` and validate its params."""

    def get(kind: Any, name: str, where: str) -> Any:
        return find_component(registry, kind, name, source, where)

    networks: dict[str, NetworkPlan] = {}
    catalogue: dict[str, ModelEntry] | None = None
    for name, net in spec.networks.items():
        where = f"networks.{name}"
        if net.model is not None and catalogue is None:
            catalogue = load_catalogue(registry=registry)
        gen = resolve_generator(registry, model=net.model, checkpoint=net.checkpoint, component=net.component,
                                preset=net.preset, params=net.params, catalogue=catalogue, source=source, where=where)
        parts = tuple(
            (sub, resolve_generator(registry, checkpoint=path, source=source, where=f"{where}.init_submodules.{sub}",
                                    file_field=None))
            for sub, path in net.init_submodules.items()
        )
        networks[name] = NetworkPlan(name, net, gen, parts)

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

    with located(source, None):
        device = resolve_device(spec.run.device)
    check_run(spec, networks, device, source)
    return Plan(spec, source, registry, device, networks, steps, validators)
