"""What a training run carries from step to step and across a resume: counters and best metric
(:class:`TrainingState`), the random generators' states, and the EMA of the weights."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def _no_best() -> dict[str, Any]:
    return {"value": None, "step": None}


@dataclass
class TrainingState:
    """The trainer's own counters: ``step`` (iterations done), ``nonfinite`` (skipped updates in a row),
    ``best`` (``{"value", "step"}`` of ``train.best_metric``), ``last_val`` (the last validation metrics, with
    ``_step``), ``synced`` (ranks share rank 0's weights). Saved in ``state.pt`` next to the optimizer, scaler,
    freeze, data and RNG states."""

    step: int = 0
    nonfinite: int = 0
    best: dict[str, Any] = field(default_factory=_no_best)
    last_val: dict[str, float] = field(default_factory=dict)
    synced: bool = False

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "nonfinite": self.nonfinite, "best": dict(self.best),
                "last_val": dict(self.last_val), "synced": self.synced}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.step = int(state["step"])
        self.nonfinite = int(state["nonfinite"])
        self.best = dict(state["best"])
        self.last_val = dict(state["last_val"])
        self.synced = bool(state.get("synced", False))


def rng_state() -> dict[str, Any]:
    """torch (CPU and CUDA), numpy and python RNG states, in a form ``torch.load(weights_only=True)`` reads."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)), *map(float, np_state[2:])],
        "python": random.getstate(),
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))


class EMA(AveragedModel):
    """Exponential moving average of a network's weights: torch's :class:`~torch.optim.swa_utils.AveragedModel`
    with :func:`~torch.optim.swa_utils.get_ema_multi_avg_fn` (``ema ← ema + (1 − decay)·(w − ema)``), buffers
    averaged too. Created from the network at its first update (a copy of its weights then), so data-dependent
    initialisations (ActNorm) are not averaged with their start values. ``module`` holds the averaged network."""

    def __init__(self, net: nn.Module, decay: float) -> None:
        super().__init__(net, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
        self.decay = decay
        self.requires_grad_(False)
        self.update_parameters(net)  # the first update copies

    def update(self, net: nn.Module) -> None:
        self.update_parameters(net)


__all__ = ["EMA", "TrainingState", "rng_state", "set_rng_state"]
