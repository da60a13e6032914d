"""Evaluation: the plan's validators over ``[data.val]``; a table on stdout and ``<output_dir>/eval.json``."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .files import write_text
from .components import Sample, ValidationContext
from .data.datasets import load_val_samples
from .errors import UserError, where
from .plan import Plan, build_network


@dataclass
class EvalResult:
    """``exit_code`` 0, or 1 when a metric came out NaN; ``metrics`` named ``<validator>.<metric>``;
    ``per_image`` the validators' per-image rows by validator name."""

    exit_code: int
    metrics: dict[str, float]
    per_image: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def _scale_of(plan: Plan, net: nn.Module, name: str) -> tuple[int, int]:
    assert plan.spec.data.val is not None
    want = plan.spec.data.val.scale
    have = getattr(net, "scale", None)
    if want is not None and have is not None and int(have) != want:
        raise UserError.at(plan.source, "data.val.scale", f"{want}, but network {name!r} upscales by {have}")
    scale = want if want is not None else have
    if scale is None:
        raise UserError.at(plan.source, "data.val.scale", f"network {name!r} has no scale; set it here")
    return int(scale), int(getattr(net, "size_multiple", 1) or 1)


def format_table(metrics: dict[str, float]) -> str:
    """The metrics as a two-column text table."""
    if not metrics:
        return "(no metrics)"
    width = max(len(k) for k in metrics)
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  {'-' * 12}"]
    lines += [f"{k:<{width}}  {v:.6g}" for k, v in sorted(metrics.items())]
    return "\n".join(lines)


def evaluate(plan: Plan, networks: dict[str, nn.Module] | None = None) -> EvalResult:
    """Run every validator of ``plan`` on its network over ``[data.val]``.

    Networks are built from the plan (checkpoints loaded) unless given. Prints a table and writes
    ``<run.output_dir>/eval.json`` (metrics, per-image rows, the pipeline file, the time).
    """
    spec = plan.spec
    if spec.data.val is None or not plan.validators:
        raise UserError.at(plan.source, None, "evaluation needs [data.val] and at least one [validators.<name>]")
    device = plan.device
    nets: dict[str, nn.Module] = dict(networks or {})
    samples: dict[tuple[int, int], list[Sample]] = {}
    metrics: dict[str, float] = {}
    per_image: dict[str, list[dict[str, Any]]] = {}
    out_dir = Path(spec.run.output_dir)
    for vplan in plan.validators:
        name = vplan.spec.network
        if name not in nets:
            nets[name] = build_network(plan.networks[name], device).eval()
        net = nets[name]
        scale, multiple = _scale_of(plan, net, name)
        key = (scale, multiple)
        if key not in samples:
            samples[key] = [
                Sample(s.name, s.lq.to(device), s.hq.to(device))
                for s in load_val_samples(spec.data.val, scale=scale, size_multiple=multiple, seed=spec.run.seed,
                                           where=where(plan.source, "data.val", ""))
            ]
        validator = vplan.build()
        ctx = ValidationContext(device=device, scale=scale, step=0, output_dir=out_dir / "eval" / vplan.name)
        with torch.no_grad():
            result = validator(net, samples[key], ctx)
        for k, v in result.metrics.items():
            metrics[f"{vplan.name}.{k}"] = float(v)
        per_image[vplan.name] = [dict(r) for r in result.per_image]
    print(format_table(metrics))
    report = {
        "pipeline": plan.source,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "metrics": metrics,
        "per_image": per_image,
    }
    text = json.dumps(report, indent=2, default=_jsonable)
    write_text(out_dir / "eval.json", text, root=out_dir)
    bad = [k for k, v in metrics.items() if math.isnan(v)]
    return EvalResult(1 if bad else 0, metrics, per_image)


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return float(value) if isinstance(value, (int, float)) else str(value)
