"""Validation during training: the validation samples, running the plan's validators, the best metric and the
LR | SR | HR image grid."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..components import FlowModel, Sample, ValidationContext
from ..data.datasets import load_val_samples
from ..errors import UserError, where
from ..plan import Plan
from .setup import geometry
from .state import TrainingState


class Validation:
    """The validation set (read once per scale and size multiple, kept on the device) and the validators."""

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
        val = self.plan.spec.data.val
        assert val is not None
        scale, multiple = self.scale(network)
        key = (scale, multiple)
        if key not in self.cache:
            self.cache[key] = [
                Sample(s.name, s.lq.to(self.device), s.hq.to(self.device))
                for s in load_val_samples(val, scale=scale, size_multiple=multiple, seed=self.seed,
                                           where=where(self.plan.source, "data.val", ""))
            ]
        return self.cache[key]

    def run(self, eval_model: Callable[[str], nn.Module], step: int) -> dict[str, float]:
        """Every validator on its network's evaluation weights; metrics named ``<validator>.<metric>``."""
        metrics: dict[str, float] = {}
        for vplan, validator in self.validators:
            net_name = vplan.spec.network
            model = eval_model(net_name)
            train = self.plan.spec.train
            ctx = ValidationContext(
                device=self.device, scale=self.scale(net_name)[0], step=step, output_dir=self.out / "val" / vplan.name,
                temperature=train.val_temperature if train is not None else 0.0,
                samples=train.val_samples if train is not None else 1, seed=self.seed,
            )
            was = model.training
            try:
                with torch.no_grad():
                    result = validator(model, self.samples_for(net_name), ctx)
            finally:
                model.train(was)
            for k, v in result.metrics.items():
                metrics[f"{vplan.name}.{k}"] = float(v)
        return metrics


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
