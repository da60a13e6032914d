"""Generated inputs for the checks: smooth random images, validation samples, image folders, a training state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..components import Sample


def smooth_images(n: int, channels: int, size: int, seed: int) -> Tensor:
    """Smooth random images in [0, 1] (noise upsampled from 1/4 size), like photos to a restorer."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, channels, max(size // 4, 2), max(size // 4, 2), generator=gen)
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)


def make_samples(n: int = 2, *, scale: int = 2, size: int = 32, channels: int = 3, seed: int = 0) -> list[Sample]:
    """``n`` validation samples: smooth random HQ (1,C,size,size) and its area-downsampled LQ."""
    hq = smooth_images(n, channels, size, seed)
    lq = F.interpolate(hq, scale_factor=1 / scale, mode="area")
    return [Sample(f"kit_{i}", lq[i : i + 1], hq[i : i + 1]) for i in range(n)]


def write_images(folder: str | Path, n: int = 4, *, size: int = 32, seed: int = 0) -> Path:
    """Write ``n`` smooth random RGB PNGs into ``folder``; returns the folder."""
    from ..data.io import write_image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(smooth_images(n, 3, size, seed)):
        write_image(folder / f"kit_{i}.png", img)
    return folder


def tiny_state(*, scale: int = 2, batch: int = 2, size: int = 16, seed: int = 0) -> dict[str, Any]:
    """A training state as the trainer makes it: ``hq``, ``lq`` and an ``sr`` that requires grad."""
    hq = smooth_images(batch, 3, size, seed)
    lq = F.interpolate(hq, scale_factor=1 / scale, mode="area")
    sr = F.interpolate(lq, scale_factor=scale, mode="bilinear", align_corners=False).requires_grad_(True)
    return {"hq": hq, "lq": lq, "sr": sr}

