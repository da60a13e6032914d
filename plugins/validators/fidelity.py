"""PSNR and SSIM between SR and HR images, as SR papers report them (scikit-image underneath).

Images are float arrays of shape (H, W, C) with values in [0, 1] (C = 3 for RGB, or 1). Options:

* ``channel="rgb"``: all channels; ``channel="y"``: the luma Y of YCbCr (ITU-R BT.601, as MATLAB's
  ``rgb2ycbcr``): ``Y = 16/255 + (65.481 R + 128.553 G + 24.966 B) / 255``, in [16/255, 235/255];
  a one-channel image is used as it is.
* ``crop_border``: pixels removed from every side before measuring (SR papers crop ``scale`` pixels).

The validators :class:`PSNR` and :class:`SSIM` run ``model(lq)`` for each :class:`~restorekit.components.Sample`,
clamp the SR image to [0, 1] and compare it with ``hq``; ``crop_border = None`` there means ``ctx.scale``.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from restorekit.components import Params, Sample, ValidationContext, ValidationResult
from restorekit.errors import UserError
from torch import Tensor

Channel = Literal["rgb", "y"]
_Y_WEIGHTS = np.array([65.481, 128.553, 24.966]) / 255.0


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """Y of YCbCr (BT.601, MATLAB ``rgb2ycbcr``) of an (H, W, 3) RGB image in [0, 1]; returns (H, W) in
    [16/255, 235/255]. An (H, W, 1) image is returned as (H, W) unchanged."""
    if img.ndim != 3 or img.shape[2] not in (1, 3):
        raise ValueError(f"expected an (H, W, 3) or (H, W, 1) image, got shape {img.shape}")
    if img.shape[2] == 1:
        return img[..., 0]
    return 16.0 / 255.0 + img @ _Y_WEIGHTS


def _prepare(sr: np.ndarray, hr: np.ndarray, channel: Channel, crop_border: int) -> tuple[np.ndarray, np.ndarray]:
    sr, hr = np.asarray(sr, dtype=np.float64), np.asarray(hr, dtype=np.float64)
    if sr.shape != hr.shape:
        raise ValueError(f"sr and hr shapes differ: {sr.shape} vs {hr.shape}")
    if sr.ndim != 3:
        raise ValueError(f"expected (H, W, C) images, got shape {sr.shape}")
    if crop_border < 0:
        raise ValueError(f"crop_border must be >= 0, got {crop_border}")
    if crop_border:
        if 2 * crop_border >= min(sr.shape[:2]):
            raise ValueError(f"crop_border {crop_border} leaves nothing of a {sr.shape[0]}x{sr.shape[1]} image")
        sr = sr[crop_border:-crop_border, crop_border:-crop_border]
        hr = hr[crop_border:-crop_border, crop_border:-crop_border]
    if channel == "y":
        return rgb_to_y(sr), rgb_to_y(hr)
    if channel != "rgb":
        raise ValueError(f"channel must be 'rgb' or 'y', got {channel!r}")
    return sr, hr


def psnr(sr: np.ndarray, hr: np.ndarray, *, channel: Channel = "rgb", crop_border: int = 0) -> float:
    """Peak signal-to-noise ratio in dB, ``10 log10(1 / MSE)``, of two (H, W, C) images in [0, 1].

    The MSE is taken over all kept pixels and channels (after ``crop_border`` and, for ``channel="y"``,
    the conversion to Y). Identical images give ``inf``.
    """
    a, b = _prepare(sr, hr, channel, crop_border)
    if np.array_equal(a, b):
        return math.inf
    from skimage.metrics import peak_signal_noise_ratio

    return float(peak_signal_noise_ratio(b, a, data_range=1.0))


def ssim(sr: np.ndarray, hr: np.ndarray, *, channel: Channel = "rgb", crop_border: int = 0) -> float:
    """Structural similarity of two (H, W, C) images in [0, 1]; 1 for identical images, at most 1.

    Computed as SR papers do (Wang et al. 2004): 11x11 Gaussian window with sigma 1.5, population
    covariances, K1 = 0.01, K2 = 0.03, data range 1, the SSIM map averaged over the valid region and, for RGB,
    over the channels. Images must be at least 11x11 after ``crop_border``.
    """
    from skimage.metrics import structural_similarity

    a, b = _prepare(sr, hr, channel, crop_border)
    if min(a.shape[:2]) < 11:
        raise ValueError(f"SSIM needs images of at least 11x11 pixels, got {a.shape[0]}x{a.shape[1]}")
    return float(
        structural_similarity(
            b, a, data_range=1.0, channel_axis=None if a.ndim == 2 else 2,
            gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
        )
    )


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
    """``model(lq)`` clamped to [0, 1]; an LR size that is not a multiple of ``model.size_multiple`` is padded
    by reflection at the bottom/right and the result cropped back to ``scale`` times the LR size."""
    multiple = int(getattr(model, "size_multiple", 1) or 1)
    h, w = lq.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"  # reflection needs a pad smaller than the size
        lq = F.pad(lq, (0, pw, 0, ph), mode=mode)
    sr = model(lq)
    if ph or pw:
        sr = sr[..., : h * scale, : w * scale]
    return sr.clamp(0.0, 1.0)


class _FidelityValidator:
    """Runs the model on each sample and averages one metric over the images."""

    metric: str

    def __init__(self, params: FidelityParams | None = None) -> None:
        self.params = params if params is not None else FidelityParams()
        self.key = self.metric if self.params.channel == "rgb" else f"{self.metric}_y"

    def __call__(self, model: Any, samples: Iterable[Sample], ctx: ValidationContext) -> ValidationResult:
        """Per-image rows ``{"name", <key>}`` and ``{<key>: mean}``; the key is ``psnr``/``ssim`` or, for the
        Y channel, ``psnr_y``/``ssim_y``. The model is run in eval mode under ``torch.no_grad()``."""
        crop = self.params.crop_border if self.params.crop_border is not None else ctx.scale
        scale = int(getattr(model, "scale", ctx.scale))
        was_training = bool(getattr(model, "training", False))
        if isinstance(model, torch.nn.Module):
            model.eval()
        rows: list[dict[str, Any]] = []
        try:
            with torch.no_grad():
                for sample in samples:
                    sr = super_resolve(model, sample.lq.to(ctx.device), scale)
                    rows.append({"name": sample.name, self.key: self._measure(sample, sr, crop)})
        finally:
            if isinstance(model, torch.nn.Module):
                model.train(was_training)
        metrics = {self.key: float(np.mean([r[self.key] for r in rows]))} if rows else {}
        return ValidationResult(metrics, rows)

    def _measure(self, sample: Sample, sr: Tensor, crop: int) -> float:
        hq = sample.hq
        if sr.shape[0] != hq.shape[0] or sr.shape[1] != hq.shape[1]:
            raise UserError(
                f"{self.metric}: sample {sample.name!r}: SR has shape {tuple(sr.shape)}, HQ {tuple(hq.shape)}"
            )
        if sr.shape[-2:] != hq.shape[-2:]:
            raise UserError(
                f"{self.metric}: sample {sample.name!r}: SR is {sr.shape[-2]}x{sr.shape[-1]} but HQ is "
                f"{hq.shape[-2]}x{hq.shape[-1]} (crop HQ to a multiple of the scale)"
            )
        try:
            values = [self.compare(_to_hwc(s), _to_hwc(h), crop) for s, h in zip(sr, hq)]
        except ValueError as exc:
            raise UserError(f"{self.metric}: sample {sample.name!r}: {exc}") from None
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
