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
from .eval_report import EvalRow, text_tables, write_reports
from .spec import EvalSpec
from .errors import UserError
from .plan import Plan, build_network
from .train.validation import Validation


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

    Networks are built from the plan (checkpoints loaded) unless given (after training: the trained ones). Each
    generator is judged by training's :meth:`~restorekit.train.validation.Validation.judge` (its validation set,
    the one path feeding validators): a :class:`~restorekit.SampleScorer` sees every (temperature, sample) output,
    sample ``i`` drawn with seed ``[eval] seed + i`` (what ``restore-run`` draws); any other validator is called once
    per generator at the first temperature and its numbers appear at every temperature; with several generators, a
    validator that cannot judge one (nll on a network that is not a flow) is skipped there with a warning. Prints a
    table per temperature and writes ``eval.json``, ``eval.md``, ``eval_mean.csv``, ``eval_per_image.csv`` and the
    plots into ``run.output_dir``."""
    spec = plan.spec
    if spec.data.val is None or not plan.eval_validators:
        raise UserError.at(plan.source, None, "evaluation needs [data.val] and at least one [validators.<name>]")
    ev = spec.eval or EvalSpec()
    seed = ev.seed if ev.seed is not None else spec.run.seed
    nets: dict[str, nn.Module] = {name: net.eval() for name, net in (networks or {}).items()}  # e.g. just trained
    out_dir = Path(spec.run.output_dir)
    built = {vplan.name: (vplan, vplan.build()) for vplan in plan.eval_validators}
    # training's Validation: the same validation set, and the one path feeding validators (Validation.judge)
    validation = Validation(plan, list(built.values()), nets, plan.device, spec.run.seed, out_dir)
    rows: list[EvalRow] = []
    compare = len(ev.generators) > 1
    notes = [f"{ev.samples} sample(s) per image and temperature (one at temperature 0), sample i drawn with seed "
             f"{seed} + i"]
    for entry, vplans in _generators(plan, nets):
        net = _network(plan, entry, nets)
        label = Path(entry).name if entry not in plan.networks and Path(entry).is_file() else entry

        def skip(vname: str, exc: UserError, label: str = label) -> None:  # a comparison goes on without it
            notes.append(f"{vname} skipped on {label}: {exc}")  # (nll on a network that is not a flow)
            warnings.warn(f"evaluation: {notes[-1]}", stacklevel=4)

        results = validation.judge(net, entry, [built[v.name] for v in vplans], ev.temperatures,
                                   samples=ev.samples, seed=seed, step=0,
                                   out=out_dir / "eval" / (_safe(label) if compare else ""),
                                   skip=skip if compare else None)  # one generator: its validators must all work
        for t in ev.temperatures:
            per = results[float(t)]
            metrics = {f"{name}.{k}": float(v) for name, r in per.items() for k, v in r.metrics.items()}
            by_validator = {name: [dict(row) for row in r.per_image] for name, r in per.items()}
            rows.append(EvalRow(label, t, metrics, _merge(by_validator), by_validator))
    notes.append(f"validation images: {len(next(iter(validation.cache.values())))}")
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
