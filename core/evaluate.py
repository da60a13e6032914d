"""Evaluation (``run.mode = "eval"``, or after training when ``[eval]`` is present): the plan's evaluation validators
over ``[data.val]`` at every ``[eval]`` temperature, on one or several generators; tables on stdout, ``eval.json``,
``eval.md``, CSV files and plots in ``run.output_dir``."""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .files import write_text
from .components import Sample, SampleScorer, ValidationContext
from .eval_report import EvalRow, text_tables, write_reports
from .scoring import mean_rows, sr_sweep
from .spec import EvalSpec
from .data.datasets import load_val_samples
from .errors import UserError, where
from .plan import Plan, build_network


@dataclass
class EvalResult:
    """``exit_code`` 0, or 1 when a metric came out NaN; ``metrics`` named ``<validator>.<metric>`` (prefixed
    ``<generator>/`` with several generators, suffixed ``@t<T>`` with several temperatures); ``per_image`` the
    validators' per-image rows by validator name (first generator, first temperature); ``rows`` every
    (generator, temperature)."""

    exit_code: int
    metrics: dict[str, float]
    per_image: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    rows: list[EvalRow] = field(default_factory=list)


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


def _generators(plan: Plan, networks: dict[str, nn.Module]) -> list[tuple[str, list[Any]]]:
    """(generator label, the validator plans judging it): ``[eval] generators`` (every validator on each) or each
    validator's own network."""
    ev = plan.spec.eval
    if ev is not None and ev.generators:
        return [(g, plan.eval_validators) for g in ev.generators]
    order: dict[str, list[Any]] = {}
    for vplan in plan.eval_validators:
        order.setdefault(vplan.spec.network, []).append(vplan)
    return list(order.items())


def _network(plan: Plan, name: str, nets: dict[str, nn.Module]) -> nn.Module:
    """A [networks] name (built from the plan), or a generator file / catalogue name (restorekit.load)."""
    if name not in nets:
        if name in plan.networks:
            nets[name] = build_network(plan.networks[name], plan.device).eval()
        else:
            from .api import load

            try:
                nets[name] = load(name, device=plan.device, registry=plan.registry).eval()
            except UserError as exc:
                raise UserError.at(plan.source, "eval.generators", f"{name!r}: {exc}") from None
    return nets[name]


def evaluate(plan: Plan, networks: dict[str, nn.Module] | None = None) -> EvalResult:
    """Run the evaluation validators of ``plan`` (``[eval] validators``, or all) over ``[data.val]``, at every
    ``[eval]`` temperature, on every generator.

    Networks are built from the plan (checkpoints loaded) unless given (after training: the trained ones). A
    :class:`~restorekit.SampleScorer` validator sees every (temperature, sample) output, drawn image by image by
    :func:`restorekit.scoring.draw_sweep` (sample ``i`` with seed ``[eval] seed + i``: what ``restore-run`` draws; a
    flow's conditional features computed once per image for all temperatures); any other validator is called once
    per generator (``validator(model, samples, ctx)``, ``ctx.temperature`` the first temperature) and its numbers
    appear at every temperature. Prints a table per temperature and writes ``eval.json``, ``eval.md``,
    ``eval_mean.csv``, ``eval_per_image.csv`` and the plots into ``run.output_dir``.
    """
    spec = plan.spec
    if spec.data.val is None or not plan.eval_validators:
        raise UserError.at(plan.source, None, "evaluation needs [data.val] and at least one [validators.<name>]")
    ev = spec.eval or EvalSpec()
    seed = ev.seed if ev.seed is not None else spec.run.seed
    device = plan.device
    nets: dict[str, nn.Module] = {name: net.eval() for name, net in (networks or {}).items()}  # e.g. just trained
    cache: dict[tuple[int, int], list[Sample]] = {}
    out_dir = Path(spec.run.output_dir)
    built = {vplan.name: vplan.build() for vplan in plan.eval_validators}
    rows: list[EvalRow] = []
    compare = len(ev.generators) > 1
    notes = [f"{ev.samples} sample(s) per image and temperature (one at temperature 0), sample i drawn with seed "
             f"{seed} + i"]
    for entry, vplans in _generators(plan, nets):
        net = _network(plan, entry, nets)
        label = Path(entry).name if entry not in plan.networks and Path(entry).is_file() else entry
        scale, multiple = _scale_of(plan, net, label)
        if (scale, multiple) not in cache:
            cache[(scale, multiple)] = [
                Sample(s.name, s.lq.to(device), s.hq.to(device))
                for s in load_val_samples(spec.data.val, scale=scale, size_multiple=multiple, seed=spec.run.seed,
                                           where=where(plan.source, "data.val", ""))
            ]
        samples = cache[(scale, multiple)]

        def context(vname: str, t: float) -> ValidationContext:
            sub = out_dir / "eval" / (f"{_safe(label)}/{vname}" if compare else vname)
            return ValidationContext(device=device, scale=scale, step=0, output_dir=sub, temperature=t,
                                     samples=ev.samples, seed=seed)

        scorers = [v for v in vplans if isinstance(built[v.name], SampleScorer)]
        fixed: dict[str, float] = {}
        fixed_rows: dict[str, list[dict[str, Any]]] = {}
        with torch.no_grad():
            for vplan in [v for v in vplans if v not in scorers]:
                try:
                    result = built[vplan.name](net, samples, context(vplan.name, ev.temperatures[0]))
                except UserError as exc:
                    if not compare:  # one generator: its validators must all work
                        raise
                    # a comparison goes on without it (nll on a network that is not a flow)
                    notes.append(f"{vplan.name} skipped on {label}: {exc}")
                    warnings.warn(f"evaluation: {notes[-1]}", stacklevel=2)
                    continue
                fixed.update({f"{vplan.name}.{k}": float(v) for k, v in result.metrics.items()})
                fixed_rows[vplan.name] = [dict(r) for r in result.per_image]
            sweep: dict[float, dict[str, list[dict[str, Any]]]] = {
                float(t): {v.name: [] for v in scorers} for t in ev.temperatures}
            if scorers:  # image by image, every temperature (the image's conditional features computed once)
                for item in sr_sweep(net, samples, ev.temperatures, context("", ev.temperatures[0])):
                    for vplan in scorers:
                        sweep[item.temperature][vplan.name].append(
                            {"name": item.name, **built[vplan.name].score(item, context(vplan.name, item.temperature))})
            for t in ev.temperatures:
                per = sweep[float(t)]
                metrics = {f"{name}.{k}": v for name, r in per.items() for k, v in mean_rows(r).items()}
                metrics.update(fixed)
                by_validator = {**per, **fixed_rows}
                rows.append(EvalRow(label, t, metrics, _merge(by_validator), by_validator))
    notes.append(f"validation images: {len(next(iter(cache.values())))}")
    print(text_tables(rows))
    metrics = _flat(rows, len(ev.temperatures) > 1, compare)
    first = rows[0].by_validator if rows else {}
    report = {
        "pipeline": plan.source,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "seed": seed,
        "samples": ev.samples,
        "temperatures": list(ev.temperatures),
        "generators": list(dict.fromkeys(r.generator for r in rows)),
        "metrics": metrics,
        "per_image": first,
        "notes": notes,
        "results": [{"generator": r.generator, "temperature": r.temperature, "metrics": r.metrics,
                     "per_image": r.per_image} for r in rows],
    }
    text = json.dumps(report, indent=2, default=_jsonable)
    write_text(out_dir / "eval.json", text, root=out_dir)
    write_reports(rows, out_dir, title=f"Evaluation of {Path(plan.source).name}", notes=notes)
    bad = [k for k, v in metrics.items() if math.isnan(v)]
    if bad:
        warnings.warn(f"evaluation: not a number: {', '.join(bad)}", stacklevel=2)
    return EvalResult(1 if bad else 0, metrics, first, rows)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(name).name) or "generator"


def _merge(per: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per-image rows of several validators joined by image name (first-seen order)."""
    merged: dict[str, dict[str, Any]] = {}
    for vname, rows in per.items():
        for r in rows:
            row = merged.setdefault(str(r.get("name", "")), {"name": r.get("name", "")})
            row.update({f"{vname}.{k}": v for k, v in r.items() if k != "name"})
    return list(merged.values())


def _flat(rows: list[EvalRow], by_t: bool, by_gen: bool) -> dict[str, float]:
    """All rows' metrics in one dict: ``[<generator>/]<validator>.<metric>[@t<T>]``."""
    out: dict[str, float] = {}
    for r in rows:
        for k, v in r.metrics.items():
            key = (f"{r.generator}/" if by_gen else "") + k + (f"@t{r.temperature:g}" if by_t else "")
            out[key] = float(v)
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return float(value) if isinstance(value, (int, float)) else str(value)
