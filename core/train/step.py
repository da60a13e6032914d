"""One optimisation step (``[steps.<name>]``): injectors and losses over the micro-batches, backward, gradient
norm and clipping, the optimizer update (skipped when anything is non-finite) and the EMA."""

from __future__ import annotations

import contextlib
import math
from collections import defaultdict
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from ..errors import located
from ..nested import map_tensors
from ..plan import StepPlan
from ..runtime import DistContext, NetworkView, broadcast_from_rank0
from ..spec import TrainSpec
from .freeze import excluded_params
from .logging import RunLog, Totals
from .schedules import active
from .state import EMA, TrainingState


def detach(value: Any) -> Any:
    """``value`` with every tensor inside (lists, tuples, named tuples, dicts) detached."""
    return map_tensors(Tensor.detach, value)


class StepRunner:
    """Runs the plan's steps on the shared networks; the trainer owns the loop around it."""

    def __init__(self, *, source: str, cfg: TrainSpec, state: TrainingState, ctx: DistContext, device: torch.device,
                 networks: Mapping[str, nn.Module], views: Mapping[str, Any],
                 optimizers: Mapping[str, Mapping[str, torch.optim.Optimizer]], injectors: Mapping[str, list[Any]],
                 losses: Mapping[str, list[Any]], amp_dtype: torch.dtype | None, single: bool) -> None:
        self.source, self.cfg, self.state, self.ctx, self.device = source, cfg, state, ctx, device
        self.networks, self.views, self.optimizers = networks, views, optimizers
        self.injectors, self.losses, self.amp_dtype, self.single = injectors, losses, amp_dtype, single
        self.scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
        self.ema: dict[str, EMA] = {}

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def run(self, sp: StepPlan, states: list[dict[str, Any]], step: int, totals: Totals,
            log: RunLog) -> tuple[bool, float | None] | None:
        """Run step ``sp`` at ``step``: None when none of its losses is active, else (updated, the step's total
        loss when the iteration has several steps)."""
        losses = [(c, fn) for c, fn in self.losses[sp.name] if active(c.spec, step)]
        if not losses:
            return None
        injectors = [(c, fn) for c, fn in self.injectors[sp.name] if active(c.spec, step)]
        for opt in self.optimizers[sp.name].values():
            opt.zero_grad(set_to_none=True)
        views = [self.views[n] for n in sp.spec.networks if isinstance(self.views[n], NetworkView)]
        only = excluded_params(sp, self.networks)
        # outside DDP, parameters a step does not update need no gradient at all (cheaper backward)
        toggled = [p for p in only if p.requires_grad] if not views else []
        for p in toggled:
            p.requires_grad_(False)
        try:
            values, finite = self._forward_backward(sp, states, step, injectors, losses, views)
        finally:
            for p in toggled:
                p.requires_grad_(True)
        for p in only:
            p.grad = None
        return self._update(sp, step, values, finite, totals, log)

    def _forward_backward(
        self, sp: StepPlan, states: list[dict[str, Any]], step: int, injectors: list[Any], losses: list[Any],
        views: list[NetworkView],
    ) -> tuple[dict[str, float], bool]:
        """Injectors, losses and backward over the micro-batches; (mean loss values, all finite on every rank)."""
        finite = True
        n_micro = len(states)
        values: dict[str, float] = defaultdict(float)
        for i, state in enumerate(states):
            with contextlib.ExitStack() as stack:
                if i < n_micro - 1:
                    for v in views:
                        if v.ddp is not None:
                            stack.enter_context(v.ddp.no_sync())
                with self.autocast():
                    for c, inj in injectors:
                        with located(self.source, f"steps.{sp.name}.injectors.{c.name}"):
                            state.update(inj(state, step))
                    total: Tensor | None = None
                    for c, fn in losses:
                        with located(self.source, f"steps.{sp.name}.losses.{c.name}"):
                            value = fn(state)
                        values[f"loss/{c.name}"] += float(value.detach().float()) / n_micro
                        term = value.float() * float(c.spec.weight)
                        total = term if total is None else total + term
                    assert total is not None
                    total = total / n_micro
                if "nll" in state and isinstance(state["nll"], Tensor):
                    values["nll"] += float(state["nll"].detach().float().mean()) / n_micro
                values["loss"] += float(total.detach())
                finite = finite and bool(torch.isfinite(total.detach()).all())
                if total.requires_grad:
                    (self.scaler.scale(total) if self.scaler is not None else total).backward()
        return values, not self.ctx.any(not finite, self.device)

    def _grad_norms(self, opts: Mapping[str, torch.optim.Optimizer]) -> dict[str, float]:
        """Unscale, measure and clip (``train.clip_grad``) the gradients of each network of the step."""
        if self.scaler is not None:
            for opt in opts.values():
                self.scaler.unscale_(opt)
        norms = {}
        for name in opts:
            params = [p for p in self.networks[name].parameters() if p.grad is not None]
            if not params:
                continue
            if self.cfg.clip_grad is not None:
                norm = nn.utils.clip_grad_norm_(params, self.cfg.clip_grad)
            else:
                norm = nn.utils.get_total_norm([p.grad for p in params])
            norms[name] = float(norm)
        return norms

    def _update(self, sp: StepPlan, step: int, values: dict[str, float], finite: bool, totals: Totals,
                log: RunLog) -> tuple[bool, float | None]:
        """Step the optimizers unless something is non-finite, then the EMA; add the values to ``totals``."""
        opts = self.optimizers[sp.name]
        norms = self._grad_norms(opts)
        if self.scaler is None and not all(math.isfinite(v) for v in norms.values()):
            finite = False
        if not finite:
            for opt in opts.values():
                opt.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.update()  # lowers the loss scale; also clears the unscale_ records
            bad = {k: v for k, v in values.items() if not math.isfinite(v)}
            log.event(
                step + 1, "nonfinite",
                f"steps.{sp.name}: non-finite loss or gradient, update skipped "
                f"({', '.join(f'{k}={v}' for k, v in bad.items()) or 'gradient'}; "
                f"{self.state.nonfinite + 1} in a row)",
                step_name=sp.name,
            )
            return False, None
        if self.ctx.active and not self.state.synced:
            broadcast_from_rank0(self.networks.values())
        self.state.synced = True
        for opt in opts.values():
            if self.scaler is not None:
                self.scaler.step(opt)
            else:
                opt.step()
        if self.scaler is not None:
            self.scaler.update()
        if self.cfg.ema is not None:
            for name in opts:
                if name not in self.ema:
                    self.ema[name] = EMA(self.networks[name], self.cfg.ema)
                else:
                    self.ema[name].update(self.networks[name])
        return True, totals.add_step(sp.name, values, norms, self.single)


__all__ = ["StepRunner", "detach"]
