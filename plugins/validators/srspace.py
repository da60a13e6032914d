"""The SR-space validators of the NTIRE 2021 "Learning the Super-Resolution Space" protocol: ``lr_psnr`` (LR
consistency) and ``diversity`` (NTIRE's score over the N outputs of an image).

Both judge outputs as the challenge's scoring script reads them from files: every output is rounded to uint8 first
(``round(255 x)``), the ground truth is cropped top-left to a multiple of 8 (``crop_multiple``) and each output to the
ground truth's size. See docs/evaluation.md for the definitions and the order of operations.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field
from restorekit import Params, ScoringValidator, SRSamples, UserError, ValidationContext, imresize_uint8
from torch import Tensor


def to_uint8(x: Tensor) -> Tensor:
    """A (1, C, H, W) or (C, H, W) float image in [0, 1] as (C, H, W) uint8, ``round(255 x)`` (as a PNG writer)."""
    x = x[0] if x.dim() == 4 else x
    return (x.detach().float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)


def finite(x: Tensor) -> bool:
    return bool(torch.isfinite(x).all())


def ntire_crop(metric: str, item: SRSamples, multiple: int) -> tuple[Tensor, list[Tensor]]:
    """The ground truth cropped top-left to a multiple of ``multiple`` and the outputs cropped to its size (uint8);
    an output smaller than the cropped ground truth is a one-line error naming the image."""
    gt = to_uint8(item.hq)
    h, w = (gt.shape[-2] // multiple) * multiple, (gt.shape[-1] // multiple) * multiple
    if h == 0 or w == 0:
        raise UserError.at(metric, item.name, f"the ground truth ({gt.shape[-2]}x{gt.shape[-1]}) is smaller "
                           f"than {multiple} pixels")
    gt = gt[:, :h, :w]
    srs = []
    for i, sr in enumerate(item.srs):
        s = to_uint8(sr)
        if s.shape[0] != gt.shape[0] or s.shape[-2] < h or s.shape[-1] < w:
            raise UserError.at(metric, item.name, f"output {i} is {s.shape[-2]}x{s.shape[-1]} with {s.shape[0]} "
                               f"channels, the ground truth {h}x{w} with {gt.shape[0]} (after cropping to a multiple "
                               f"of {multiple})")
        srs.append(s[:, :h, :w])
    return gt, srs


def psnr_uint8(a: Tensor, b: Tensor) -> float:
    """PSNR (dB, peak 255) of two uint8 images over all their values; ``inf`` when they are equal."""
    mse = float(((a.double() - b.double()) ** 2).mean())
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


# ----------------------------------------------------------------------------------------------------
# lr_psnr


class LRPSNRParams(Params):
    """Params of the ``lr_psnr`` validator."""

    reference: Literal["hr", "lr"] = Field(
        "hr", description="'hr': against the ground truth downscaled the same way (NTIRE 2021); 'lr': against the "
        "LR input (SRFlow's 'LRC PSNR'), reported as lrc_psnr.")
    crop_multiple: int = Field(8, ge=1, description="The ground truth is cropped top-left to a multiple of this.")


class LRPSNR(ScoringValidator):
    """The ``lr_psnr`` validator: each output, downscaled by 1/scale with MATLAB's antialiased bicubic ``imresize``
    and rounded to uint8, against the ground truth downscaled the same way (or the LR input): PSNR over RGB.
    Per image: ``lr_psnr`` (mean over the outputs) and ``lr_psnr_min`` (the worst); ``lrc_`` for ``reference='lr'``."""

    def __init__(self, params: LRPSNRParams | None = None) -> None:
        self.params = params or LRPSNRParams()
        self.key = "lr_psnr" if self.params.reference == "hr" else "lrc_psnr"

    def score(self, item: SRSamples, ctx: ValidationContext) -> dict[str, float]:
        scale = int(ctx.scale)
        gt, srs = ntire_crop(self.key, item, self.params.crop_multiple)
        if self.params.reference == "hr":
            ref = imresize_uint8(gt, 1.0 / scale)
        else:
            lr = to_uint8(item.lq)
            h, w = math.ceil(gt.shape[-2] / scale), math.ceil(gt.shape[-1] / scale)
            if lr.shape[-2] < h or lr.shape[-1] < w:
                raise UserError.at(self.key, item.name, f"the LR input is {lr.shape[-2]}x{lr.shape[-1]}, not "
                                   f"1/{scale} of the ground truth ({gt.shape[-2]}x{gt.shape[-1]})")
            ref = lr[:, :h, :w]
        values = [psnr_uint8(imresize_uint8(sr, 1.0 / scale), ref) if finite(o) else math.nan
                  for sr, o in zip(srs, item.srs)]
        return {self.key: sum(values) / len(values), f"{self.key}_min": min(values)}


def build_lr_psnr(params: LRPSNRParams) -> LRPSNR:
    return LRPSNR(params)


# ----------------------------------------------------------------------------------------------------
# diversity


class DiversityParams(Params):
    """Params of the ``diversity`` validator."""

    distance: Literal["lpips", "l1"] = Field(
        "lpips", description="Per-pixel distance to the ground truth: 'lpips' (the spatial LPIPS map, NTIRE 2021) or "
        "'l1' (mean absolute error over the channels; needs no weights). Names the metric: diversity_<distance>.")
    crop_multiple: int = Field(8, ge=1, description="The ground truth is cropped top-left to a multiple of this.")
    trunk: Path | None = Field(None, description="distance 'lpips': the AlexNet weights (see the lpips validator).")
    linear: Path | None = Field(None, description="distance 'lpips': the LPIPS v0.1 linear layers.")


def diversity_score(maps: Tensor) -> float:
    """NTIRE 2021's diversity score of one image from its (N, H, W) per-pixel distance maps: global best
    ``G = min_i mean(map_i)``, local best ``L = mean(min_i map_i)``, ``100 (G - L) / G`` (0 when G is 0)."""
    maps = maps.double()
    g = float(maps.flatten(1).mean(1).min())
    loc = float(maps.min(0).values.mean())
    if not (math.isfinite(g) and math.isfinite(loc)):
        return math.nan
    return 0.0 if g == 0 else 100.0 * (g - loc) / g


def l1_map(sr: Tensor, gt: Tensor) -> Tensor:
    """(H, W): the mean over channels of ``|sr - gt|`` of two uint8 images, on the [0, 1] scale."""
    return (sr.double() - gt.double()).abs().mean(0) / 255.0


class Diversity(ScoringValidator):
    """The ``diversity`` validator: NTIRE 2021's diversity score of an image's N outputs
    (:func:`diversity_score`), per image and averaged over the images; ``diversity_lpips`` or ``diversity_l1``."""

    def __init__(self, params: DiversityParams | None = None) -> None:
        self.params = params or DiversityParams()
        self.key = f"diversity_{self.params.distance}"
        self.lpips = None
        if self.params.distance == "lpips":
            from .lpips import load_lpips

            self.lpips = load_lpips(self.params.trunk, self.params.linear, who="diversity")

    def score(self, item: SRSamples, ctx: ValidationContext) -> dict[str, float]:
        gt, srs = ntire_crop(self.key, item, self.params.crop_multiple)
        if not all(finite(o) for o in item.srs):
            return {self.key: math.nan}
        if self.lpips is not None:
            from .lpips import check_size

            check_size(self.key, item.name, gt)
            maps = torch.stack([self.lpips.distance_map(sr, gt) for sr in srs])
        else:
            maps = torch.stack([l1_map(sr, gt) for sr in srs])
        return {self.key: diversity_score(maps)}


def build_diversity(params: DiversityParams) -> Diversity:
    return Diversity(params)
