"""The ``[steps.*]`` (injectors, losses, optimizer) and ``[train]`` tables."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from .base import SpecModel, check_names


# steps: injectors and losses over a state dict




class Schedule(SpecModel):
    """When an injector or loss runs: every N steps, and only within [after, before)."""

    every: int = Field(1, ge=1, description="Run every N optimizer steps.")
    after: int = Field(0, ge=0, description="Run from this step on.")
    before: int | None = Field(None, ge=1, description="Stop running at this step.")

    def runs_at(self, step: int) -> bool:
        """Whether this schedule lets its owner run at (0-based) ``step``."""
        if step < self.after or (self.before is not None and step >= self.before):
            return False
        return (step - self.after) % self.every == 0


class InjectorSpec(Schedule):
    component: str = Field(description="Injector component name, e.g. 'generator'.")
    params: dict[str, Any] = Field(default_factory=dict, description="The injector's params.")


class LossSpec(Schedule):
    component: str = Field(description="Loss component name, e.g. 'pixel' or 'direct'.")
    weight: float = Field(1.0, description="Multiplies the loss.")
    params: dict[str, Any] = Field(default_factory=dict, description="The loss's params.")


class OptimizerSpec(SpecModel):
    kind: Literal["adam", "adamw"] = Field("adam", description="Adam or AdamW.")
    lr: float = Field(1e-4, gt=0, description="Learning rate.")
    betas: tuple[float, float] = Field((0.9, 0.99), description="Adam betas.")
    weight_decay: float = Field(0.0, ge=0, description="Weight decay.")


class StepSpec(Schedule):
    """One optimizer step: the injectors run in order, the losses are summed and back-propagated.

    ``every``/``after``/``before`` schedule the whole step; ``only`` restricts which parameters it updates, so the
    three SRFlow stages can be written as three steps (RRDB on L1, flow with the RRDB frozen, everything).
    """

    networks: list[str] = Field(min_length=1, description="Networks this step optimizes.")
    only: list[str] | None = Field(
        None,
        description="Update only parameters whose names start with one of these prefixes "
        "(e.g. ['RRDB.'] or ['flowUpsamplerNet.']); default: all trainable parameters.",
    )
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec, description="Optimizer per network.")
    injectors: dict[str, InjectorSpec] = Field(default_factory=dict, description="In order of the file.")
    losses: dict[str, LossSpec] = Field(min_length=1, description="Summed into the step's loss.")

    @field_validator("injectors", "losses")
    @classmethod
    def _names(cls, v: dict[str, Any], info: Any) -> dict[str, Any]:
        return check_names(v, info.field_name[:-1])



# train




class ScheduleSpec(SpecModel):
    kind: Literal["constant", "multistep", "cosine"] = Field("constant", description="LR schedule.")
    milestones: list[float] = Field(
        default_factory=list,
        description="multistep: absolute steps (>= 1) or fractions of train.steps (< 1).",
    )
    gamma: float = Field(0.5, gt=0, description="multistep: LR factor at each milestone.")
    warmup: int = Field(0, ge=0, description="Linear warmup steps.")
    min_lr: float = Field(0.0, ge=0, description="cosine: final LR.")

    @field_validator("milestones")
    @classmethod
    def _milestones(cls, v: list[float]) -> list[float]:
        bad = [m for m in v if not math.isfinite(m) or m < 0]
        if bad:
            raise ValueError(f"{bad[0]} is negative or not finite")
        return v


class TrainSpec(SpecModel):
    steps: int = Field(ge=1, description="Total optimizer steps.")
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec, description="LR schedule.")
    accumulate: int = Field(1, ge=1, description="Batches per optimizer step (gradient accumulation).")
    clip_grad: float | None = Field(None, gt=0, description="Clip the gradient norm to this value.")
    gradient_checkpointing: bool = Field(False, description="Trade compute for memory in the networks.")
    ema: float | None = Field(None, gt=0, lt=1, description="EMA decay of weights (e.g. 0.999).")
    val_every: int = Field(0, ge=0, description="Validate every N steps (0 = only at the end).")
    val_temperature: float = Field(
        0.0, ge=0, allow_inf_nan=False,
        description="Flows: the temperature validators judge the outputs at (sample i drawn with run.seed + i).",
    )
    val_samples: int = Field(1, ge=1, le=1000, description="Flows: outputs per validation image (diversity needs several).")
    log_every: int = Field(10, ge=1, description="Log scalars every N steps.")
    image_every: int = Field(0, ge=0, description="Write image grids every N steps (0 = never).")
    image_temperatures: list[float] = Field(
        default_factory=lambda: [0.0, 0.8], description="Temperatures shown in image grids (flows)."
    )
    checkpoint_every: int = Field(0, ge=0, description="Save every N steps (0 = only at the end).")
    keep_last: int = Field(2, ge=1, description="Checkpoints kept, besides the best.")
    best_metric: str | None = Field(None, description="Validation metric that picks the best checkpoint.")
    best_mode: Literal["min", "max"] = Field("min", description="Lower or higher is better.")
    max_nonfinite: int = Field(10, ge=1, description="Stop after this many non-finite losses in a row.")
    tensorboard: bool = Field(True, description="Write TensorBoard event files.")
    resume: Literal["auto", "never"] | Path = Field(
        "never", description="'auto': continue from the newest checkpoint; or a checkpoint folder."
    )
    save_generator: list[str] = Field(
        default_factory=list,
        description="Networks written as standalone generator files at the end (loadable by restorekit.load).",
    )

    @field_validator("save_generator")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        return check_names(v, "network")
