"""Tiled inference for any SR model, and seamless tiled decoding for conditional flows.

Modules: :mod:`.grid` (tiles, weights, running any model tile by tile), :mod:`.flows` (flows: latent crops,
tiled decode and encode). Import from ``restorekit.tiling``.

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

from ..padding import pad_to_multiple
from .flows import crop_latents, flow_alignment, flow_decoder, tiled_flow_decode, tiled_flow_encode
from .grid import (
    Tile,
    TiledOutput,
    Window,
    plan_tiles,
    round_down,
    round_up,
    run_tiled,
    tile_starts,
    tile_weights,
    tiled_forward,
    weight_sum,
    window_1d,
)

__all__ = [
    "Tile",
    "TiledOutput",
    "Window",
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
