"""PSNR and SSIM between SR and HR images, as SR papers report them (scikit-image underneath).

One implementation for everyone: the PSNR/SSIM validators (``restorekit_validators``) and the reports of
``restore-run`` (``metrics.md``/``metrics.json``) both measure with these functions.

Images are float arrays of shape (H, W, C) with values in [0, 1] (C = 3 for RGB, or 1). Options:

* ``channel="rgb"``: all channels; ``channel="y"``: the luma Y of YCbCr (ITU-R BT.601, as MATLAB's
  ``rgb2ycbcr``): ``Y = 16/255 + (65.481 R + 128.553 G + 24.966 B) / 255``, in [16/255, 235/255];
  a one-channel image is used as it is.
* ``crop_border``: pixels removed from every side before measuring (SR papers crop ``scale`` pixels).

Undefined cases raise ValueError: different shapes, a border that leaves nothing, and SSIM of an image smaller
than its 11x11 window (after the border). Callers decide what that means for them: a validator reports a
one-line user error, the inference reports write "n/a".
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

Channel = Literal["rgb", "y"]
SSIM_WINDOW = 11
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
    over the channels. Images must be at least 11x11 after ``crop_border`` (ValueError otherwise).
    """
    from skimage.metrics import structural_similarity

    a, b = _prepare(sr, hr, channel, crop_border)
    if min(a.shape[:2]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least 11x11 pixels, got {a.shape[0]}x{a.shape[1]}")
    return float(
        structural_similarity(
            b, a, data_range=1.0, channel_axis=None if a.ndim == 2 else 2,
            gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
        )
    )


__all__ = ["Channel", "SSIM_WINDOW", "psnr", "rgb_to_y", "ssim"]
