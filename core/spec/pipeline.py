"""The whole pipeline: :class:`PipelineSpec` and the checks across its tables."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from .base import SpecModel, check_names
from .evaluation import EvalSpec
from .inference import InferSpec
from .models import DataSpec, NetworkSpec, RunSpec, ValidatorSpec
from .training import StepSpec, TrainSpec


class PipelineSpec(SpecModel):
    run: RunSpec = Field(description="Mode, seed, device, precision, output folder.")
    networks: dict[str, NetworkSpec] = Field(min_length=1, description="Named networks.")
    data: DataSpec = Field(default_factory=DataSpec, description="Training and validation data.")
    steps: dict[str, StepSpec] = Field(default_factory=dict, description="Optimizer steps (train).")
    train: TrainSpec | None = Field(None, description="Training loop settings.")
    validators: dict[str, ValidatorSpec] = Field(default_factory=dict, description="Named validators.")
    infer: InferSpec | None = Field(None, description="Inference settings.")
    eval: EvalSpec | None = Field(
        None, description="Evaluation settings (run.mode = 'eval', or after training): sweep, generators, validators."
    )

    @field_validator("networks", "steps", "validators")
    @classmethod
    def _names(cls, v: dict[str, Any], info: Any) -> dict[str, Any]:
        return check_names(v, info.field_name[:-1])

    @model_validator(mode="after")
    def _mode_sections(self) -> "PipelineSpec":
        mode = self.run.mode
        if mode == "train":
            if self.train is None:
                raise ValueError("run.mode = 'train' needs a [train] table")
            if not self.steps:
                raise ValueError("run.mode = 'train' needs at least one [steps.<name>] table")
            if self.data.train is None:
                raise ValueError("run.mode = 'train' needs a [data.train] table")
        if mode == "infer" and self.infer is None:
            raise ValueError("run.mode = 'infer' needs an [infer] table")
        if mode == "eval" and (self.data.val is None or not self.validators):
            raise ValueError("run.mode = 'eval' needs [data.val] and at least one [validators.<name>]")
        names = set(self.networks)
        for sname, step in self.steps.items():
            for net in step.networks:
                if net not in names:
                    raise ValueError(f"steps.{sname}.networks: unknown network {net!r}{_avail(names)}")
        for vname, val in self.validators.items():
            if val.network not in names:
                raise ValueError(f"validators.{vname}.network: unknown network {val.network!r}{_avail(names)}")
        if self.eval is not None:
            for vname in self.eval.validators or []:
                if vname not in self.validators:
                    raise ValueError(f"eval.validators: unknown validator {vname!r}{_avail(set(self.validators))}")
            if mode == "train" and (self.data.val is None or not self.validators):
                raise ValueError("an [eval] table in run.mode = 'train' (an evaluation after training) needs "
                                 "[data.val] and at least one [validators.<name>]")
        if self.infer is not None and self.infer.network not in names:
            raise ValueError(f"infer.network: unknown network {self.infer.network!r}{_avail(names)}")
        if self.infer is not None and self.infer.mode == "latent_transfer" and self.infer.reference is None:
            raise ValueError("infer.reference: latent_transfer needs a reference image")
        has_val = self.data.val is not None and bool(self.train_validators)
        need = "[data.val] and at least one [validators.<name>]" + (
            " outside eval.validators" if self.validators and not self.train_validators else "")
        if self.train is not None:
            for net in self.train.save_generator:
                if net not in names:
                    raise ValueError(f"train.save_generator: unknown network {net!r}{_avail(names)}")
            if self.train.best_metric is not None and not has_val and mode == "train":
                raise ValueError(f"train.best_metric needs {need}")
        for name, net_spec in self.networks.items():
            if net_spec.unfreeze is not None and net_spec.unfreeze.metric is not None and not has_val and mode == "train":
                raise ValueError(f"networks.{name}.unfreeze.metric needs {need}")
        return self

    @property
    def eval_validators(self) -> list[str]:
        """The validators an evaluation runs: ``[eval] validators``, or all of them."""
        ev = self.eval.validators if self.eval is not None else None
        return list(ev) if ev is not None else list(self.validators)

    @property
    def train_validators(self) -> list[str]:
        """The validators training validation runs: all but those ``[eval] validators`` names (these run only in
        the evaluation after training)."""
        ev = set(self.eval.validators or []) if self.eval is not None else set()
        return [v for v in self.validators if v not in ev]


def _avail(names: set[str]) -> str:
    return f" (available: {', '.join(sorted(names))})" if names else " (none defined)"
