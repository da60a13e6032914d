"""The ``train``, ``train-ckpt`` and ``train-all`` rows: one optimisation step of restorekit's own trainer
(:class:`restorekit.train.step.StepRunner`, with the trainer's freeze rules, fused optimiser and declared training
switches) against the plain one."""

from __future__ import annotations

import copy
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..components import Switches
from .config import BenchConfig, Row
from .measure import _row
from .models import (BenchModel, _plain_step, _train_autocast, _train_batch, _train_loss, freeze_as_scheduled,
                     scheduled_frozen)
from .process import MemoryJob, _memory_for

NETWORK = "generator"


class TrainerStep:
    """One iteration of restorekit's trainer on a fixed batch: the trainer's own :class:`StepRunner` (injectors,
    losses, backward, clipping, the fused optimiser), networks built as the trainer builds them (declared training
    switches, frozen parts through :class:`~restorekit.train.Freeze` and its layouts). A flow trains on its NLL
    (``generator`` injector in ``encode`` mode, ``direct`` loss), other generators on an L1 loss."""

    def __init__(self, module: nn.Module, switches: Switches, *, flow: bool, lr: Tensor, hr: Tensor,
                 precision: str, frozen: bool) -> None:
        from .. import builtins
        from ..perf import fused_optimizer, lean_training
        from ..plan import ComponentPlan, StepPlan, validate_params
        from ..registry import PluginRegistry
        from ..runtime import DistContext
        from ..spec import StepSpec, TrainSpec
        from ..train import Freeze, RunLog, TrainingState
        from ..train.setup import amp_dtype
        from ..train.step import StepRunner

        self.lean = lean_training(module, switches)
        held = scheduled_frozen(module, switches) if frozen else set()
        trained = tuple(n for n, _ in module.named_parameters() if n not in held)
        self.freeze = Freeze(NETWORK, "partial" if held else "full", trained)
        self.freeze.apply(module)
        if flow:
            injector = {"component": "generator", "params": {"mode": "encode", "inputs": {"hr": "hq", "lr": "lq"}}}
            loss = {"component": "direct", "params": {"key": "nll"}}
        else:
            injector = {"component": "generator", "params": {"mode": "forward", "inputs": {"lr": "lq"}}}
            loss = {"component": "pixel", "params": {"pred": "sr", "target": "hq", "criterion": "l1"}}
        spec = StepSpec.model_validate({"networks": [NETWORK], "optimizer": {"kind": "adam", "lr": 1e-5},
                                        "injectors": {"run": injector}, "losses": {"loss": loss}})
        registry = PluginRegistry()
        registry.register(builtins, "restorekit")

        def plan(kind: Any, name: str, s: Any) -> ComponentPlan:
            r = registry.get(kind, s.component)
            return ComponentPlan(name, s, r, validate_params(r.component.params, s.params, "--benchmark", name))

        self.plan = StepPlan("bench", spec, [plan("injector", "run", spec.injectors["run"])],
                             [plan("loss", "loss", spec.losses["loss"])])
        nets = {NETWORK: module}
        self.optimizer = fused_optimizer(torch.optim.Adam, module.parameters(), lr=1e-5)
        self.runner = StepRunner(
            source="--benchmark", cfg=TrainSpec(steps=1), state=TrainingState(), ctx=DistContext(),
            device=lr.device, networks=nets, views=nets, optimizers={"bench": {NETWORK: self.optimizer}},
            injectors={"bench": [(c, c.build(nets)) for c in self.plan.injectors]},
            losses={"bench": [(c, c.build()) for c in self.plan.losses]}, amp_dtype=amp_dtype(precision), single=True,
        )
        self.log = RunLog(Path(tempfile.gettempdir()), enabled=False, tensorboard=False, resume_step=None)  # writes nothing
        self.lr, self.hr = lr, hr
        self.layout = "contiguous"  # the trainer's networks stay NCHW; frozen parts take their own layout

    @property
    def note(self) -> str:
        kind = "fused" if self.optimizer.defaults.get("fused") else "foreach" if self.optimizer.defaults.get(
            "foreach") else "for-loop"
        frozen = "".join(f", frozen {name or 'model'}={lay}" for name, lay in sorted(self.freeze.layouts.chosen.items()))
        return f"trainer step{frozen}, adam={kind}" + (", lean_training" if self.lean else "")

    def __call__(self) -> Tensor:
        from ..train.logging import Totals

        totals = Totals()
        self.runner.run(self.plan, [{"lq": self.lr, "hq": self.hr}], 0, totals, self.log)
        return torch.tensor(totals.values.get("loss", float("nan")))


def train_rows(bm: BenchModel, device: torch.device, precision: str, lr_side: int, batch: int, scale: int,
               bicubic: float, cfg: BenchConfig, note: str, job: MemoryJob | None = None) -> list[Row]:
    """``train`` and ``train-ckpt`` rows: one iteration of restorekit's trainer (:class:`TrainerStep`) against the
    plain path — NCHW, ``zero_grad(set_to_none=False)``, the single-tensor Adam — with and without gradient
    checkpointing. A flow trains on its NLL with the parts its schedule keeps frozen frozen
    (``Switches.frozen_in_training``: SRFlow's stage 2), and a ``train-all`` row has everything trainable (stage 3);
    other generators train on an L1 loss."""
    lr, hr = _train_batch(batch, lr_side, scale, cfg.seed, device)
    rows: list[Row] = []
    amp = _train_autocast(device, precision)

    def make(ckpt: bool, frozen: bool = True) -> nn.Module:
        m = copy.deepcopy(bm.module).to(device).train()
        if frozen:
            freeze_as_scheduled(m, bm.switches)
        if hasattr(m, "gradient_checkpointing"):
            m.gradient_checkpointing = ckpt  # type: ignore[assignment]
        return m

    ref_model = make(False)
    with amp:
        ref_loss = float(_train_loss(ref_model, hr, lr, bm.flow).detach())  # a fresh copy's first loss
    del ref_model
    plains: dict[bool, Any] = {}
    cases = [("train", False, True), ("train-ckpt", True, True), ("train-all", False, False)]
    for path, ckpt, frozen in cases:
        if ckpt and not hasattr(bm.module, "gradient_checkpointing"):
            continue
        if not frozen and not bm.switches.frozen_in_training:
            continue  # a network with nothing frozen: its `train` row already trains everything
        step = TrainerStep(make(ckpt, False), bm.switches, flow=bm.flow, lr=lr, hr=hr, precision=precision,
                           frozen=frozen)
        # relative: a fresh flow's NLL on noise can be ~1e8, where float32 rounding alone is tens
        diff = abs(float(step()) - ref_loss) / max(1.0, abs(ref_loss))
        if frozen not in plains:
            plains[frozen] = _plain_step(make(False, frozen), hr, lr, bm.flow, amp)
            plains[frozen]()  # initialises the plain copy's data-dependent layers (ActNorm) on the same batch
        f_plain = plains[frozen]
        mem_job = replace(job, path=path, layout=step.layout) if job is not None else None
        rows.append(_row(bm, path, device, precision, lr_side, batch, 1, scale, (lr_side * scale) ** 2,
                         bicubic, f_plain, step, diff, cfg, f"{note}; {step.note}", flow=False,
                         memory=_memory_for(cfg, device, mem_job)))
    return rows


__all__ = ["TrainerStep", "train_rows"]
