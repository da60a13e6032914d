"""Validation: the validation samples and :meth:`Validation.judge`, the one path feeding validators (training
validation and the evaluation sweep), the best metric and the LR | SR | HR image grid."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..components import FlowModel, Sample, SampleScorer, ValidationContext, ValidationResult
from ..data.datasets import load_val_samples
from ..errors import UserError, where
from ..plan import Plan
from ..scoring import judging, mean_rows, sr_sweep
from .setup import geometry
from .state import TrainingState


class Validation:
    """The validation set (read once per scale and size multiple, kept on the device) and the validators judging
    networks on it. :meth:`judge` is the one path that feeds validators: training validation (:meth:`run`, at
    ``train.val_temperature``) and the evaluation sweep (:func:`restorekit.evaluate.evaluate`, at every ``[eval]``
    temperature, on one or several generators) both come through it."""

    def __init__(self, plan: Plan, validators: Sequence[tuple[Any, Any]], networks: Mapping[str, nn.Module],
                 device: torch.device, seed: int, out: Path) -> None:
        self.plan, self.validators, self.networks = plan, list(validators), networks
        self.device, self.seed, self.out = device, seed, out
        self.cache: dict[tuple[int, int], list[Sample]] = {}

    @property
    def enabled(self) -> bool:
        return bool(self.validators) and self.plan.spec.data.val is not None

    def scale(self, network: str) -> tuple[int, int]:
        val = self.plan.spec.data.val
        assert val is not None
        return geometry(self.networks, network, val.scale, "data.val", self.plan.source)

    def samples_for(self, network: str) -> list[Sample]:
        key = self.scale(network)  # (scale, size multiple)
        if key not in self.cache:
            val = self.plan.spec.data.val
            assert val is not None
            self.cache[key] = [Sample(s.name, s.lq.to(self.device), s.hq.to(self.device)) for s in load_val_samples(
                val, scale=key[0], size_multiple=key[1], seed=self.seed, where=where(self.plan.source, "data.val", ""))]
        return self.cache[key]

    def run(self, eval_model: Callable[[str], nn.Module], step: int) -> dict[str, float]:
        """Every validator on its network's evaluation weights, at ``train.val_temperature`` with
        ``train.val_samples`` draws; metrics named ``<validator>.<metric>``."""
        train = self.plan.spec.train
        t, samples = (float(train.val_temperature), train.val_samples) if train is not None else (0.0, 1)
        by_network: dict[str, list[tuple[Any, Any]]] = {}
        for vplan, validator in self.validators:
            by_network.setdefault(vplan.spec.network, []).append((vplan, validator))
        results: dict[str, ValidationResult] = {}
        for name, validators in by_network.items():
            results.update(self.judge(eval_model(name), name, validators, [t], samples=samples, seed=self.seed,
                                      step=step, out=self.out / "val")[t])
        return {f"{vplan.name}.{k}": float(v) for vplan, _ in self.validators
                for k, v in results[vplan.name].metrics.items()}

    def judge(self, model: Any, network: str, validators: Sequence[tuple[Any, Any]], temperatures: Sequence[float],
              *, samples: int, seed: int, step: int, out: Path,
              skip: Callable[[str, UserError], None] | None = None) -> dict[float, dict[str, ValidationResult]]:
        """``validators`` ((plan, validator) pairs) judging ``model`` on the samples of ``network`` at each of
        ``temperatures``, ``samples`` draws per image (sample ``i`` drawn with seed ``seed + i``, as ``restore-run``
        draws it); results by temperature, then by validator name (scorers first). Each validator's pictures go to
        ``out / <name>``.

        A :class:`~restorekit.SampleScorer` scores every (temperature, sample) output, drawn image by image once for
        all scorers (:func:`restorekit.scoring.sr_sweep`: a flow's conditional features once per image); any other
        validator is called once, ``validator(model, samples, ctx)`` at the first temperature, and its result stands
        at every temperature. The model is judged in eval mode without gradients, its mode restored after. A
        validator raising :class:`UserError` stops the run, or with ``skip`` is handed to it and left out."""
        scale = self.scale(network)[0]
        data = self.samples_for(network)

        def ctx(name: str, t: float) -> ValidationContext:
            return ValidationContext(device=self.device, scale=scale, step=step, output_dir=out / name, temperature=t,
                                     samples=samples, seed=seed)

        scorers = [(vplan, v) for vplan, v in validators if isinstance(v, SampleScorer)]
        rows: dict[float, dict[str, list[dict[str, Any]]]] = {
            float(t): {vplan.name: [] for vplan, _ in scorers} for t in temperatures}
        fixed: dict[str, ValidationResult] = {}
        with judging(model):
            for vplan, v in validators:
                if isinstance(v, SampleScorer):
                    continue
                try:
                    fixed[vplan.name] = v(model, data, ctx(vplan.name, temperatures[0]))
                except UserError as exc:
                    if skip is None:
                        raise
                    skip(vplan.name, exc)
            if scorers:
                for item in sr_sweep(model, data, temperatures, ctx("", temperatures[0])):
                    for vplan, v in scorers:
                        rows[item.temperature][vplan.name].append(
                            {"name": item.name, **v.score(item, ctx(vplan.name, item.temperature))})
        return {t: {**{n: ValidationResult(mean_rows(r), r) for n, r in per.items()}, **fixed}
                for t, per in rows.items()}


def update_best(state: TrainingState, metrics: Mapping[str, float], name: str | None, mode: str, source: str) -> bool:
    """Record ``metrics[name]`` in ``state.best`` when it beats it (``mode`` min or max); True on a new best."""
    if name is None:
        return False
    if name not in metrics:
        raise UserError.at(
            source, "train.best_metric", f"{name!r} is not a validation metric "
            f"(available: {', '.join(sorted(k for k in metrics if not k.startswith('_')))})"
        )
    value = float(metrics[name])
    if not math.isfinite(value):
        return False
    best = state.best["value"]
    if best is None or (value < best if mode == "min" else value > best):
        state.best = {"value": value, "step": state.step}
        return True
    return False


@torch.no_grad()
def image_grid(model: nn.Module, lq: Tensor, hq: Tensor, temperatures: Sequence[float], seed: int, *,
               step: int | None = None, untrained: Sequence[str] = ()) -> Tensor:
    """(3, H, W) grid: bicubic (LR to HR size) | SR (per temperature for flows, drawn with ``seed``) | HR, under a
    header naming each column and the ``step``. ``untrained``: parts of the network no step has trained yet; the SR
    panels are then marked "untrained" (a flow's samples are noise until the flow trains: expected, not a bug)."""
    was = model.training
    model.eval()
    try:
        tiles = [F.interpolate(lq, size=hq.shape[-2:], mode="bicubic", align_corners=False).clamp(0, 1)]
        labels = ["bicubic"]
        if isinstance(model, FlowModel):
            for t in temperatures:
                g = torch.Generator(device=lq.device).manual_seed(seed)
                tiles.append(model.decode(lq, temperature=t, generator=g).clamp(0, 1))
                labels.append(f"t={t:g}")
        else:
            tiles.append(model(lq).clamp(0, 1))
            labels.append("SR")
        tiles.append(hq)
        labels.append("HR")
    finally:
        model.train(was)
    sep = torch.ones(1, 3, hq.shape[-2], 2, device=hq.device)
    parts: list[Tensor] = []
    for t in tiles:
        if t.shape[-2:] != hq.shape[-2:]:
            t = F.interpolate(t.float(), size=hq.shape[-2:], mode="nearest")
        parts += [t.float(), sep]
    grid = torch.nan_to_num(torch.cat(parts[:-1], dim=-1)[0].cpu(), nan=0.0)
    title = f"step {step}" if step is not None else ""
    if untrained:
        title += f"{': ' if title else ''}{', '.join(untrained)} not trained yet"
    marks = ["", *(["untrained"] * (len(labels) - 2) if untrained else [""] * (len(labels) - 2)), ""]
    return with_header(grid, int(hq.shape[-1]) + 2, labels, marks, title)


HEADER_LINE = 12  # pixels per header text line


def with_header(grid: Tensor, column: int, labels: Sequence[str], marks: Sequence[str], title: str) -> Tensor:
    """``grid`` (3, H, W) under a white header: ``title`` on the first line, each column's label (every ``column``
    pixels) on the second, its mark (red) on the third where any column has one."""
    from PIL import Image, ImageDraw, ImageFont

    lines = 2 + (1 if any(marks) else 0)
    w = int(grid.shape[-1])
    img = Image.new("RGB", (w, lines * HEADER_LINE + 2), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    draw.text((2, 0), title, fill="black", font=font)
    for i, (label, mark) in enumerate(zip(labels, marks)):
        draw.text((i * column + 2, HEADER_LINE), label, fill="black", font=font)
        if mark:
            draw.text((i * column + 2, 2 * HEADER_LINE), mark, fill=(200, 0, 0), font=font)
    import numpy as np

    head = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return torch.cat([head, grid.float()], dim=-2)


__all__ = ["Validation", "image_grid", "update_best", "with_header"]
