"""Per-item randomness, corruptions of LQ images (blur, noise, JPEG) and augmentations (flips, rotations).

Every random choice of a dataset item comes from :func:`item_rng` ``(seed, epoch, index)``.
"""

from __future__ import annotations

import math
from typing import Sequence

import imageio.v3 as iio
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import UserError
from ..spec import CorruptSpec



def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The random generator of one dataset item, a pure function of (seed, epoch, index)."""
    return np.random.default_rng([seed & 0xFFFFFFFFFFFFFFFF, epoch, index])


def gaussian_kernel(sigma: float) -> Tensor:
    """A normalised 1-D Gaussian of standard deviation ``sigma`` with radius ``ceil(3 sigma)``."""
    radius = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(img: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of a (C,H,W) image, reflect padding (replicate for tiny images)."""
    if sigma <= 0:
        return img
    k = gaussian_kernel(sigma).to(img)
    r = (k.numel() - 1) // 2
    c = img.shape[0]
    x = img[None]
    mode = "reflect" if min(img.shape[-2:]) > r else "replicate"
    x = F.pad(x, (r, r, r, r), mode=mode)
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    x = F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return x[0]


def jpeg(img: Tensor, quality: int) -> Tensor:
    """Re-encode a (3,H,W) image in [0,1] as JPEG of ``quality`` (1..100) through imageio and decode it."""
    arr = np.round(img.clamp(0, 1).permute(1, 2, 0).numpy() * 255.0).astype(np.uint8)
    data = iio.imwrite("<bytes>", arr, extension=".jpg", quality=int(quality))
    out = iio.imread(data, extension=".jpg")
    if out.ndim == 2:
        out = np.repeat(out[..., None], 3, axis=-1)
    return torch.from_numpy(np.ascontiguousarray(out[..., :3].transpose(2, 0, 1))).float() / 255.0


def check_corrupt(spec: CorruptSpec, where: str) -> None:
    """Reject ranges that make no sense for their corruption (one-line :class:`UserError`)."""
    if spec.blur is not None and spec.blur.low < 0:
        raise UserError(f"{where}.corrupt.blur.low: sigma must be >= 0 (got {spec.blur.low})")
    if spec.noise is not None and spec.noise.low < 0:
        raise UserError(f"{where}.corrupt.noise.low: sigma must be >= 0 (got {spec.noise.low})")
    if spec.jpeg is not None and not (1 <= spec.jpeg.low and spec.jpeg.high <= 100):
        raise UserError(f"{where}.corrupt.jpeg: quality must lie in 1..100 (got {spec.jpeg.low}..{spec.jpeg.high})")


def corrupt(img: Tensor, spec: CorruptSpec, rng: np.random.Generator) -> Tensor:
    """Apply blur, then noise, then JPEG to a (3,H,W) image, each with its probability and a value drawn
    uniformly from its range. Every draw is taken whether or not the corruption applies, so one choice does
    not shift the others."""
    for kind in ("blur", "noise", "jpeg"):
        r = getattr(spec, kind)
        if r is None:
            continue
        apply = rng.random() < r.p
        value = float(rng.uniform(r.low, r.high))
        noise_seed = int(rng.integers(0, 2**62))
        if not apply:
            continue
        if kind == "blur":
            img = gaussian_blur(img, value)
        elif kind == "noise":
            g = torch.Generator().manual_seed(noise_seed)
            img = (img + value * torch.randn(img.shape, generator=g)).clamp(0, 1)
        else:
            img = jpeg(img, int(round(min(max(value, 1.0), 100.0))))
    return img


# ----------------------------------------------------------------------------------------------------
# geometry helpers


def pad_to(img: Tensor, height: int, width: int) -> Tensor:
    """Pad a (C,H,W) image at the bottom/right to at least height x width (reflect, replicate if too small)."""
    ph, pw = max(0, height - img.shape[-2]), max(0, width - img.shape[-1])
    if not (ph or pw):
        return img
    mode = "reflect" if ph < img.shape[-2] and pw < img.shape[-1] else "replicate"
    return F.pad(img[None], (0, pw, 0, ph), mode=mode)[0]


def augment(imgs: Sequence[Tensor], rng: np.random.Generator, *, flip: bool, rot90: bool) -> list[Tensor]:
    """The same random horizontal flip and 90-degree rotation applied to every image (both draws always taken)."""
    do_flip = bool(rng.random() < 0.5)
    k = int(rng.integers(0, 4))
    out = list(imgs)
    if flip and do_flip:
        out = [t.flip(-1) for t in out]
    if rot90 and k:
        out = [torch.rot90(t, k, dims=(-2, -1)) for t in out]
    return [t.contiguous() for t in out]


__all__ = ["augment", "check_corrupt", "corrupt", "gaussian_blur", "gaussian_kernel", "item_rng", "jpeg", "pad_to"]
