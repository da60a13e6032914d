"""The plan's records: networks (with their checkpoint sub-modules and catalogue entry), steps, components."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel

from ..catalogue import ModelEntry
from ..components import GeneratorComponent
from ..registry import PluginRegistry, Resolved
from ..spec import InjectorSpec, LossSpec, NetworkSpec, PipelineSpec, StepSpec, ValidatorSpec


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
