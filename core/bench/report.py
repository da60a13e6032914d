"""The benchmark's output: the Markdown table, the JSON file (with the machine the figures were measured on)
and ``--compare`` against an earlier JSON file."""

from __future__ import annotations

import json
import math
import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from ..errors import UserError
from .config import NOISE_FLOOR, SCHEMA, BenchConfig, Row


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    info: dict[str, Any] = {
        "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        if names:
            info["cpu"] = names[0]
    except OSError:
        pass
    if torch.cuda.is_available():
        info["cuda"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def _fmt(v: float | None, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


COLUMNS = ("model", "path", "device", "prec", "LR", "batch", "n", "ms/img", "MP/s", "samples/s", "peak MB",
           "plain MB", "x bicubic", "x plain", "spread", "max|diff|")


def table(rows: Sequence[Row], marks: dict[tuple[Any, ...], str] | None = None) -> str:
    """The rows as a Markdown table (``marks``: a note per row key, from :func:`compare`)."""
    cols = list(COLUMNS) + (["vs old"] if marks is not None else [])
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        cells = [
            r.model, r.path, r.device, r.precision, str(r.lr), str(r.batch), str(r.samples), _fmt(r.ms_per_image),
            _fmt(r.megapixels_per_s, 3), _fmt(r.samples_per_s), _fmt(r.peak_mb, 1), _fmt(r.plain_peak_mb, 1),
            _fmt(r.vs_bicubic, 1), _fmt(r.speedup_vs_plain), f"{100 * r.spread:.0f}%",
            "-" if r.max_abs_diff is None else f"{r.max_abs_diff:.1e}",
        ]
        if marks is not None:
            cells.append(marks.get(r.key, "new"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_json(path: Path, rows: Sequence[Row], cfg: BenchConfig, notes: Sequence[str]) -> None:
    data = {"schema": SCHEMA, "machine": machine(), "config": asdict(cfg), "notes": list(notes),
            "rows": [asdict(r) for r in rows]}
    from ..files import write_text

    write_text(path, json.dumps(data, indent=2) + "\n")


def read_json(path: Path) -> list[Row]:
    import pydantic

    try:
        data = json.loads(Path(path).read_text())
        # typed, not just Row(**r): a string or null where a number belongs would fail later inside compare()
        return pydantic.TypeAdapter(list[Row]).validate_python(data["rows"])
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(x) for x in ("rows", *err["loc"]))
        raise UserError(f"{path}: --compare: not a restore-run --benchmark JSON file ({loc}: {err['msg']})") from None
    except FileNotFoundError:
        raise UserError(f"{path}: --compare: file not found") from None
    except IsADirectoryError:
        raise UserError(f"{path}: --compare: is a folder, not a JSON file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: --compare: cannot read the file ({getattr(exc, 'strerror', None) or exc})") from None
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        what = exc.__class__.__name__
        raise UserError(f"{path}: --compare: not a restore-run --benchmark JSON file ({what})") from None


@dataclass
class Change:
    key: tuple[Any, ...]
    ratio: float  # new time / old time
    threshold: float  # the relative change the noise allows
    verdict: str  # regression | faster | same


def compare(new: Sequence[Row], old: Sequence[Row]) -> list[Change]:
    """Each row of ``new`` that ``old`` also has: the time ratio and whether it is beyond the noise.

    The allowed change is ``max(NOISE_FLOOR, 2 × (spread_old + spread_new))``, the spreads being the relative
    interquartile ranges of the repeats each run measured: a row is a regression when new/old time exceeds
    1 + that, faster when it is below 1 / (1 + that). Bicubic rows are the machine's yardstick, not compared.
    """
    before = {r.key: r for r in old}
    out: list[Change] = []
    for r in new:
        o = before.get(r.key)
        if o is None or r.path == "bicubic" or o.ms <= 0:
            continue
        thr = max(NOISE_FLOOR, 2.0 * (r.spread + o.spread))
        ratio = r.ms / o.ms
        verdict = "regression" if ratio > 1 + thr else "faster" if ratio < 1 / (1 + thr) else "same"
        out.append(Change(r.key, ratio, thr, verdict))
    return out


def change_marks(changes: Sequence[Change]) -> dict[tuple[Any, ...], str]:
    marks = {}
    for c in changes:
        text = f"{c.ratio:.2f}x time (noise {100 * c.threshold:.0f}%)"
        marks[c.key] = f"REGRESSION {text}" if c.verdict == "regression" else f"{c.verdict} {text}"
    return marks


__all__ = ["COLUMNS", "Change", "change_marks", "compare", "machine", "read_json", "table", "write_json"]
