"""The training loop: :class:`Trainer` builds a run from its plan and drives iterations, logging, validation,
unfreezing and checkpoints; the work of one step is :class:`~restorekit.train.step.StepRunner`'s."""

from __future__ import annotations

import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..checkpoint import CHECKPOINTS, clean_temporaries, newest_checkpoint, save_generator
from ..data.datasets import BatchStream, TrainDataset
from ..errors import where
from ..files import confine, holds_lock
from ..plan import Plan
from ..runtime import DistContext, NetworkView, seed_everything
from ..spec import TrainSpec
from .freeze import Unfreezer, check_only, make_freeze
from .logging import RunLog, Totals, progress_postfix
from .persist import Checkpointed, refuse_earlier_run, resume_candidates, resume_training, save_training
from .schedules import active, apply_lr
from .setup import amp_dtype, build_component, build_trained_network, geometry, make_optimizers
from .stages import Stages
from .state import TrainingState
from .step import StepRunner, detach
from .validation import Validation, image_grid, update_best


@dataclass
class TrainResult:
    """``exit_code`` 0 (done) or 1 (stopped early); ``networks`` by name (EMA weights where kept);
    ``metrics`` the last validation metrics plus ``loss`` (the last logged total loss)."""

    exit_code: int
    networks: dict[str, nn.Module]
    metrics: dict[str, float]


class Trainer:
    """Runs the training of a :class:`Plan` (see :mod:`restorekit.train`). Use :func:`restorekit.train.train`."""

    def __init__(self, plan: Plan, ctx: DistContext, device: torch.device) -> None:
        self.plan, self.spec, self.ctx, self.device, self.source = plan, plan.spec, ctx, device, plan.source
        assert plan.spec.train is not None and plan.spec.data.train is not None
        self.cfg: TrainSpec = plan.spec.train
        self.out = Path(self.spec.run.output_dir)
        self.seed = self.spec.run.seed
        self.total = self.cfg.steps
        self.state = TrainingState()
        self.last_loss: float | None = None
        amp = amp_dtype(self.spec.run.precision)

        seed_everything(self.seed)
        self.networks: dict[str, nn.Module] = {
            name: build_trained_network(p, device, self.cfg.gradient_checkpointing) for name, p in plan.networks.items()
        }
        optimised = {n for s in plan.steps for n in s.spec.networks}
        self.freeze = {
            name: make_freeze(name, plan.networks[name].spec, name in optimised, net, self.source)
            for name, net in self.networks.items()
        }
        for name, fr in self.freeze.items():
            if fr.mode == "fixed":
                self.networks[name].eval()
            fr.apply(self.networks[name])
        check_only(plan.steps, self.networks, self.source)
        self.views: dict[str, Any] = {
            n: NetworkView(m) if ctx.active and n in optimised else m for n, m in self.networks.items()
        }
        self.unfreezer = Unfreezer(self.freeze, self.networks, self.views, device, self.total, self.source)
        self.optimizers = make_optimizers(plan.steps, self.networks)
        src = self.source
        injectors = {s.name: [(c, build_component(c, src, f"steps.{s.name}.injectors.{c.name}", self.views))
                              for c in s.injectors] for s in plan.steps}
        losses = {s.name: [(c, build_component(c, src, f"steps.{s.name}.losses.{c.name}")) for c in s.losses]
                  for s in plan.steps}
        self.steps = StepRunner(
            source=src, cfg=self.cfg, state=self.state, ctx=ctx, device=device, networks=self.networks,
            views=self.views, optimizers=self.optimizers, injectors=injectors, losses=losses, amp_dtype=amp,
            single=len(plan.steps) == 1,
        )
        validators = [(v, build_component(v, src, f"validators.{v.name}")) for v in plan.train_validators]
        self.validation = Validation(plan, validators, self.networks, device, self.seed, self.out)

        primary = plan.steps[0].spec.networks[0]
        scale, multiple = geometry(self.networks, primary, self.spec.data.train.scale, "data.train", src)
        self.dataset = TrainDataset(self.spec.data.train, scale=scale, seed=self.seed, size_multiple=multiple,
                                    where=where(src, "data.train", ""))
        self.stream = BatchStream(
            self.dataset, batch_size=self.spec.data.train.batch_size, workers=self.spec.data.train.workers,
            seed=self.seed, rank=ctx.rank, world=ctx.world, pin_memory=device.type == "cuda",
        )
        self.image_network = plan.train_validators[0].spec.network if plan.train_validators else primary
        parts: dict[str, Any] = {f"optimizers.{s}.{n}": o for s, m in self.optimizers.items() for n, o in m.items()}
        parts.update({f"freeze.{n}": f for n, f in self.freeze.items()}, data=self.stream)
        if self.steps.scaler is not None:
            parts["scaler"] = self.steps.scaler
        self.checkpointed = Checkpointed(
            source=src, out=self.out, ctx=ctx, seed=self.seed, networks=self.networks, state=self.state, parts=parts,
            files={n: (p.component.name, p.params.model_dump(mode="json")) for n, p in plan.networks.items()},
            ema=self.steps.ema, ema_decay=float(self.cfg.ema or 0.999), keep_last=self.cfg.keep_last,
            best=(self.cfg.best_metric, self.cfg.best_mode), after_load=self._after_load,
        )

    def _after_load(self) -> None:
        for name, fr in self.freeze.items():
            fr.apply(self.networks[name])
        self.wrap_all()

    def wrap_all(self) -> None:
        for view in self.views.values():
            if isinstance(view, NetworkView):
                view.wrap(self.device)

    def eval_model(self, name: str) -> nn.Module:
        """The weights to evaluate and keep: the EMA where one is kept."""
        ema = self.steps.ema
        return ema[name].module if name in ema else self.networks[name]

    # -- running ---------------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        """Resume (if asked), train to ``train.steps``, validate, save; see :func:`restorekit.train.train`."""
        candidates = resume_candidates(self.cfg.resume, self.out)
        resume: Path | None = None
        skipped: list[tuple[Path, str]] = []
        if candidates is None:
            refuse_earlier_run(self.out, self.source)
        removed = (clean_temporaries(self.out / CHECKPOINTS, all_stale=holds_lock(self.out))
                   if self.ctx.main else [])
        if candidates is not None:
            resume, skipped = resume_training(self.checkpointed, candidates, fallback=self.cfg.resume == "auto")
        else:
            self.wrap_all()
            seed_everything(self.seed + self.ctx.rank)  # rank r draws from seed + r
        self.log = RunLog(
            self.out, enabled=self.ctx.main, tensorboard=self.cfg.tensorboard,
            resume_step=self.state.step if resume is not None else None,
        )
        if candidates is None and self.cfg.resume == "auto":
            self.log.console(f"train.resume = 'auto': no checkpoint in {self.out / CHECKPOINTS}, starting fresh")
        if removed:
            self.log.console(f"removed {len(removed)} temporary checkpoint folder(s) left by interrupted runs: "
                             + ", ".join(d.name for d in removed))
        for folder, why in skipped:
            self.log.event(self.state.step, "resume_skipped", f"skipped unreadable checkpoint {folder}: {why}",
                           path=str(folder))
        if resume is not None:
            self.log.event(self.state.step, "resume", f"resumed from {resume}", path=str(resume))
        self.unfreezer.describe(self.log)
        self.stages = Stages(self.plan.steps, self.networks)
        try:
            return self._loop()
        finally:
            self.log.close()

    def _loop(self) -> TrainResult:
        from tqdm import tqdm

        st, cfg = self.state, self.cfg
        bar = tqdm(total=self.total, initial=st.step, disable=not self.ctx.main, unit="step", dynamic_ncols=True,
                   desc="train", file=sys.stderr)
        totals = Totals()
        try:
            while st.step < self.total:
                self.stages.update(st.step, self.log)
                self.unfreezer.step_rules(st.step, self.log)
                ok = self._iteration(totals)
                st.step += 1
                bar.update(1)
                if not ok and st.nonfinite >= cfg.max_nonfinite:
                    return self._stop()
                self.unfreezer.step_rules(st.step, self.log)
                if st.step % cfg.log_every == 0 or st.step == self.total:
                    self._log_train(totals, bar)
                    totals = Totals()
                new_best = False
                if cfg.val_every and st.step % cfg.val_every == 0 and st.step < self.total:
                    new_best = self._validate()
                if cfg.image_every and st.step % cfg.image_every == 0:
                    self._images()
                every = cfg.checkpoint_every
                due = (every and st.step % every == 0 and st.step < self.total) or new_best
                if due and st.nonfinite == 0:  # never replace good checkpoints during a non-finite streak
                    save_training(self.checkpointed, self.log.record)
        finally:
            bar.close()
        if self.validation.enabled and st.last_val.get("_step") != st.step:
            self._validate()
        if self.checkpointed.last_saved != st.step:
            save_training(self.checkpointed, self.log.record)
        self._write_generators()
        self.ctx.barrier()
        self.log.console(f"training done: {st.step} steps, output in {self.out}")
        return self._result(0)

    def _result(self, code: int) -> TrainResult:
        metrics = {k: v for k, v in self.state.last_val.items() if not k.startswith("_")}
        if self.last_loss is not None:
            metrics["loss"] = self.last_loss
        return TrainResult(code, {n: self.eval_model(n) for n in self.networks}, metrics)

    def _stop(self) -> TrainResult:
        last = newest_checkpoint(self.out)
        where = f"the last good checkpoint is {last}" if last is not None else "no checkpoint was written"
        n, step = self.state.nonfinite, self.state.step
        self.log.event(step, "stop", f"training stopped: {n} non-finite losses in a row (train.max_nonfinite = "
                       f"{self.cfg.max_nonfinite}); {where}")
        if self.ctx.main:
            warnings.warn(f"training stopped at step {step}: {n} non-finite losses in a row; {where}", stacklevel=2)
        self.ctx.barrier()
        return self._result(1)

    def _iteration(self, totals: Totals) -> bool:
        """One iteration over every step; False when a step was skipped for a non-finite loss."""
        step = self.state.step
        nb = self.device.type == "cuda"
        states: list[dict[str, Any]] = [
            {k: v.to(self.device, non_blocking=nb) for k, v in self.stream.next().items()}
            for _ in range(self.cfg.accumulate)
        ]
        totals.images += sum(int(s["hq"].shape[0]) for s in states) * self.ctx.world
        apply_lr((o for m in self.optimizers.values() for o in m.values()), step, self.cfg.schedule, self.total)
        all_ok, ran, iteration_loss = True, False, None
        for sp in self.plan.steps:
            if not active(sp.spec, step):  # type: ignore[arg-type]
                continue
            result = self.steps.run(sp, states, step, totals, self.log)
            if result is None:
                continue
            ok, step_loss = result
            ran, all_ok = True, all_ok and ok
            if step_loss is not None:
                iteration_loss = (iteration_loss or 0.0) + step_loss
            states = [{k: detach(v) for k, v in s.items()} for s in states]
        if ran:
            self.state.nonfinite = 0 if all_ok else self.state.nonfinite + 1
        if iteration_loss is not None:  # several steps: "loss" is the sum of their totals
            totals.add("loss", iteration_loss)
        return all_ok

    # -- logging, validation, images, generators ---------------------------------------------------------
    def _log_train(self, totals: Totals, bar: Any) -> None:
        values = totals.means(self.ctx, self.device)
        several = len(self.optimizers) > 1
        values.update({f"lr/{s}.{n}" if several else f"lr/{n}": opt.param_groups[0]["lr"]
                       for s, m in self.optimizers.items() for n, opt in m.items()})
        if "loss" in values:
            self.last_loss = values["loss"]
        if not self.ctx.main:
            return
        step = self.state.step
        self.log.scalars(step, values, "train")
        self.log.record({"step": step, "kind": "train", "time": time.time(), **values})
        running = [sp.name for sp in self.plan.steps if active(sp.spec, max(0, step - 1))]
        bar.set_postfix(progress_postfix(values, running, several), refresh=False)

    def _validate(self) -> bool:
        """Run the validators (rank 0), share the metrics, apply metric rules; True on a new best."""
        step = self.state.step
        metrics = self.ctx.broadcast(self.validation.run(self.eval_model, step) if self.ctx.main else {})
        metrics["_step"] = float(step)
        self.state.last_val = metrics
        if self.ctx.main:
            shown = {k: v for k, v in metrics.items() if not k.startswith("_")}
            self.log.scalars(step, shown, "val")
            self.log.record({"step": step, "kind": "val", **shown})
            self.log.console(f"[step {step}] validation: " + ", ".join(f"{k} = {v:.5g}" for k, v in sorted(shown.items())))
        self.unfreezer.metric_rules(metrics, step, self.log)
        return update_best(self.state, metrics, self.cfg.best_metric, self.cfg.best_mode, self.source)

    def _images(self) -> None:
        """Image grid bicubic | SR (per temperature for flows) | HR, labelled with the step, to TensorBoard and a
        PNG; SR panels drawn before parts of the network have trained are marked."""
        if not self.ctx.main:
            return
        from ..data.io import write_image

        name, step = self.image_network, self.state.step
        if self.spec.data.val is not None:
            sample = self.validation.samples_for(name)[0]
            lq, hq = sample.lq, sample.hq
        else:
            batch = self.dataset.item(0, 0)
            lq, hq = batch["lq"][None].to(self.device), batch["hq"][None].to(self.device)
        grid: Tensor = image_grid(self.eval_model(name), lq, hq, self.cfg.image_temperatures,
                                  (self.seed * 7919 + step) & 0x7FFFFFFFFFFFFFFF, step=step,
                                  untrained=self.stages.untrained(name, step))
        write_image(self.out / "images" / f"step_{step:07d}.png", grid)
        self.log.image(step, "images/lr_sr_hr", grid)

    def _write_generators(self) -> None:
        if not self.ctx.main:
            return
        for n in self.cfg.save_generator:
            p = self.plan.networks[n]
            path = confine(self.out / f"{n}.safetensors", self.out, "train.save_generator")
            save_generator(path, self.eval_model(n), p.component.name, p.params.model_dump(mode="json"))
            self.log.console(f"wrote {path}")


__all__ = ["TrainResult", "Trainer"]
