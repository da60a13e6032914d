"""The reports of an evaluation: text tables per temperature, ``eval.md``, CSV files (per image, mean) and plots
(every metric against the temperature; PSNR against LPIPS, the perception–distortion curve, when both exist).

An evaluation is a list of :class:`EvalRow`: one generator at one temperature, its mean metrics and its per-image
rows. ``run.mode = "eval"`` and ``restore-run evaluate`` both write through here.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .files import atomic_write, write_text


@dataclass
class EvalRow:
    """One generator at one temperature (None: outputs read from files): mean metrics, per-image rows (all
    metrics of an image in one row) and, where known, each validator's own rows."""

    generator: str
    temperature: float | None
    metrics: dict[str, float]
    per_image: list[dict[str, Any]] = field(default_factory=list)
    by_validator: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def columns(rows: Sequence[EvalRow]) -> list[str]:
    """Every metric name, in first-seen order."""
    seen: dict[str, None] = {}
    for r in rows:
        for k in r.metrics:
            seen.setdefault(k, None)
    return list(seen)


def temperatures(rows: Sequence[EvalRow]) -> list[float | None]:
    seen: dict[float | None, None] = {}
    for r in rows:
        seen.setdefault(r.temperature, None)
    return list(seen)


def fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if math.isinf(v) else f"{v:.4f}")
    return str(v)


def _grid(header: list[str], body: list[list[str]]) -> str:
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths)) for b in body]
    return "\n".join(lines)


def t_label(t: float | None) -> str:
    return "files" if t is None else f"temperature {t:g}"


def text_tables(rows: Sequence[EvalRow]) -> str:
    """One text table per temperature: a row per generator, a column per metric."""
    cols = columns(rows)
    parts = []
    for t in temperatures(rows):
        body = [[r.generator] + [fmt(r.metrics.get(c, math.nan)) for c in cols] for r in rows if r.temperature == t]
        parts.append(f"{t_label(t)}\n{_grid(['generator'] + cols, body)}")
    return "\n\n".join(parts)


def markdown(rows: Sequence[EvalRow], title: str, notes: Sequence[str] = ()) -> str:
    """``eval.md``: the comparison table (a row per generator and temperature), then the notes."""
    cols = columns(rows)
    lines = [f"# {title}", "", "| generator | temperature | " + " | ".join(cols) + " |",
             "|---|---|" + "---|" * len(cols)]
    for r in rows:
        t = "-" if r.temperature is None else f"{r.temperature:g}"
        lines.append(f"| {r.generator} | {t} | " + " | ".join(fmt(r.metrics.get(c, math.nan)) for c in cols) + " |")
    lines.append("")
    lines += [f"- {n}" for n in notes]
    return "\n".join(lines).rstrip() + "\n"


def _csv(header: list[str], body: list[list[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(body)
    return buf.getvalue()


def csv_files(rows: Sequence[EvalRow]) -> tuple[str, str]:
    """(per image, mean) CSV texts: columns generator, temperature, [image], the metrics."""
    cols = columns(rows)
    image_cols: dict[str, None] = {}
    for r in rows:
        for img in r.per_image:
            for k in img:
                if k != "name":
                    image_cols.setdefault(k, None)
    per_image = _csv(["generator", "temperature", "image", *image_cols],
                     [[r.generator, "" if r.temperature is None else r.temperature, img.get("name", ""),
                       *(img.get(k, "") for k in image_cols)] for r in rows for img in r.per_image])
    mean = _csv(["generator", "temperature", *cols],
                [[r.generator, "" if r.temperature is None else r.temperature, *(r.metrics.get(c, "") for c in cols)]
                 for r in rows])
    return per_image, mean


def find_metric(cols: Sequence[str], name: str) -> str | None:
    """The first column whose metric (the part after the last '.') is ``name``."""
    return next((c for c in cols if c.rsplit(".", 1)[-1] == name), None)


def _save(fig: Any, path: Path, root: Path) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100), root=root)


def plots(rows: Sequence[EvalRow], out_dir: Path, root: Path) -> list[Path]:
    """``eval.png`` (each metric against the temperature, a line per generator) and, where a ``psnr`` and an
    ``lpips`` metric exist, ``perception_distortion.png`` (PSNR against LPIPS, a point per temperature)."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no display

    swept = [r for r in rows if r.temperature is not None]
    if not swept:
        return []
    cols = columns(swept)
    gens = list(dict.fromkeys(r.generator for r in swept))
    written = []
    n = max(1, len(cols))
    ncols = min(3, n)
    nrows = -(-n // ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.2 * nrows))
    fig.subplots_adjust(left=0.08, right=0.97, bottom=0.1, top=0.92, wspace=0.35, hspace=0.55)
    for i, c in enumerate(cols):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        for g in gens:
            pts = [(r.temperature, r.metrics.get(c, math.nan)) for r in swept if r.generator == g]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=g)
        ax.set_xlabel("temperature")
        ax.set_title(c)
        ax.grid(alpha=0.3)
        if len(gens) > 1 and i == 0:
            ax.legend(fontsize="small")
    _save(fig, out_dir / "eval.png", root)
    written.append(out_dir / "eval.png")
    psnr, lpips = find_metric(cols, "psnr"), find_metric(cols, "lpips")
    if psnr and lpips:
        fig = Figure(figsize=(5, 4))
        fig.subplots_adjust(left=0.15, right=0.95, bottom=0.13, top=0.9)
        ax = fig.add_subplot(1, 1, 1)
        for g in gens:
            pts = [(r.metrics.get(lpips, math.nan), r.metrics.get(psnr, math.nan), r.temperature)
                   for r in swept if r.generator == g]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=g)
            for x, y, t in pts:
                ax.annotate(f"t={t:g}", (x, y), fontsize="x-small", xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel(f"{lpips} (lower is better)")
        ax.set_ylabel(f"{psnr} (dB)")
        ax.set_title("perception-distortion")
        ax.grid(alpha=0.3)
        if len(gens) > 1:
            ax.legend(fontsize="small")
        _save(fig, out_dir / "perception_distortion.png", root)
        written.append(out_dir / "perception_distortion.png")
    return written


def write_reports(rows: Sequence[EvalRow], out_dir: Path, *, title: str, notes: Sequence[str] = (),
                  plot: bool = True) -> list[Path]:
    """``eval.md``, ``eval_per_image.csv``, ``eval_mean.csv`` and the plots, in ``out_dir`` (atomically)."""
    per_image, mean = csv_files(rows)
    paths = [
        write_text(out_dir / "eval.md", markdown(rows, title, notes), root=out_dir),
        write_text(out_dir / "eval_per_image.csv", per_image, root=out_dir),
        write_text(out_dir / "eval_mean.csv", mean, root=out_dir),
    ]
    if plot:
        paths += plots(rows, out_dir, out_dir)
    return paths


__all__ = ["EvalRow", "columns", "csv_files", "markdown", "plots", "text_tables", "write_reports"]
