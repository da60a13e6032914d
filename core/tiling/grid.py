"""Tiles of an image and running any SR model tile by tile (see :mod:`restorekit.tiling` for the weights and
the alignment)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Literal, Sequence

import torch
from torch import Tensor

from ..padding import pad_to_multiple

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


__all__ = ["Tile", "TiledOutput", "Window", "plan_tiles", "round_down", "round_up", "run_tiled", "tile_starts", "tile_weights", "tiled_forward", "weight_sum", "window_1d"]
