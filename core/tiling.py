"""Tiled inference for any SR model, and seamless tiled decoding for conditional flows.

An LR image is cut into tiles of ``tile`` × ``tile`` LR pixels that overlap their neighbours by at least
``overlap`` LR pixels. Each tile is super-resolved on its own; the HR outputs are accumulated with feathering
weights and divided by the summed weights.

**Weights.** Along an axis, a tile side that touches the image border has weight 1. A side shared with a
neighbour over an overlap of ``ov`` pixels (at HR) gets a window of the distance ``d`` from that side: 0 for
``d < margin·ov``, a ramp (cosine or linear) up to 1 at ``d = (1 − margin)·ov``, 1 beyond. The 2-D weight is the
product of the two axes' windows. Two neighbours' ramps cover the same middle part of their overlap, so the
blend is symmetric, and the outer ``margin`` part of every interior edge — the pixels most affected by the tile's
artificial border — never contributes. Hence, with the default ``margin = 0.25``: **if the model's receptive-field
radius is at most ``overlap / 4`` LR pixels, tiled output equals untiled output** (up to float rounding); with a
smaller overlap the seams are feathered away (visually seamless, not exact).

**Alignment.** Tiles start at multiples of ``align`` LR pixels and have sizes that are multiples of it (the
model's ``size_multiple``; for flows also what makes every latent level crop exactly, see
:func:`flow_alignment`). The image is padded at the bottom/right by reflection to a multiple of ``align`` first
and the result cropped back — exactly what the untiled path does.

**Flows.** :func:`tiled_flow_decode` takes latents drawn once for the whole (padded) image; each tile decodes the
matching crop of every latent level (a level of spatial size h_k has the HR/h_k ratio; the crop of an HR region is
that region divided by the ratio). Overlapping tiles therefore decode the same latents and agree, at any
temperature.

**Non-finite tiles** (a flow decode that overflows) are detected per tile and per batch item; their values are
left out of the accumulation and reported in :class:`TiledOutput`, so the caller can decode that item again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Sequence

import torch
from torch import Tensor

from .padding import pad_to_multiple

Window = Literal["cosine", "linear"]
TileFn = Callable[[Tensor, "Tile"], Sequence[Tensor]]


@dataclass(frozen=True)
class Tile:
    """One tile in LR pixels of the (padded) image: origin ``y``, ``x``, size ``h``, ``w``, and the overlaps
    with the neighbour on each side (0 where the side is on the image border)."""

    y: int
    x: int
    h: int
    w: int
    top: int = 0
    bottom: int = 0
    left: int = 0
    right: int = 0

    def describe(self) -> str:
        """``tile (y, x) h×w`` in LR pixels, for reports."""
        return f"tile at LR (y={self.y}, x={self.x}) {self.h}x{self.w}"


@dataclass
class TiledOutput:
    """What a tiled run returns.

    ``outputs``: one (B, C, H, W) tensor per output of the tile function (e.g. one per latent set), finite
    everywhere (non-finite tile values were left out). ``nonfinite``: bool (n_outputs, B), True where some tile
    of that item was not finite (its output is then incomplete and must not be used). ``bad_tiles``: the first
    offending tile per (output, item).
    """

    outputs: list[Tensor]
    nonfinite: Tensor
    bad_tiles: dict[tuple[int, int], Tile] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------
# geometry


def round_down(value: int, multiple: int) -> int:
    """``value`` rounded down to a multiple of ``multiple``."""
    return (value // multiple) * multiple


def round_up(value: int, multiple: int) -> int:
    """``value`` rounded up to a multiple of ``multiple``."""
    return -(-value // multiple) * multiple


def tile_starts(length: int, tile: int, overlap: int, align: int = 1) -> list[int]:
    """Start positions of tiles of size ``tile`` covering ``[0, length)``, overlapping by at least ``overlap``.

    ``length`` and ``tile`` must be multiples of ``align``; starts are multiples of ``align``, spread as evenly as
    alignment allows (no two tiles nearly on top of each other). One tile when ``tile >= length``.
    """
    if align < 1 or length < 1 or tile < 1 or overlap < 0:
        raise ValueError(f"tile_starts: bad arguments length={length} tile={tile} overlap={overlap} align={align}")
    if length % align or tile % align:
        raise ValueError(f"tile_starts: length {length} and tile {tile} must be multiples of {align}")
    if tile >= length:
        return [0]
    max_stride = round_down(tile - overlap, align)
    if max_stride < align:
        raise ValueError(
            f"tile size {tile} must exceed the overlap {overlap} by at least {align} (the alignment)"
        )
    span = (length - tile) // align
    gaps = -(-span // (max_stride // align))
    base, rem = divmod(span, gaps)
    starts = [0]
    for i in range(gaps):
        starts.append(starts[-1] + (base + (1 if i < rem else 0)) * align)
    return starts


def plan_tiles(height: int, width: int, tile: int, overlap: int, align: int = 1) -> list[Tile]:
    """The tiles (row-major) of an image of ``height`` × ``width`` LR pixels (multiples of ``align``).

    The tile size is ``tile`` rounded down to ``align`` (at least ``align``), and at most the image size.
    """
    def axis(length: int) -> tuple[int, list[int]]:
        size = min(max(round_down(tile, align), align), length)
        return size, tile_starts(length, size, overlap, align)

    th, ys = axis(height)
    tw, xs = axis(width)
    tiles: list[Tile] = []
    for i, y in enumerate(ys):
        top = ys[i - 1] + th - y if i > 0 else 0
        bottom = y + th - ys[i + 1] if i + 1 < len(ys) else 0
        for j, x in enumerate(xs):
            left = xs[j - 1] + tw - x if j > 0 else 0
            right = x + tw - xs[j + 1] if j + 1 < len(xs) else 0
            tiles.append(Tile(y, x, th, tw, top, bottom, left, right))
    return tiles


def _ramp(dist: Tensor, overlap: float, margin: float, window: Window) -> Tensor:
    lo = margin * overlap
    width = overlap - 2 * lo
    r = ((dist - lo) / width).clamp(0.0, 1.0) if width > 0 else (dist >= lo).to(dist.dtype)
    if window == "cosine":
        return 0.5 - 0.5 * torch.cos(math.pi * r)
    if window == "linear":
        return r
    raise ValueError(f"window must be 'cosine' or 'linear', got {window!r}")


def window_1d(
    length: int, lead: int, trail: int, *, window: Window = "cosine", margin: float = 0.25, dtype: torch.dtype = torch.float64
) -> Tensor:
    """Blending weights along one axis of a tile of ``length`` pixels whose leading/trailing sides overlap a
    neighbour by ``lead``/``trail`` pixels (0: image border, weight 1). Evaluated at pixel centres."""
    if not 0.0 <= margin < 0.5:
        raise ValueError(f"margin must be in [0, 0.5), got {margin}")
    d = torch.arange(length, dtype=dtype) + 0.5
    w = torch.ones(length, dtype=dtype)
    if lead > 0:
        w = w * _ramp(d, float(lead), margin, window)
    if trail > 0:
        w = w * _ramp(length - d, float(trail), margin, window)
    return w


def tile_weights(
    t: Tile, scale: int, *, window: Window = "cosine", margin: float = 0.25
) -> Tensor:
    """The (H_t, W_t) float64 blending weight of one tile at output (HR) resolution."""
    wy = window_1d(t.h * scale, t.top * scale, t.bottom * scale, window=window, margin=margin)
    wx = window_1d(t.w * scale, t.left * scale, t.right * scale, window=window, margin=margin)
    return wy[:, None] * wx[None, :]


def weight_sum(tiles: Sequence[Tile], height: int, width: int, scale: int, *, window: Window = "cosine", margin: float = 0.25) -> Tensor:
    """Summed weights of all tiles over the (HR) image: positive everywhere for any plan of :func:`plan_tiles`."""
    total = torch.zeros(height * scale, width * scale, dtype=torch.float64)
    for t in tiles:
        total[t.y * scale : (t.y + t.h) * scale, t.x * scale : (t.x + t.w) * scale] += tile_weights(
            t, scale, window=window, margin=margin
        )
    return total


# ----------------------------------------------------------------------------------------------------
# running tiles


def run_tiled(
    lr: Tensor,
    fn: TileFn,
    *,
    scale: int,
    tile: int,
    overlap: int,
    align: int = 1,
    window: Window = "cosine",
    margin: float = 0.25,
) -> TiledOutput:
    """Run ``fn(lr_tile, tile) -> [outputs]`` over the tiles of ``lr`` and blend the outputs.

    ``lr`` (B, C, h, w) must have h, w multiples of ``align``; every output of ``fn`` must be
    (B, C_out, scale·h_t, scale·w_t). The outputs are blended in float32 on ``lr``'s device.
    """
    if lr.dim() != 4:
        raise ValueError(f"run_tiled: expected a (B, C, h, w) batch, got {tuple(lr.shape)}")
    batch, _, h, w = lr.shape
    tiles = plan_tiles(h, w, tile, overlap, align)
    if bool((weight_sum(tiles, h, w, scale, window=window, margin=margin) <= 0).any()):
        margin = 0.0  # never happens for plan_tiles' layouts; full-width ramps cover every pixel
    wsum = torch.zeros(1, 1, h * scale, w * scale, device=lr.device, dtype=torch.float32)
    acc: list[Tensor] = []
    nonfinite: Tensor | None = None
    bad: dict[tuple[int, int], Tile] = {}
    for t in tiles:
        outs = list(fn(lr[:, :, t.y : t.y + t.h, t.x : t.x + t.w], t))
        if nonfinite is None:
            nonfinite = torch.zeros(len(outs), batch, dtype=torch.bool)
        if len(outs) != nonfinite.shape[0]:
            raise ValueError("run_tiled: the tile function returned a varying number of outputs")
        wt = tile_weights(t, scale, window=window, margin=margin).to(device=lr.device, dtype=torch.float32)[None, None]
        ys, xs = slice(t.y * scale, (t.y + t.h) * scale), slice(t.x * scale, (t.x + t.w) * scale)
        for o, y in enumerate(outs):
            if y.dim() != 4 or y.shape[0] != batch or tuple(y.shape[-2:]) != (t.h * scale, t.w * scale):
                raise ValueError(
                    f"run_tiled: a tile of {t.h}x{t.w} gave an output of shape {tuple(y.shape)}, "
                    f"expected ({batch}, C, {t.h * scale}, {t.w * scale}) for scale {scale}"
                )
            y = y.float()
            finite = torch.isfinite(y).flatten(1).all(1).cpu()
            for b in (~finite).nonzero().flatten().tolist():
                if not nonfinite[o, b]:
                    bad[(o, b)] = t
            nonfinite[o] |= ~finite
            if len(acc) <= o:
                acc.append(torch.zeros(batch, y.shape[1], h * scale, w * scale, device=lr.device, dtype=torch.float32))
            acc[o][:, :, ys, xs] += torch.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0) * wt
        wsum[:, :, ys, xs] += wt
    assert nonfinite is not None
    return TiledOutput([a / wsum for a in acc], nonfinite, bad)


def tiled_forward(
    model: Callable[[Tensor], Tensor],
    lr: Tensor,
    *,
    tile: int,
    overlap: int,
    scale: int | None = None,
    size_multiple: int | None = None,
    window: Window = "cosine",
    margin: float = 0.25,
) -> TiledOutput:
    """Tiled ``model(lr)`` for any SR model (``scale``/``size_multiple`` default to the model's attributes).

    Pads ``lr`` to ``size_multiple`` (bottom/right, reflection), runs the tiles, crops back to ``scale`` × the
    input size. ``outputs[0]`` is the SR batch; ``nonfinite[0]`` flags items with a non-finite tile.
    """
    s = int(scale if scale is not None else getattr(model, "scale"))
    m = int(size_multiple if size_multiple is not None else getattr(model, "size_multiple", 1) or 1)
    h, w = lr.shape[-2:]
    padded, _ = pad_to_multiple(lr, m)
    res = run_tiled(padded, lambda x, _t: [model(x)], scale=s, tile=tile, overlap=overlap, align=m,
                    window=window, margin=margin)
    res.outputs = [o[:, :, : h * s, : w * s] for o in res.outputs]
    return res


# ----------------------------------------------------------------------------------------------------
# flows


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
    from .perf import SampleBatcher

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


__all__ = [
    "Tile",
    "TiledOutput",
    "crop_latents",
    "flow_alignment",
    "flow_decoder",
    "pad_to_multiple",
    "plan_tiles",
    "round_down",
    "round_up",
    "run_tiled",
    "tile_starts",
    "tile_weights",
    "tiled_flow_decode",
    "tiled_flow_encode",
    "tiled_forward",
    "weight_sum",
    "window_1d",
]
