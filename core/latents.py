"""Generic latent-space math for conditional flows: sampling, SRFlow's "restore" normalisation, transfer and
interpolation.

Everything here works on a *list of latent tensors*, one per flow level, each (B, C, h, w) — the layout of
:class:`restorekit.EncodeResult.latents` (split latents first, top-level z last). Nothing here knows a particular
flow: the shapes come from the model's ``latent_shapes`` or from an ``encode``. The SRFlow plugin re-exports these
functions.

Temperatures are standard-deviation multipliers: a float, or a (B|1, 1, H, W) map at HR resolution that is
area-resized to every level's spatial size (:func:`scale_latents`).
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import UserError

Latents = list[Tensor]
Temperature = float | Tensor


def _check_shape(shape: Sequence[int], batch: int | None = None) -> tuple[int, int, int, int]:
    """A full (B, C, h, w) shape: a per-sample (C, h, w) shape gets ``batch`` (default 1) in front; ``batch``
    also replaces the batch size of a (B, C, h, w) shape when given."""
    dims = tuple(int(d) for d in shape)
    if len(dims) == 3:
        dims = (1 if batch is None else batch,) + dims
    elif len(dims) == 4 and batch is not None:
        dims = (batch,) + dims[1:]
    if len(dims) != 4 or any(d < 0 for d in dims):
        raise ValueError(f"latent shapes must be (B, C, h, w) or per-sample (C, h, w), got {tuple(shape)}")
    return dims  # type: ignore[return-value]


def temperature_at(temperature: Temperature, size: tuple[int, int]) -> Temperature:
    """The temperature at one latent level of spatial ``size``: a float unchanged, a map area-resized.

    A map is (B|1, 1, H, W); the result is (B|1, 1, h, w) (``adaptive_avg_pool2d``, exact block means when the
    HR size is a multiple of the level size, as it is for every flow level).
    """
    if not isinstance(temperature, Tensor):
        return float(temperature)
    if temperature.dim() != 4 or temperature.shape[1] != 1:
        raise ValueError(f"a temperature map must be (B|1, 1, H, W), got {tuple(temperature.shape)}")
    if tuple(temperature.shape[-2:]) == tuple(size):
        return temperature
    return F.adaptive_avg_pool2d(temperature, size)


def scale_latents(latents: Sequence[Tensor], temperature: Temperature) -> Latents:
    """Each latent multiplied by the temperature (a float, or a map resized per level)."""
    out: Latents = []
    for z in latents:
        t = temperature_at(temperature, (z.shape[-2], z.shape[-1]))
        out.append(z * (t.to(device=z.device, dtype=z.dtype) if isinstance(t, Tensor) else t))
    return out


def as_temperature(temperature: Temperature) -> Temperature:
    """A temperature in the form :func:`scale_latents` takes: a float, or a (B|1, 1, H, W) map (a 0-d tensor
    becomes a float, an (H, W) map gets two leading dims, a (B, H, W) map a channel dim). Raises ValueError for
    any other shape."""
    if not isinstance(temperature, Tensor):
        return float(temperature)
    t = temperature
    if t.dim() == 0:
        return float(t)
    if t.dim() == 2:
        t = t[None, None]
    elif t.dim() == 3:
        t = t[:, None]
    if t.dim() != 4 or t.shape[1] != 1:
        raise ValueError(f"a temperature map must be (B|1, 1, H, W) or (H, W), got shape {tuple(temperature.shape)}")
    return t


def sample_latents(
    shapes: Sequence[Sequence[int]],
    temperature: Temperature = 1.0,
    generator: torch.Generator | None = None,
    *,
    batch: int | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Latents:
    """Draw latents ~ N(0, T²) of the given shapes (encode order: split latents first, top z last).

    The one sampler of restorekit: ``restore-run``'s sample modes and :class:`restorekit_srflow.SRFlowNet`'s
    ``decode(lr, temperature=..., generator=...)`` both draw through it, so one seed gives one sample.

    * Order: the official SRFlow sampler's, top z (the last shape) first, then the other levels from the
      deepest (the second to last) to the shallowest (the first). The result is in encode order.
    * Per-sample (C, h, w) shapes (as ``latent_shapes`` gives them) get batch ``batch`` (default 1); ``batch``
      also overrides the batch size of full shapes.
    * The standard-normal noise is drawn on ``generator``'s device (or ``device``, or the CPU) in ``dtype``, moved
      to ``device``, then multiplied by the temperature (:func:`as_temperature`: a float, or a map at HR size
      area-resized to every level). So the same generator state gives the same noise at every temperature (a
      sample at T=0.5 is the T=1 sample halved). A float temperature of 0 gives zeros without drawing.
    """
    dims = [_check_shape(s, batch) for s in shapes]
    t = as_temperature(temperature)
    if isinstance(t, Tensor) and dims and t.shape[0] not in (1, dims[-1][0]):
        raise ValueError(f"temperature map batch {t.shape[0]} does not fit latent batch {dims[-1][0]}")
    draw_device = generator.device if generator is not None else (device or "cpu")
    if not isinstance(t, Tensor) and t == 0.0:
        return [torch.zeros(d, device=device if device is not None else draw_device, dtype=dtype) for d in dims]
    noise: list[Tensor] = [torch.empty(0)] * len(dims)
    for k in reversed(range(len(dims))):  # encode order reversed: top z first, then the splits deepest first
        noise[k] = torch.randn(dims[k], generator=generator, device=draw_device, dtype=dtype)
    if device is not None:
        noise = [z.to(device) for z in noise]
    return scale_latents(noise, t)


def zeros_like_latents(latents: Sequence[Tensor]) -> Latents:
    """Zero latents of the same shapes (the "mean" image of a flow)."""
    return [torch.zeros_like(z) for z in latents]


def normalize_latents(latents: Sequence[Tensor], eps: float = 1e-6) -> Latents:
    """SRFlow's restoration trick: bring encoded latents of a degraded image back to a standard normal.

    For each (B, C, h, w) tensor: first every channel is standardised over space (mean 0, std 1 over h·w, per
    sample), then every location over channels (mean 0, std 1 over C). A step is skipped when its axis has a
    single element (h·w = 1, or C = 1), where a standard deviation is undefined. Standard deviations are the
    population ones; ``eps`` guards the division.
    """
    out: Latents = []
    for z in latents:
        if z.dim() != 4:
            raise ValueError(f"latents must be (B, C, h, w), got {tuple(z.shape)}")
        x = z.float()
        if x.shape[-1] * x.shape[-2] > 1:
            mean = x.mean(dim=(2, 3), keepdim=True)
            std = x.std(dim=(2, 3), keepdim=True, unbiased=False)
            x = (x - mean) / (std + eps)
        if x.shape[1] > 1:
            mean = x.mean(dim=1, keepdim=True)
            std = x.std(dim=1, keepdim=True, unbiased=False)
            x = (x - mean) / (std + eps)
        out.append(x.to(z.dtype))
    return out


def _level_ratios(hw: Sequence[tuple[int, int]]) -> list[int] | None:
    """Integer size ratios of every level to the smallest one, if consistent in both axes."""
    base = min(range(len(hw)), key=lambda i: hw[i][0] * hw[i][1])
    bh, bw = hw[base]
    ratios: list[int] = []
    for h, w in hw:
        if bh == 0 or bw == 0 or h % bh or w % bw or h // bh != w // bw:
            return None
        ratios.append(h // bh)
    return ratios


def transfer_latents(ref_latents: Sequence[Tensor], target_shapes: Sequence[Sequence[int]]) -> Latents:
    """Centre crops of a reference's latents with the target's shapes (latent "style" transfer).

    Every level of ``ref_latents`` (B_ref, C, h, w) is cropped to the matching (B, C, H, W) target shape (a
    per-sample (C, H, W) shape keeps the reference's batch); a reference batch of 1 is repeated to B. When the levels are nested (each level an integer multiple of the
    smallest, in reference and target alike, as in every flow) the crops are aligned: they cover the same image
    region at every level. Otherwise each level is centre-cropped on its own.

    Raises :class:`UserError` when a reference level is smaller than the target's, or the lists do not fit.
    """
    if len(ref_latents) != len(target_shapes):
        raise UserError(
            f"latent transfer: the reference has {len(ref_latents)} latent levels, the target {len(target_shapes)}"
        )
    dims = [
        _check_shape(s, int(z.shape[0]) if len(s) == 3 else None) for s, z in zip(target_shapes, ref_latents)
    ]
    for k, (z, (b, c, hh, ww)) in enumerate(zip(ref_latents, dims)):
        if z.dim() != 4 or z.shape[1] != c:
            raise UserError(
                f"latent transfer: level {k} has shape {tuple(z.shape)} in the reference, {(b, c, hh, ww)} in the target"
            )
        if z.shape[-2] < hh or z.shape[-1] < ww:
            raise UserError(
                f"latent transfer: the reference is smaller than the target (latent level {k}: "
                f"{z.shape[-2]}x{z.shape[-1]} < {hh}x{ww}); use a reference at least as large as the target"
            )
        if z.shape[0] not in (1, b):
            raise UserError(f"latent transfer: reference batch {z.shape[0]} does not fit target batch {b}")
    ref_hw = [(int(z.shape[-2]), int(z.shape[-1])) for z in ref_latents]
    tgt_hw = [(d[2], d[3]) for d in dims]
    ratios = _level_ratios(ref_hw)
    aligned = ratios is not None and _level_ratios(tgt_hw) == ratios
    if aligned:
        assert ratios is not None
        base = ratios.index(1) if 1 in ratios else 0
        top0 = (ref_hw[base][0] - tgt_hw[base][0]) // 2
        left0 = (ref_hw[base][1] - tgt_hw[base][1]) // 2
    out: Latents = []
    for k, (z, (b, _c, hh, ww)) in enumerate(zip(ref_latents, dims)):
        if aligned:
            assert ratios is not None
            top, left = top0 * ratios[k], left0 * ratios[k]
        else:
            top, left = (z.shape[-2] - hh) // 2, (z.shape[-1] - ww) // 2
        crop = z[:, :, top : top + hh, left : left + ww]
        out.append(crop.expand(b, -1, -1, -1).contiguous() if crop.shape[0] != b else crop.contiguous())
    return out


def interpolate_latents(
    a: Sequence[Tensor],
    b: Sequence[Tensor],
    n: int,
    mode: Literal["linear", "slerp"] = "linear",
    eps: float = 1e-8,
) -> list[Latents]:
    """``n`` latent lists on the path from ``a`` to ``b`` (the first is ``a``, the last ``b``).

    ``linear``: ``(1 - t)·a + t·b``. ``slerp``: spherical interpolation per sample, with one angle for the whole
    latent vector of a sample (all levels together), so every level moves along the same great circle. Where
    the angle is undefined or degenerate — one end is (near) zero, or the ends are (anti)parallel — slerp falls
    back to linear for that sample: from zeros to z that is the straight "temperature sweep" t·z.
    """
    if n < 2:
        raise ValueError(f"interpolate_latents needs n >= 2 frames, got {n}")
    if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b)):
        raise ValueError(
            "interpolate_latents: the two latent lists differ in shape: "
            f"{[tuple(x.shape) for x in a]} vs {[tuple(y.shape) for y in b]}"
        )
    if mode not in ("linear", "slerp"):
        raise ValueError(f"interpolate_latents: mode must be 'linear' or 'slerp', got {mode!r}")
    ts = [i / (n - 1) for i in range(n)]
    if mode == "linear" or not a:
        return [[torch.lerp(x, y, t) if 0 < t < 1 else (x if t == 0 else y).clone() for x, y in zip(a, b)] for t in ts]
    batch = a[0].shape[0]
    fa = torch.cat([x.reshape(batch, -1).double() for x in a], 1)
    fb = torch.cat([y.reshape(batch, -1).double() for y in b], 1)
    na, nb = fa.norm(dim=1), fb.norm(dim=1)
    cos = ((fa * fb).sum(1) / (na * nb).clamp_min(eps)).clamp(-1.0, 1.0)
    omega = torch.arccos(cos)
    sin = torch.sin(omega)
    degenerate = (na < eps) | (nb < eps) | (sin.abs() < 1e-6)
    frames: list[Latents] = []
    for t in ts:
        if t == 0 or t == 1:
            frames.append([(x if t == 0 else y).clone() for x, y in zip(a, b)])
            continue
        safe_sin = torch.where(degenerate, torch.ones_like(sin), sin)
        ca = torch.where(degenerate, torch.full_like(sin, 1 - t), torch.sin((1 - t) * omega) / safe_sin)
        cb = torch.where(degenerate, torch.full_like(sin, t), torch.sin(t * omega) / safe_sin)
        frame = []
        for x, y in zip(a, b):
            shape = (batch,) + (1,) * (x.dim() - 1)
            frame.append((ca.view(shape) * x.double() + cb.view(shape) * y.double()).to(x.dtype))
        frames.append(frame)
    return frames


def latent_norm(latents: Sequence[Tensor]) -> Tensor:
    """Per-sample root-mean-square of a latent list (B,): about the temperature of a sample."""
    if not latents:
        raise ValueError("latent_norm of an empty list")
    batch = latents[0].shape[0]
    flat = torch.cat([z.reshape(batch, -1).float() for z in latents], 1)
    return flat.pow(2).mean(1).sqrt() if flat.shape[1] else torch.zeros(batch)


__all__ = [
    "Latents",
    "Temperature",
    "as_temperature",
    "interpolate_latents",
    "latent_norm",
    "normalize_latents",
    "sample_latents",
    "scale_latents",
    "temperature_at",
    "transfer_latents",
    "zeros_like_latents",
]
