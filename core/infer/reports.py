"""Reports of an inference run on HR inputs: PSNR/SSIM per output (RGB and BT.601 Y) in ``metrics.md`` /
``metrics.json``, and the comparison grid ``comparison.png`` (bicubic | outputs | HR)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from .. import metrics
from ..data.io import to_array, write_image
from ..files import write_text
from .inputs import InputItem
from .slots import Slot

GAP = 4


def image_metrics(sr: Tensor, hr: Tensor, border: int) -> dict[str, float]:
    """PSNR (dB) and SSIM of ``sr`` vs ``hr`` ((3, H, W) in [0, 1]) on RGB and on BT.601 Y, with ``border``
    pixels cropped on every side (:mod:`restorekit.metrics`). A value that is undefined (the border leaves
    nothing, or an image smaller than SSIM's 11x11 window) is NaN, shown as "n/a"."""
    a = hr.detach().double().cpu().permute(1, 2, 0).numpy()
    b = sr.detach().double().cpu().permute(1, 2, 0).numpy()
    out: dict[str, float] = {}
    for name, fn in (("psnr", metrics.psnr), ("ssim", metrics.ssim)):
        for channel in ("rgb", "y"):
            try:
                out[f"{name}_{channel}"] = fn(b, a, channel=channel, crop_border=border)  # type: ignore[arg-type]
            except ValueError:
                out[f"{name}_{channel}"] = math.nan
    return {k: out[k] for k in ("psnr_rgb", "psnr_y", "ssim_rgb", "ssim_y")}


def _fmt(v: float, digits: int) -> str:
    if math.isnan(v):
        return "n/a"
    if math.isinf(v):
        return "inf"
    return f"{v:.{digits}f}"


def _json_num(v: float) -> float | None:
    return v if math.isfinite(v) else None


@dataclass
class Reports:
    """Metric rows and comparison-grid rows collected during a run (``input_is_hr`` only)."""

    border: int
    restore: bool = False
    """restore mode: the reference is each degraded input itself (there is no clean HR image)."""
    rows: list[dict[str, Any]] = field(default_factory=list)
    grid: list[np.ndarray] = field(default_factory=list)

    def add(self, item: InputItem, hr: Tensor, bicubic: Tensor, outputs: Sequence[tuple[Slot, Tensor]]) -> None:
        self.rows.append({"image": item.path.name, "output": "bicubic", **image_metrics(bicubic, hr, self.border)})
        for slot, img in outputs:
            self.rows.append({"image": item.path.name, "output": slot.label, **image_metrics(img, hr, self.border)})
        tiles = [bicubic] + [img for slot, img in outputs if slot.in_grid] + [hr]
        self.grid.append(_hstack([to_array(t.clamp(0, 1), bits=8) for t in tiles]))

    def means(self) -> dict[str, dict[str, float]]:
        groups: dict[str, list[dict[str, Any]]] = {}
        for r in self.rows:
            groups.setdefault(r["output"], []).append(r)
        keys = ("psnr_rgb", "psnr_y", "ssim_rgb", "ssim_y")
        out: dict[str, dict[str, float]] = {}
        for label, rows in groups.items():
            vals = {k: [r[k] for r in rows if math.isfinite(r[k])] for k in keys}
            out[label] = {k: (float(np.mean(v)) if v else math.nan) for k, v in vals.items()}
        return out

    def write(self, out_dir: Path, suffix: str = "") -> list[Path]:
        if not self.rows:
            return []
        means = self.means()
        if self.restore:
            head = ("against the input images (restore mode: each degraded input is the reference, there is no "
                    "clean HR image; the numbers say how far each output moved from its input, not how good it is)")
            last = "the input"
        else:
            head, last = "against the HR images", "HR"
        md = [
            f"# PSNR / SSIM {head} (border {self.border} px cropped; Y = BT.601 luma)",
            "",
            f"Columns of comparison.png, left to right: bicubic, the outputs (first sample per temperature), {last}.",
            "",
            "| image | output | PSNR RGB (dB) | PSNR Y (dB) | SSIM RGB | SSIM Y |",
            "|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            md.append(f"| {r['image']} | {r['output']} | {_fmt(r['psnr_rgb'], 2)} | {_fmt(r['psnr_y'], 2)} | "
                      f"{_fmt(r['ssim_rgb'], 4)} | {_fmt(r['ssim_y'], 4)} |")
        md += ["", "| mean over images | PSNR RGB (dB) | PSNR Y (dB) | SSIM RGB | SSIM Y |", "|---|---|---|---|---|"]
        for label, m in means.items():
            md.append(f"| {label} | {_fmt(m['psnr_rgb'], 2)} | {_fmt(m['psnr_y'], 2)} | {_fmt(m['ssim_rgb'], 4)} | "
                      f"{_fmt(m['ssim_y'], 4)} |")
        paths = [out_dir / f"metrics{suffix}.md", out_dir / f"metrics{suffix}.json", out_dir / f"comparison{suffix}.png"]
        atomic_text(paths[0], "\n".join(md) + "\n", root=out_dir)
        data = {
            "border": self.border,
            "reference": "input" if self.restore else "hr",
            "rows": [{k: (_json_num(v) if isinstance(v, float) else v) for k, v in r.items()} for r in self.rows],
            "mean": {lbl: {k: _json_num(v) for k, v in m.items()} for lbl, m in means.items()},
        }
        atomic_text(paths[1], json.dumps(data, indent=2) + "\n", root=out_dir)
        grid = _vstack(self.grid)
        write_image(paths[2], torch.from_numpy(grid).permute(2, 0, 1).float() / 255.0, bits=8, root=out_dir)
        return paths


def _hstack(images: Sequence[np.ndarray]) -> np.ndarray:
    h = max(i.shape[0] for i in images)
    parts = []
    for k, img in enumerate(images):
        img = img if img.ndim == 3 else np.repeat(img[..., None], 3, -1)
        pad = np.full((h, img.shape[1], 3), 255, np.uint8)
        pad[: img.shape[0]] = img[..., :3]
        parts.append(pad)
        if k + 1 < len(images):
            parts.append(np.full((h, GAP, 3), 255, np.uint8))
    return np.concatenate(parts, 1)


def _vstack(rows: Sequence[np.ndarray]) -> np.ndarray:
    w = max(r.shape[1] for r in rows)
    parts = []
    for k, r in enumerate(rows):
        pad = np.full((r.shape[0], w, 3), 255, np.uint8)
        pad[:, : r.shape[1]] = r
        parts.append(pad)
        if k + 1 < len(rows):
            parts.append(np.full((GAP, w, 3), 255, np.uint8))
    return np.concatenate(parts, 0)


def atomic_text(path: Path, text: str, *, root: Path | None = None) -> None:
    """Write ``text`` to ``path`` atomically (:func:`restorekit.files.write_text`)."""
    write_text(path, text, root=root)


__all__ = ["GAP", "Reports", "atomic_text", "image_metrics"]
