"""When things happen: the learning-rate schedule (a pure function of the step) and ``every``/``after``/``before``."""

from __future__ import annotations

import math
from typing import Iterable

import torch

from ..spec import Schedule, ScheduleSpec


def resolve_milestones(spec: ScheduleSpec, total: int) -> list[int]:
    """Milestones in absolute steps: values >= 1 are steps, values < 1 fractions of ``total``."""
    out = []
    for m in spec.milestones:  # >= 0: checked by the spec
        out.append(int(m) if m >= 1 else int(round(m * total)))
    return sorted(out)


def lr_factor(step: int, spec: ScheduleSpec, total: int, base_lr: float) -> float:
    """The learning-rate multiplier of the update made at (0-based) ``step`` of ``total``."""
    if spec.warmup and step < spec.warmup:
        warm = (step + 1) / spec.warmup
    else:
        warm = 1.0
    if spec.kind == "constant":
        factor = 1.0
    elif spec.kind == "multistep":
        factor = spec.gamma ** sum(1 for m in resolve_milestones(spec, total) if step >= m)
    else:
        span = max(1, total - spec.warmup)
        t = min(1.0, max(0.0, (step - spec.warmup) / span))
        floor = min(1.0, spec.min_lr / base_lr) if base_lr > 0 else 0.0
        factor = floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))
    return warm * factor


def apply_lr(optimizers: Iterable[torch.optim.Optimizer], step: int, spec: ScheduleSpec, total: int) -> None:
    """Set every parameter group's ``lr`` to its ``initial_lr`` times :func:`lr_factor` at ``step``."""
    for opt in optimizers:
        for g in opt.param_groups:
            g["lr"] = g["initial_lr"] * lr_factor(step, spec, total, g["initial_lr"])


def active(schedule: Schedule, step: int) -> bool:
    """Whether an injector / loss with this ``every``/``after``/``before`` runs at (0-based) ``step``."""
    return schedule.runs_at(step)


__all__ = ["active", "apply_lr", "lr_factor", "resolve_milestones"]
