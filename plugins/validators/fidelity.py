"""The PSNR and SSIM validators; the metrics themselves are :mod:`restorekit.metrics`' (re-exported here).

Images are float arrays of shape (H, W, C) with values in [0, 1] (C = 3 for RGB, or 1). Options:

* ``channel="rgb"``: all channels; ``channel="y"``: the luma Y of YCbCr (ITU-R BT.601, as MATLAB's
  ``rgb2ycbcr``): ``Y = 16/255 + (65.481 R + 128.553 G + 24.966 B) / 255``, in [16/255, 235/255];
  a one-channel image is used as it is.
* ``crop_border``: pixels removed from every side before measuring (SR papers crop ``scale`` pixels).

The validators :class:`PSNR` and :class:`SSIM` judge every output of a :class:`~restorekit.Sample` (``model(lq)``,
or a flow's draws at ``ctx.temperature``), clamped to [0, 1], against ``hq``, and average over the outputs;
``crop_border = None`` there means ``ctx.scale``.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import torch
from pydantic import Field
from restorekit import (
    Params,
    Sample,
    ScoringValidator,
    SRSamples,
    UserError,
    ValidationContext,
    ValidationResult,
    metrics,
    run_padded,
)
from torch import Tensor

Channel = metrics.Channel
rgb_to_y = metrics.rgb_to_y
psnr = metrics.psnr
ssim = metrics.ssim


# ----------------------------------------------------------------------------------------------------
# validators


class FidelityParams(Params):
    """Options shared by the PSNR and SSIM validators."""

    channel: Channel = Field(
        "rgb", description="'rgb': all channels; 'y': the Y of YCbCr (BT.601, MATLAB rgb2ycbcr), as SR papers."
    )
    crop_border: int | None = Field(
        None,
        ge=0,
        description="Pixels removed from each side before measuring; unset: the scale (ValidationContext.scale).",
    )


class PSNRParams(FidelityParams):
    """Options of the ``psnr`` validator."""


class SSIMParams(FidelityParams):
    """Options of the ``ssim`` validator."""


def _to_hwc(t: Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float64).permute(1, 2, 0).numpy()


def super_resolve(model: Any, lq: Tensor, scale: int) -> Tensor:
    """``model(lq)`` clamped to [0, 1] for any LR size (:func:`restorekit.run_padded`: padded to a multiple of
    ``model.size_multiple`` at the bottom/right, cropped back to ``scale`` times the LR size)."""
    return run_padded(model, lq, scale=scale).clamp(0.0, 1.0)


class _FidelityValidator(ScoringValidator):
    """Averages one metric over every output of an image (one output at temperature 0), then over the images."""

    metric: str

    def __init__(self, params: FidelityParams | None = None) -> None:
        self.params = params if params is not None else FidelityParams()
        self.key = self.metric if self.params.channel == "rgb" else f"{self.metric}_y"

    def __call__(self, model: Any, samples: Iterable[Sample], ctx: ValidationContext) -> ValidationResult:
        """Per-image rows ``{"name", <key>}`` and ``{<key>: mean}``; the key is ``psnr``/``ssim`` or, for the
        Y channel, ``psnr_y``/``ssim_y``. The model is run in eval mode under ``torch.no_grad()``, at
        ``ctx.temperature`` with ``ctx.samples`` draws for a flow (:func:`restorekit.draw_outputs`); an image's
        value is the mean over its draws."""
        try:
            return super().__call__(model, samples, ctx)
        except UserError as exc:
            raise UserError.at(self.metric, None, exc) from None

    def score(self, item: SRSamples, ctx: ValidationContext) -> dict[str, float]:
        crop = self.params.crop_border if self.params.crop_border is not None else ctx.scale
        sample = Sample(item.name, item.lq, item.hq)
        return {self.key: float(np.mean([self._measure(sample, sr, crop) for sr in item.srs]))}

    def _measure(self, sample: Sample, sr: Tensor, crop: int) -> float:
        hq = sample.hq
        if sr.shape[0] != hq.shape[0] or sr.shape[1] != hq.shape[1]:
            raise UserError.at(self.metric, f"sample {sample.name!r}",
                               f"SR has shape {tuple(sr.shape)}, HQ {tuple(hq.shape)}")
        if sr.shape[-2:] != hq.shape[-2:]:
            raise UserError.at(self.metric, f"sample {sample.name!r}", f"SR is {sr.shape[-2]}x{sr.shape[-1]} but HQ "
                               f"is {hq.shape[-2]}x{hq.shape[-1]} (crop HQ to a multiple of the scale)")
        try:
            values = [self.compare(_to_hwc(s), _to_hwc(h), crop) for s, h in zip(sr, hq)]
        except ValueError as exc:
            raise UserError.at(self.metric, f"sample {sample.name!r}", exc) from None
        return float(np.mean(values))

    def compare(self, sr: np.ndarray, hr: np.ndarray, crop_border: int) -> float:
        """The metric of one (H, W, C) image pair in [0, 1]."""
        raise NotImplementedError


class PSNR(_FidelityValidator):
    """The ``psnr`` validator: mean PSNR (dB) over the samples, see :func:`psnr`."""

    metric = "psnr"

    def __init__(self, params: PSNRParams | None = None) -> None:
        super().__init__(params if params is not None else PSNRParams())

    def compare(self, sr: np.ndarray, hr: np.ndarray, crop_border: int) -> float:
        return psnr(sr, hr, channel=self.params.channel, crop_border=crop_border)


class SSIM(_FidelityValidator):
    """The ``ssim`` validator: mean SSIM over the samples, see :func:`ssim`."""

    metric = "ssim"

    def __init__(self, params: SSIMParams | None = None) -> None:
        super().__init__(params if params is not None else SSIMParams())

    def compare(self, sr: np.ndarray, hr: np.ndarray, crop_border: int) -> float:
        return ssim(sr, hr, channel=self.params.channel, crop_border=crop_border)
