"""Pad, run, crop: running a network on an LR image of any size.

A generator may need LR sizes that are multiples of its ``size_multiple`` (a flow's levels halve the size ``L``
times). :func:`run_padded` pads the LR at the bottom and right (by reflection; by replication where the image is
too small to reflect), runs the network and crops the output back to ``scale`` times the original size. Inference,
the fidelity validators and ``SRFlowNet.forward`` all run through it.
"""

from __future__ import annotations

from typing import Any, Callable

import torch.nn.functional as F
from torch import Tensor


def pad_to_multiple(x: Tensor, multiple: int) -> tuple[Tensor, tuple[int, int]]:
    """Pad (B, C, h, w) at the bottom/right to multiples of ``multiple`` (reflection; replication where the
    image is too small to reflect). Returns the padded tensor and the (bottom, right) padding."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x, (0, 0)
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode), (ph, pw)


def run_padded(
    model: Callable[[Tensor], Tensor] | Any,
    lr: Tensor,
    *,
    multiple: int | None = None,
    scale: int | None = None,
) -> Tensor:
    """``model(lr)`` for an LR batch (B, C, h, w) of any size: padded to a multiple of ``multiple`` (default
    ``model.size_multiple``, else 1), run, and cropped to ``scale`` (default ``model.scale``) times (h, w).

    Raises ValueError when the output is not a (B, C, scale·H, scale·W) batch of the padded (H, W). Not clamped.
    """
    m = max(1, int(multiple if multiple is not None else getattr(model, "size_multiple", 1) or 1))
    s = int(scale if scale is not None else getattr(model, "scale", 1) or 1)
    h, w = int(lr.shape[-2]), int(lr.shape[-1])
    padded, (ph, pw) = pad_to_multiple(lr, m)
    out = model(padded)
    if out.dim() != 4 or tuple(out.shape[-2:]) != (padded.shape[-2] * s, padded.shape[-1] * s):
        raise ValueError(f"returned shape {tuple(out.shape)} for input {tuple(padded.shape)} (scale {s})")
    return out[..., : h * s, : w * s] if (ph or pw) else out


__all__ = ["pad_to_multiple", "run_padded"]
