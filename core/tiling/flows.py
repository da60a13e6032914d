"""Tiled decoding and encoding for conditional flows: latents drawn once for the whole image, cropped per tile."""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

from torch import Tensor

from .grid import Tile, TiledOutput, Window, plan_tiles, round_down, run_tiled




def _hw(shape: Sequence[int]) -> tuple[int, int]:
    return int(shape[-2]), int(shape[-1])


def flow_alignment(
    scale: int, size_multiple: int, lr_hw: tuple[int, int], latent_shapes: Sequence[Sequence[int]]
) -> int:
    """The LR alignment that makes every latent level crop exactly: the least common multiple of
    ``size_multiple`` and, per level of HR/latent ratio r, r / gcd(r, scale). Raises ``ValueError`` when a
    latent level does not divide the HR size (not a spatial latent)."""
    hh, ww = lr_hw[0] * scale, lr_hw[1] * scale
    align = max(1, size_multiple)
    for shape in latent_shapes:
        lh, lw = _hw(shape)
        if lh < 1 or lw < 1 or hh % lh or ww % lw:
            raise ValueError(f"latent level {tuple(shape)} does not divide the HR size {hh}x{ww}")
        for r in (hh // lh, ww // lw):
            align = math.lcm(align, r // math.gcd(r, scale))
    return align


def crop_latents(latents: Sequence[Tensor], t: Tile, scale: int, lr_hw: tuple[int, int]) -> list[Tensor]:
    """The crop of every latent level matching tile ``t`` of an image of ``lr_hw`` LR pixels."""
    hh, ww = lr_hw[0] * scale, lr_hw[1] * scale
    out = []
    for z in latents:
        ry, rx = hh // z.shape[-2], ww // z.shape[-1]
        y0, x0 = t.y * scale // ry, t.x * scale // rx
        out.append(z[:, :, y0 : y0 + t.h * scale // ry, x0 : x0 + t.w * scale // rx])
    return out


def flow_decoder(model: Any) -> Callable[[Tensor, Sequence[Sequence[Tensor]]], list[Tensor]]:
    """``decode(lr, latent_sets) -> [SR per set]``: decodes several latent sets for one LR batch, computing the
    LR conditional features once (``model.conditional_features``, see :class:`restorekit.FlowModel`). For an LR batch of 1 the sets
    are decoded in batches whose size :class:`restorekit.perf.SampleBatcher` chooses by measuring (a loop of
    single decodes where batching is slower, as on a CPU with large images)."""
    from ..perf import SampleBatcher

    batcher = SampleBatcher()

    def decode(lr: Tensor, latent_sets: Sequence[Sequence[Tensor]]) -> list[Tensor]:
        return batcher.decode(model, lr, latent_sets, model.conditional_features(lr))

    return decode


def tiled_flow_decode(
    model: Any,
    lr: Tensor,
    latent_sets: Sequence[Sequence[Tensor]],
    *,
    tile: int,
    overlap: int,
    window: Window = "cosine",
    margin: float = 0.25,
    decode: Callable[[Tensor, Sequence[Sequence[Tensor]]], list[Tensor]] | None = None,
) -> TiledOutput:
    """Decode each latent set of a whole (valid-size) LR batch tile by tile; ``outputs[i]`` is set ``i``'s SR.

    ``lr`` (B, 3, h, w) must already have a valid size whose sides are multiples of :func:`flow_alignment`; every
    latent set must have the model's ``latent_shapes`` for it (drawn once for the whole image). Each tile decodes
    its crop of every level, with the conditional features computed once per tile for all sets.
    """
    if not latent_sets:
        raise ValueError("tiled_flow_decode: no latent sets")
    scale = int(model.scale)
    lr_hw = _hw(lr.shape)
    align = flow_alignment(
        scale, int(getattr(model, "size_multiple", 1) or 1), lr_hw, [tuple(z.shape) for z in latent_sets[0]]
    )
    if lr_hw[0] % align or lr_hw[1] % align:
        raise ValueError(f"tiled_flow_decode: LR size {lr_hw} is not a multiple of the alignment {align}")
    run = decode or flow_decoder(model)

    def fn(x: Tensor, t: Tile) -> list[Tensor]:
        return run(x, [crop_latents(zs, t, scale, lr_hw) for zs in latent_sets])

    return run_tiled(lr, fn, scale=scale, tile=tile, overlap=overlap, align=align, window=window, margin=margin)


def _owned(start: int, size: int, before: int, after: int, align: int) -> tuple[int, int]:
    """The part ``[a, b)`` of a tile's span that it owns: its neighbours' overlaps split in the middle (rounded
    down to ``align``, so that both neighbours draw the same line)."""
    a = start + (round_down(before // 2, align) if before else 0)
    b = start + size - (after - round_down(after // 2, align) if after else 0)
    return a, b


def tiled_flow_encode(
    model: Any,
    hr: Tensor,
    lr: Tensor,
    *,
    tile: int,
    overlap: int,
    encode: Callable[[Tensor, Tensor], Sequence[Tensor]] | None = None,
) -> list[Tensor]:
    """The latents of ``hr`` given ``lr`` (a valid-size batch whose LR sides are multiples of
    :func:`flow_alignment`), encoded tile by tile: peak memory follows the tile, not the image.

    Each tile encodes its HR/LR crop; every latent level takes from each tile the part the tile owns (overlaps
    split in the middle), so each latent comes from the tile where it lies farthest from an artificial border.
    With an overlap of at least twice the flow's receptive-field radius the result equals the untiled encode;
    below that, latents next to the cut lines differ slightly (a decode of them is still seamless).
    """
    run = encode or (lambda h, l: list(model.encode(h, l).latents))
    scale = int(model.scale)
    lr_hw = _hw(lr.shape)
    if tuple(hr.shape[-2:]) != (lr_hw[0] * scale, lr_hw[1] * scale):
        raise ValueError(f"tiled_flow_encode: HR {tuple(hr.shape)} is not {scale}x the LR {tuple(lr.shape)}")
    shapes = [tuple(int(d) for d in s) for s in model.latent_shapes(tuple(lr.shape))]
    align = flow_alignment(scale, int(getattr(model, "size_multiple", 1) or 1), lr_hw, shapes)
    if lr_hw[0] % align or lr_hw[1] % align:
        raise ValueError(f"tiled_flow_encode: LR size {lr_hw} is not a multiple of the alignment {align}")
    hh, ww = lr_hw[0] * scale, lr_hw[1] * scale
    out: list[Tensor] | None = None
    for t in plan_tiles(lr_hw[0], lr_hw[1], tile, overlap, align):
        lt = lr[:, :, t.y : t.y + t.h, t.x : t.x + t.w]
        ht = hr[:, :, t.y * scale : (t.y + t.h) * scale, t.x * scale : (t.x + t.w) * scale]
        zs = list(run(ht, lt))
        if out is None:
            out = [z.new_zeros((z.shape[0], z.shape[1], hh // (scale * t.h // z.shape[-2]),
                                ww // (scale * t.w // z.shape[-1]))) for z in zs]
        y0, y1 = _owned(t.y, t.h, t.top, t.bottom, align)
        x0, x1 = _owned(t.x, t.w, t.left, t.right, align)
        for z, full in zip(zs, out):
            ry, rx = scale * t.h // z.shape[-2], scale * t.w // z.shape[-1]  # HR pixels per latent pixel
            ys = slice((y0 - t.y) * scale // ry, (y1 - t.y) * scale // ry)
            xs = slice((x0 - t.x) * scale // rx, (x1 - t.x) * scale // rx)
            full[:, :, y0 * scale // ry : y1 * scale // ry, x0 * scale // rx : x1 * scale // rx] = z[:, :, ys, xs]
    assert out is not None
    return out


__all__ = ["crop_latents", "flow_alignment", "flow_decoder", "tiled_flow_decode", "tiled_flow_encode"]
