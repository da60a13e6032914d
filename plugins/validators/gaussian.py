"""The Gaussian-distance validator: how far a flow's latents of real HQ images are from N(0, 1).

For each validation image the flow encodes HQ given LQ; every latent element z contributes its Gaussian negative
log-density ``0.5 * (z² + ln 2π)``. The validator reports the mean over all elements (**not** logged; for latents
that really are N(0, 1) it is ``0.5 * (1 + ln 2π) ≈ 1.419``, lower is closer to the mean, higher means the flow
finds the images unlikely), the per-level mean and standard deviation of the latents (ideal 0 and 1), and the NLL in
bits per pixel. Optional heat maps show the per-pixel distance (mean over channels) of each latent level.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from pydantic import Field
from restorekit import Params, Sample, UserError, ValidationContext, ValidationResult, judging
from torch import Tensor

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
IDEAL = 0.5 + HALF_LOG_2PI
"""The expected value of ``0.5 * (z² + ln 2π)`` for z ~ N(0, 1): ≈ 1.4189."""


class GaussianDistanceParams(Params):
    """Params of the ``gaussian_distance`` validator."""

    heatmaps: int = Field(0, ge=0, description="Write per-pixel heat maps (PNG) for this many first images.")
    add_noise: bool = Field(False, description="Dequantisation noise on encode (official training: off).")


def neg_log_density(z: Tensor) -> Tensor:
    """Per-element Gaussian negative log-density ``0.5 * (z² + ln 2π)``."""
    return 0.5 * z.float() ** 2 + HALF_LOG_2PI


def crop_to_multiple(who: str, sample: Sample, multiple: int, scale: int) -> tuple[Tensor, Tensor]:
    """A sample's LQ cropped top-left to a multiple of the flow's size multiple, and its HQ to match."""
    lq, hq = sample.lq, sample.hq
    h, w = (lq.shape[-2] // multiple) * multiple, (lq.shape[-1] // multiple) * multiple
    if h == 0 or w == 0:
        raise UserError.at(who, sample.name, f"LQ of {lq.shape[-2]}x{lq.shape[-1]} is smaller than {multiple} pixels")
    return lq[..., :h, :w], hq[..., : h * scale, : w * scale]


def _heatmap(values: Tensor) -> np.ndarray:
    """(H, W) distances → uint8 RGB, normalised per map: blue at or below the ideal value, orange at the farthest."""
    v = (values - IDEAL).clamp(min=0)
    v = v / max(float(v.max()), 1e-8)
    gray = (v.cpu().numpy() * 255).round().astype(np.uint8)
    return np.stack([gray, (gray * 0.6).astype(np.uint8), 255 - gray], -1)


class GaussianDistance:
    """The ``gaussian_distance`` validator (needs a flow: ``model.encode(hr, lr)``)."""

    def __init__(self, params: GaussianDistanceParams | None = None) -> None:
        self.params = params or GaussianDistanceParams()

    def __call__(self, model: Any, samples: Iterable[Sample], ctx: ValidationContext) -> ValidationResult:
        """Encode every sample's HQ given its LQ (LQ cropped to ``model.size_multiple``, HQ to match) in eval mode
        without gradients. Metrics: ``gaussian_distance`` (mean over every latent element of every image),
        ``nll`` (mean bits per pixel), ``latent_mean_<i>``/``latent_std_<i>`` per latent level ``i`` (encode
        order: split latents first, top z last); one row per image. Heat maps (first ``heatmaps`` images, when
        ``ctx.output_dir`` is set): ``<output_dir>/gaussian_distance/<stem>_step<step>_level<i>.png``, the
        per-pixel mean over channels of the distance (blue at or below the ideal value, orange at the farthest)."""
        if not hasattr(model, "encode"):
            raise UserError(
                f"gaussian_distance: the validated network ({type(model).__name__}) is not a flow (no encode)"
            )
        scale = int(getattr(model, "scale", ctx.scale))
        multiple = int(getattr(model, "size_multiple", 1) or 1)
        rows: list[dict[str, Any]] = []
        total, count = 0.0, 0
        level_sum: dict[int, float] = {}
        level_sq: dict[int, float] = {}
        level_n: dict[int, int] = {}
        nll_sum, nll_n = 0.0, 0
        with judging(model):
            for index, sample in enumerate(samples):
                lq, hq = crop_to_multiple("gaussian_distance", sample, multiple, scale)
                enc = model.encode(hq.to(ctx.device), lq.to(ctx.device), add_noise=self.params.add_noise)
                dist = [neg_log_density(z) for z in enc.latents]
                img_sum = sum(float(d.sum()) for d in dist)
                img_n = sum(d.numel() for d in dist)
                total, count = total + img_sum, count + img_n
                for i, z in enumerate(enc.latents):
                    zf = z.float()
                    level_sum[i] = level_sum.get(i, 0.0) + float(zf.sum())
                    level_sq[i] = level_sq.get(i, 0.0) + float((zf * zf).sum())
                    level_n[i] = level_n.get(i, 0) + zf.numel()
                nll = float(enc.nll.float().mean())
                nll_sum, nll_n = nll_sum + nll * enc.nll.numel(), nll_n + enc.nll.numel()
                rows.append({"name": sample.name, "gaussian_distance": img_sum / img_n, "nll": nll})
                if index < self.params.heatmaps and ctx.output_dir is not None:
                    self._write_heatmaps(ctx.output_dir, sample.name, ctx.step, dist)
        if not rows:
            return ValidationResult({}, [])
        metrics = {"gaussian_distance": total / count, "nll": nll_sum / nll_n}
        for i in sorted(level_n):
            mean = level_sum[i] / level_n[i]
            metrics[f"latent_mean_{i}"] = mean
            metrics[f"latent_std_{i}"] = math.sqrt(max(level_sq[i] / level_n[i] - mean * mean, 0.0))
        return ValidationResult(metrics, rows)

    @staticmethod
    def _write_heatmaps(root: Path, name: str, step: int, dist: list[Tensor]) -> None:
        import imageio.v3 as iio

        folder = Path(root) / "gaussian_distance"
        folder.mkdir(parents=True, exist_ok=True)
        stem = Path(name).stem
        for i, d in enumerate(dist):
            iio.imwrite(folder / f"{stem}_step{step}_level{i}.png", _heatmap(d[0].mean(0)))


def build_gaussian_distance(params: GaussianDistanceParams) -> GaussianDistance:
    """The validator factory registered as ``gaussian_distance``."""
    return GaussianDistance(params)
