"""Downsamplers that make LR images from HR ones: ``bicubic`` (MATLAB ``imresize``), ``bilinear``, ``area``.

``bicubic`` and ``bilinear`` follow MATLAB's ``imresize`` with antialiasing: when shrinking by a factor ``s`` the
kernel (cubic with ``a = -0.5``, or the triangle) is widened by ``s`` and scaled by ``1/s``, the weights of every
output pixel are normalised to sum to one, and samples outside the image are mirrored (symmetric padding). The
resize is separable: ``out = Wh @ img @ Ww.T`` with dense weight matrices built once per size.

``area`` averages each ``s x s`` block (adaptive average pooling for non-integer factors).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Kind = Literal["bicubic", "bilinear", "area"]
KINDS: tuple[Kind, ...] = ("bicubic", "bilinear", "area")


def cubic(x: Tensor, a: float = -0.5) -> Tensor:
    """Keys' cubic convolution kernel (``a = -0.5`` as MATLAB), zero for ``|x| >= 2``."""
    ax = x.abs()
    ax2, ax3 = ax * ax, ax * ax * ax
    near = (a + 2) * ax3 - (a + 3) * ax2 + 1
    far = a * ax3 - 5 * a * ax2 + 8 * a * ax - 4 * a
    return torch.where(ax <= 1, near, torch.where(ax < 2, far, torch.zeros_like(ax)))


def triangle(x: Tensor) -> Tensor:
    """The linear-interpolation kernel, zero for ``|x| >= 1``."""
    return (1 - x.abs()).clamp(min=0)


_KERNELS: dict[str, tuple[Callable[[Tensor], Tensor], float]] = {"bicubic": (cubic, 4.0), "bilinear": (triangle, 2.0)}


@lru_cache(maxsize=64)
def resize_weights(in_size: int, out_size: int, factor: float, kind: Kind = "bicubic", antialias: bool = True) -> Tensor:
    """The (out_size, in_size) float64 matrix of MATLAB ``imresize`` along one axis.

    ``factor`` is the output/input ratio (0.25 for a x4 downsampling). Rows sum to one. Indices falling outside
    ``[0, in_size)`` are mirrored back (``[0, 1, ..., n-1, n-1, ..., 0]`` repeated).
    """
    if kind not in _KERNELS:
        raise ValueError(f"resize_weights: kind must be bicubic or bilinear, got {kind!r}")
    if in_size < 1 or out_size < 1 or factor <= 0:
        raise ValueError(f"resize_weights: bad sizes {in_size} -> {out_size} (factor {factor})")
    kernel, width = _KERNELS[kind]
    if factor < 1 and antialias:
        def h(x: Tensor) -> Tensor:
            return factor * kernel(factor * x)

        width = width / factor
    else:
        h = kernel
    x = torch.arange(1, out_size + 1, dtype=torch.float64)
    u = x / factor + 0.5 * (1 - 1 / factor)  # centre of each output pixel, 1-based input coordinates
    left = torch.floor(u - width / 2)
    taps = int(math.ceil(width)) + 2
    idx = left[:, None] + torch.arange(taps, dtype=torch.float64)[None, :]  # (out, taps), 1-based
    w = h(u[:, None] - idx)
    w = w / w.sum(1, keepdim=True)
    mirror = torch.cat([torch.arange(in_size), torch.arange(in_size - 1, -1, -1)])
    src = mirror[torch.remainder(idx.long() - 1, 2 * in_size)]
    mat = torch.zeros(out_size, in_size, dtype=torch.float64)
    mat.scatter_add_(1, src, w)
    return mat


def output_size(size: int, scale: float) -> int:
    """The LR length of an HR length ``size`` downsampled by ``scale`` (floor, at least 1)."""
    return max(1, int(math.floor(size / scale + 1e-9)))


def downsample(img: Tensor, scale: float, kind: Kind = "bicubic", *, clamp: bool = True) -> Tensor:
    """Downsample a (C,H,W) or (B,C,H,W) float image by ``scale`` (>= 1) with the downsampler ``kind``.

    The output is ``floor(H/scale) x floor(W/scale)``; for a size that is a multiple of ``scale`` this is exact.
    ``clamp`` keeps values in [0, 1] (bicubic overshoots at edges).
    """
    if kind not in KINDS:
        raise ValueError(f"downsample: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if scale < 1:
        raise ValueError(f"downsample: scale must be >= 1, got {scale}")
    squeeze = img.dim() == 3
    if squeeze:
        img = img[None]
    if img.dim() != 4:
        raise ValueError(f"downsample: expected a (C,H,W) or (B,C,H,W) tensor, got shape {tuple(img.shape)}")
    h, w = img.shape[-2:]
    oh, ow = output_size(h, scale), output_size(w, scale)
    if scale == 1:
        out = img.clone()
    elif kind == "area":
        x = img if img.is_floating_point() else img.float()
        if float(scale).is_integer() and h % int(scale) == 0 and w % int(scale) == 0:
            out = F.avg_pool2d(x, int(scale))
        else:
            out = F.adaptive_avg_pool2d(x, (oh, ow))
    else:
        dtype = img.dtype if img.dtype in (torch.float32, torch.float64) else torch.float32
        wh = resize_weights(h, oh, 1.0 / scale, kind).to(img.device, dtype)
        ww = resize_weights(w, ow, 1.0 / scale, kind).to(img.device, dtype)
        x = img.to(dtype)
        out = torch.matmul(torch.matmul(wh, x), ww.t())
    if clamp:
        out = out.clamp(0.0, 1.0)
    return out[0] if squeeze else out


def imresize_uint8(img: Tensor, factor: float) -> Tensor:
    """MATLAB ``imresize(img, factor)`` (antialiased bicubic) of a uint8 image (..., H, W): the output is
    ``ceil(factor*H) x ceil(factor*W)`` uint8.

    As MATLAB (and the NTIRE 2021 scoring script's ``imresize``) does for uint8 images, the image is resized along
    the rows first, clipped to [0, 255] and rounded back to uint8, then along the columns, clipped and rounded
    again (rounding half to even, as numpy's ``around``). The weights are :func:`resize_weights`' in float64.
    """
    if img.dtype != torch.uint8:
        raise ValueError(f"imresize_uint8: expected a uint8 image, got {img.dtype}")
    if img.dim() < 2:
        raise ValueError(f"imresize_uint8: expected an (..., H, W) image, got shape {tuple(img.shape)}")
    h, w = int(img.shape[-2]), int(img.shape[-1])
    oh, ow = math.ceil(factor * h - 1e-9), math.ceil(factor * w - 1e-9)
    wh = resize_weights(h, oh, factor, "bicubic").to(img.device)
    ww = resize_weights(w, ow, factor, "bicubic").to(img.device)
    rows = torch.matmul(wh, img.to(torch.float64)).clamp(0, 255).round()
    return torch.matmul(rows, ww.t()).clamp(0, 255).round().to(torch.uint8)
