"""Image helpers of inference: the bicubic baseline, what a written image holds, animated GIFs."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.io import to_array
from ..files import atomic_write

GIF_FRAME_MS = 120


def upsample_bicubic(x: Tensor, scale: int) -> Tensor:
    """Bicubic ×scale (the baseline of the reports, and how alpha channels are upscaled), clamped to [0, 1]."""
    if scale == 1:
        return x.clone()
    return F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False).clamp(0, 1)


def write_gif(path: Path, frames: Sequence[Tensor], *, root: Path | None = None) -> None:
    """Animated GIF (looping, ``GIF_FRAME_MS`` per frame) of (3, H, W) frames in [0, 1], atomically
    (:func:`restorekit.files.atomic_write`; with ``root``, ``path`` must lie in that folder)."""
    import imageio.v3 as iio

    arr = np.stack([to_array(f, bits=8) for f in frames])
    atomic_write(path, lambda tmp: iio.imwrite(tmp, arr, extension=".gif", duration=GIF_FRAME_MS, loop=0),
                 root=root)


def quantize(x: Tensor, bits: int) -> Tensor:
    """What a written image holds: clamped to [0, 1] and rounded to 8 or 16 bits."""
    q = 65535.0 if bits == 16 else 255.0
    return torch.round(x.clamp(0, 1) * q) / q


__all__ = ["GIF_FRAME_MS", "quantize", "upsample_bicubic", "write_gif"]
