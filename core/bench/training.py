"""The ``train``, ``train-ckpt`` and ``train-all`` rows: one optimisation step of restorekit's training path
against the plain one."""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from .config import BenchConfig, Row
from .measure import _row
from .models import BenchModel, freeze_as_scheduled, _plain_step, _train_autocast, _train_batch, _train_loss
from .process import MemoryJob, _memory_for


def train_rows(bm: BenchModel, device: torch.device, precision: str, lr_side: int, batch: int, scale: int,
               bicubic: float, cfg: BenchConfig, note: str, job: MemoryJob | None = None) -> list[Row]:
    """``train`` and ``train-ckpt`` rows: one optimisation step (forward, backward, Adam) of restorekit's training
    path (:func:`restorekit.perf.training_step`) against the plain path — NCHW, ``zero_grad(set_to_none=False)``,
    the single-tensor Adam — with and without gradient checkpointing. A flow trains on its NLL with the RRDB
    frozen (SRFlow's stage 2), and a ``train-all`` row has everything trainable (stage 3); other generators train
    on an L1 loss."""
    from ..perf import training_step

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
        fast = make(ckpt, frozen)
        step = training_step(fast, lambda m, h=hr, l=lr: _train_loss(m, h, l, bm.flow), lr_like=lr, autocast=amp,
                             switches=bm.switches,
                             optimizer=lambda params: torch.optim.Adam(params, lr=1e-5))
        # the probe ran forward + backward only: the weights are the same. Relative: a fresh flow's NLL on noise can
        # be ~1e8, where float32 rounding alone is tens
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


__all__ = ["train_rows"]
