"""The plan's records: networks (their resolved generator and checkpoint sub-modules), steps, components."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from pydantic import BaseModel

from ..catalogue import ModelEntry
from ..components import GeneratorComponent
from ..registry import PluginRegistry, Resolved
from .weights import ResolvedGenerator
from ..spec import InjectorSpec, LossSpec, NetworkSpec, PipelineSpec, StepSpec, ValidatorSpec


@dataclass(frozen=True)
class NetworkPlan:
    """A network of the spec: ``generator`` says which component, params and weights (headers read, tensors
    not yet); ``submodules``: the checkpoints loaded into its sub-modules (``networks.<n>.init_submodules``)."""

    name: str
    spec: NetworkSpec
    generator: ResolvedGenerator
    submodules: tuple[tuple[str, ResolvedGenerator], ...] = ()

    @property
    def resolved(self) -> Resolved:
        return self.generator.resolved

    @property
    def params(self) -> BaseModel:
        return self.generator.params

    @property
    def model(self) -> ModelEntry | None:
        """The catalogue entry of ``networks.<n>.model`` (its file is fetched when the network is built)."""
        return self.generator.entry

    @property
    def component(self) -> GeneratorComponent[Any]:
        return self.generator.component


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

    @property
    def train_validators(self) -> list[ComponentPlan]:
        """The validators training validation runs (all but those only the evaluation after training runs)."""
        names = set(self.spec.train_validators)
        return [v for v in self.validators if v.name in names]

    @property
    def eval_validators(self) -> list[ComponentPlan]:
        """The validators an evaluation runs (``[eval] validators``, or all)."""
        names = set(self.spec.eval_validators)
        return [v for v in self.validators if v.name in names]
