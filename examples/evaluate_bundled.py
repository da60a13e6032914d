"""Measure models against bicubic on the held-out bundled images: the quality table of docs/models.md.

    python examples/evaluate_bundled.py                        # the two bundled models
    python examples/evaluate_bundled.py runs/x/generator.safetensors --temperature 0

Each HR image (examples/images/val: natural, examples/images/smooth: smooth and saturated) is cropped at the top left
to a multiple of 8 pixels and downsampled 4x with restorekit's bicubic (MATLAB imresize, antialiased), as in
training and in ``[infer] input_is_hr``. The baseline is bicubic upsampling of that LR (the reports' baseline).
Outputs are clamped and rounded to 8 bits (what a written PNG holds); PSNR and SSIM skip a 4-pixel border.
The test tests/test_bundled_models.py checks the same numbers.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import torch

import restorekit
from restorekit.data.io import read_image
from restorekit.data.resize import downsample
from restorekit.infer import quantize, upsample_bicubic
from restorekit_validators import psnr, ssim

IMAGES = Path(__file__).parent / "images"
GROUPS = {"natural": IMAGES / "val", "smooth": IMAGES / "smooth"}
SCALE = 4
MULTIPLE = 8


def eval_pairs(folder: Path) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """``(name, hr, lr)`` of every PNG in ``folder``: HR (3, H, W) cropped to a multiple of 8, LR its 4x bicubic."""
    pairs = []
    for path in sorted(folder.glob("*.png")):
        rgb = read_image(path).rgb
        h, w = (rgb.shape[-2] // MULTIPLE) * MULTIPLE, (rgb.shape[-1] // MULTIPLE) * MULTIPLE
        hr = rgb[:, :h, :w]
        pairs.append((path.name, hr, downsample(hr[None], SCALE, "bicubic")[0]))
    return pairs


def metrics(sr: torch.Tensor, hr: torch.Tensor, with_ssim: bool = True) -> dict[str, float]:
    """PSNR-Y, PSNR-RGB (and SSIM-Y) of ``sr`` rounded to 8 bits against ``hr`` ((3, H, W) in [0, 1])."""
    a, b = quantize(sr.float(), 8).permute(1, 2, 0).double().numpy(), hr.permute(1, 2, 0).double().numpy()
    out = {"psnr_y": psnr(a, b, channel="y", crop_border=SCALE), "psnr_rgb": psnr(a, b, channel="rgb", crop_border=SCALE)}
    if with_ssim:
        out["ssim_y"] = ssim(a, b, channel="y", crop_border=SCALE)
    return out


@torch.no_grad()
def measure(
    model: Any, pairs: list[tuple[str, torch.Tensor, torch.Tensor]], temperature: float = 0.0, with_ssim: bool = True
) -> list[dict[str, Any]]:
    """Per image: the metrics of bicubic and of ``model`` (flows decode at ``temperature`` with seed 0)."""
    rows = []
    for name, hr, lr in pairs:
        if hasattr(model, "decode") and temperature > 0:
            sr = model(lr[None], temperature=temperature, generator=torch.Generator().manual_seed(0))
        else:
            sr = model(lr[None])
        rows.append({
            "image": name,
            "bicubic": metrics(upsample_bicubic(lr[None], SCALE)[0], hr, with_ssim),
            "model": metrics(sr[0], hr, with_ssim),
        })
    return rows


def mean(rows: list[dict[str, Any]], who: str, key: str) -> float:
    return sum(r[who][key] for r in rows) / len(rows)


def table(title: str, rows: list[dict[str, Any]]) -> str:
    def f(v: float, d: int = 2) -> str:
        return "inf" if math.isinf(v) else f"{v:.{d}f}"

    lines = [
        f"| {title} | PSNR-Y bicubic | PSNR-Y model | PSNR-RGB bicubic | PSNR-RGB model | SSIM-Y bicubic | SSIM-Y model |",
        "|---|---|---|---|---|---|---|",
    ]
    keys = rows[0]["model"].keys()
    average = {"image": "**mean**", **{who: {k: mean(rows, who, k) for k in keys} for who in ("bicubic", "model")}}
    for r in [*rows, average]:
        b, m = r["bicubic"], r["model"]
        lines.append(f"| {r['image']} | {f(b['psnr_y'])} | {f(m['psnr_y'])} | {f(b['psnr_rgb'])} | {f(m['psnr_rgb'])} | "
                     f"{f(b['ssim_y'], 4)} | {f(m['ssim_y'], 4)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help="checkpoint files (default: the two bundled models)")
    parser.add_argument("--temperature", type=float, default=0.0, help="flows: decode temperature (default 0)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    models = args.models or [
        str(Path(restorekit.__file__).parent / "models" / f"bundled-{n}-x4.safetensors") for n in ("rrdb", "srflow")
    ]
    pairs = {g: eval_pairs(folder) for g, folder in GROUPS.items()}
    for path in models:
        model = restorekit.load(path)
        print(f"\n### {Path(path).name}\n")
        for group, p in pairs.items():
            print(table(group, measure(model, p, args.temperature)) + "\n")


if __name__ == "__main__":
    main()
