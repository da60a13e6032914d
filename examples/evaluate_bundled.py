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
from restorekit import interpolate_latents, transfer_latents, zeros_like_latents
from restorekit.infer import quantize, upsample_bicubic
from restorekit import Sample, SRSamples, ValidationContext
from restorekit_validators import psnr, ssim
from restorekit_validators.likelihood import NLL
from restorekit_validators.srspace import LRPSNR, Diversity, DiversityParams

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


# ----------------------------------------------------------------------------------------------------
# SR-space measures (NTIRE 2021 "Learning the SR space"): LR-consistency, L1 diversity, held-out NLL, NaN draws


CTX = ValidationContext(device=torch.device("cpu"), scale=SCALE)
LR_PSNR = LRPSNR()                                     # NTIRE'21: both downscaled 4x with imresize, uint8, RGB
DIVERSITY_L1 = Diversity(DiversityParams(distance="l1"))  # NTIRE'21's score with a per-pixel L1 distance
NLL_8BIT = NLL()                                       # bits/dim of the dequantised 8-bit image (seed 0)


@torch.no_grad()
def sample(model: Any, lr: torch.Tensor, temperature: float, seed: int) -> torch.Tensor:
    """One raw draw (3, H, W) of a flow at ``temperature`` with ``seed`` (the mean image at 0), not clamped: no NaN
    ladder, so that non-finite draws are counted (LR sides must be multiples of ``model.size_multiple``)."""
    g = torch.Generator().manual_seed(seed) if temperature else None
    return model.decode(lr[None], temperature=temperature, generator=g, nan_ladder=None)[0]  # type: ignore[no-any-return]


@torch.no_grad()
def sr_space(
    model: Any, pairs: list[tuple[str, torch.Tensor, torch.Tensor]], temperature: float, samples: int = 5
) -> list[dict[str, Any]]:
    """Per image at ``temperature``: PSNR-Y of seed 0, LR-PSNR of every draw (min and mean), L1 diversity over
    ``samples`` draws (seeds 0..N-1), and how many draws had a non-finite pixel."""
    rows = []
    for name, hr, lr in pairs:
        draws = [sample(model, lr, temperature, seed) for seed in range(samples if temperature > 0 else 1)]
        finite = [d for d in draws if torch.isfinite(d).all()]
        item = SRSamples(name, lr[None], hr[None], finite)
        lrp = LR_PSNR.score(item, CTX) if finite else {"lr_psnr": math.nan, "lr_psnr_min": math.nan}
        rows.append({
            "image": name,
            "psnr_y": metrics(draws[0], hr, with_ssim=False)["psnr_y"] if finite else math.nan,
            "lr_psnr_min": lrp["lr_psnr_min"],
            "lr_psnr_mean": lrp["lr_psnr"],
            "diversity_l1": DIVERSITY_L1.score(item, CTX)["diversity_l1"] if len(finite) > 1 else 0.0,
            "nonfinite": len(draws) - len(finite),
        })
    return rows


def nll_bits_per_dim(model: Any, pairs: list[tuple[str, torch.Tensor, torch.Tensor]]) -> list[float]:
    """Held-out NLL of each HR image given its LR: the ``nll`` validator's bits per dimension (the 8-bit
    convention, dequantised with seed-0 uniform noise; docs/evaluation.md)."""
    samples = [Sample(name, lr[None], hr[None]) for name, hr, lr in pairs]
    return [r["nll"] for r in NLL_8BIT(model, samples, CTX).per_image]


@torch.no_grad()
def nonfinite_draws(model: Any, lr: torch.Tensor, temperature: float, draws: int = 100, batch: int = 10) -> int:
    """How many of ``draws`` raw samples (no NaN ladder; seed 0, in batches of ``batch`` copies of ``lr``) hold a
    non-finite pixel."""
    g, bad = torch.Generator().manual_seed(0), 0
    for _ in range(draws // batch):
        out = model.decode(lr[None].expand(batch, -1, -1, -1), temperature=temperature, generator=g, nan_ladder=None)
        bad += int((~torch.isfinite(out).flatten(1).all(1)).sum())
    return bad


# ----------------------------------------------------------------------------------------------------
# latent tools (restore-run's latent_transfer and interpolate modes, examples/srflow_latents.toml)

REFERENCE = IMAGES / "reference.png"


def hr_lr(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """An HR image (3, H, W) cropped top-left to a multiple of 8, and its 4x bicubic LR."""
    h, w = (rgb.shape[-2] // MULTIPLE) * MULTIPLE, (rgb.shape[-1] // MULTIPLE) * MULTIPLE
    hr = rgb[:, :h, :w]
    return hr, downsample(hr[None], SCALE, "bicubic")[0]


def high_pass(x: torch.Tensor) -> torch.Tensor:
    """What 4x bicubic down- and upsampling removes from ``x`` (3, H, W): its high frequencies."""
    return x - upsample_bicubic(downsample(x[None], SCALE, "bicubic", clamp=False), SCALE)[0]


@torch.no_grad()
def latent_transfer(model: Any, pairs: list[tuple[str, torch.Tensor, torch.Tensor]],
                    reference: torch.Tensor) -> list[dict[str, Any]]:
    """Latent transfer at latent scale 1 (restore-run's ``latent_transfer``: the reference's latents, centre-cropped
    to each target, decoded with the target's LR), raw (no NaN ladder). Per image: whether the decode is finite;
    ``hf_gain``, the RMS of its high frequencies over the temperature-0 image's; ``hf_corr``, the pixel correlation
    of the high frequencies it adds to the temperature-0 image with the reference's own high frequencies over the
    same centre crop (channel means): above 0 when the reference's texture lands where it was in the reference."""
    ref_hr, ref_lr = hr_lr(reference)
    ref_latents = model.encode(ref_hr[None], ref_lr[None]).latents
    rows = []
    for name, hr, lr in pairs:
        latents = transfer_latents(ref_latents, model.latent_shapes(lr[None].shape))
        out = model.decode(lr[None], latents=latents, nan_ladder=None)[0]
        mean = model(lr[None])[0]
        finite = bool(torch.isfinite(out).all())
        h, w = hr.shape[-2:]
        top, left = (ref_hr.shape[-2] - h) // 2 // 8 * 8, (ref_hr.shape[-1] - w) // 2 // 8 * 8
        ref_hf = high_pass(ref_hr[:, top : top + h, left : left + w]).mean(0).flatten()
        added = (high_pass(quantize(out, 8)) - high_pass(quantize(mean, 8))).mean(0).flatten() if finite else None
        rows.append({
            "image": name,
            "finite": finite,
            "hf_gain": float(high_pass(quantize(out, 8)).pow(2).mean().sqrt() / high_pass(quantize(mean, 8)).pow(2).mean().sqrt())
            if finite else math.nan,
            "hf_corr": float(torch.corrcoef(torch.stack([added, ref_hf]))[0, 1]) if added is not None else math.nan,
        })
    return rows


@torch.no_grad()
def interpolation_steps(model: Any, hr: torch.Tensor, lr: torch.Tensor, reference: torch.Tensor | None = None,
                        frames: int = 8, mode: str = "slerp") -> list[float]:
    """restore-run's ``interpolate``: from the reference's transferred latents (or zeros) to the image's own, in
    ``frames`` steps, decoded raw; the mean absolute difference (8-bit images, in grey levels) between consecutive
    frames. NaN for a step that touches a non-finite frame."""
    target = model.encode(hr[None], lr[None]).latents
    if reference is not None:
        ref_hr, ref_lr = hr_lr(reference)
        start = transfer_latents(model.encode(ref_hr[None], ref_lr[None]).latents, [tuple(z.shape) for z in target])
    else:
        start = zeros_like_latents(target)
    outs = [quantize(model.decode(lr[None], latents=f, nan_ladder=None)[0], 8) * 255
            for f in interpolate_latents(start, target, frames, mode)]  # type: ignore[arg-type]
    return [float((b - a).abs().mean()) for a, b in zip(outs, outs[1:])]


def sr_space_table(rows_by_t: dict[float, list[dict[str, Any]]]) -> str:
    lines = ["| T | image | PSNR-Y | LR-PSNR min | LR-PSNR mean | diversity L1 | non-finite draws |",
             "|---|---|---|---|---|---|---|"]
    for t, rows in rows_by_t.items():
        for r in rows:
            lines.append(f"| {t:g} | {r['image']} | {r['psnr_y']:.2f} | {r['lr_psnr_min']:.2f} | "
                         f"{r['lr_psnr_mean']:.2f} | {r['diversity_l1']:.2f} | {r['nonfinite']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help="checkpoint files (default: the two bundled models)")
    parser.add_argument("--temperature", type=float, default=0.0, help="flows: decode temperature (default 0)")
    parser.add_argument("--sr-space", type=float, nargs="*", metavar="T",
                        help="flows: the SR-space table (LR-PSNR, L1 diversity, NLL) at these temperatures instead")
    parser.add_argument("--samples", type=int, default=5, help="--sr-space: draws per image (default 5)")
    parser.add_argument("--latents", action="store_true",
                        help="flows: latent transfer from images/reference.png and interpolation, on val/")
    args = parser.parse_args()
    torch.set_num_threads(1)
    models = args.models or [
        str(Path(restorekit.__file__).parent / "models" / f"bundled-{n}-x4.safetensors") for n in ("rrdb", "srflow")
    ]
    pairs = {g: eval_pairs(folder) for g, folder in GROUPS.items()}
    for path in models:
        model = restorekit.load(path)
        print(f"\n### {Path(path).name}\n")
        if args.latents and hasattr(model, "encode"):
            reference = read_image(REFERENCE).rgb
            for r in latent_transfer(model, pairs["natural"], reference):
                print(f"transfer {r['image']}: finite {r['finite']}, high-frequency RMS x{r['hf_gain']:.2f} of "
                      f"temperature 0, correlation with the reference's high frequencies {r['hf_corr']:.3f}")
            for name, hr, lr in pairs["natural"]:
                for ref in (None, reference):
                    steps = interpolation_steps(model, hr, lr, ref, mode="linear")  # as the example
                    print(f"interpolate {name} from {'reference' if ref is not None else 'zeros'}: frame-to-frame "
                          f"mean |difference| " + ", ".join(f"{d:.2f}" for d in steps))
            continue
        if args.sr_space is not None and hasattr(model, "encode"):
            natural = pairs["natural"]
            print(sr_space_table({t: sr_space(model, natural, t, args.samples) for t in args.sr_space}))
            nll = nll_bits_per_dim(model, natural)
            print("\nheld-out NLL (bits/dim): " + ", ".join(f"{n}: {v:.4f}" for (n, _, _), v in zip(natural, nll))
                  + f"; mean {sum(nll) / len(nll):.4f}")
            continue
        for group, p in pairs.items():
            print(table(group, measure(model, p, args.temperature)) + "\n")


if __name__ == "__main__":
    main()
