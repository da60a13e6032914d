"""restorekit.tiling: tile layout and weights (properties), tiled == untiled for RRDB and flows when the overlap
covers the receptive field, seamless blending otherwise, per-tile NaN detection, and tiled inference end to end.

Receptive fields used below (radius, in LR pixels, from the architecture):

* tiny RRDB (nf 8, nb 1, gc 4, x2): 17 LR-resolution 3x3 convolutions (conv_first, 3 dense blocks x 5, trunk_conv)
  = 17; the x2 stage (nearest, 3x3 at 2x) adds 0.5 and HRconv + conv_last (two 3x3 at HR) add 1, plus 0.5 for
  the nearest-neighbour rounding: R = 19. The exact-tiling rule (overlap >= 4 R) asks for overlap >= 76.
* the fake flow (tests/fakes.py): bicubic x2 (2 LR pixels) then two 3x3 convolutions at HR (1 LR pixel):
  R = 3, so overlap >= 12.
* the tiny real SRFlow (x4, nb 1, K 1, L 3): measured ~15 LR pixels (RRDB trunk plus the flow's convolutions);
  the test measures it and uses overlap >= 4 (R + 2).

With tiling exact in exact arithmetic, float32 differences come only from convolutions being summed in another
order on a different input size: ~1e-8 for RRDB, ~1e-7 (T = 0) to ~2e-6 (T = 0.8) for SRFlow, so the tolerances
1e-5 (flows) and 1e-4 (RRDB) hold with a margin.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from restorekit.latents import sample_latents
from restorekit.tiling import (
    Tile,
    crop_latents,
    flow_decoder,
    flow_alignment,
    pad_to_multiple,
    plan_tiles,
    round_up,
    run_tiled,
    tile_starts,
    tile_weights,
    tiled_flow_decode,
    tiled_forward,
    weight_sum,
    window_1d,
)
from fakes import FakeFlow, FakePlugin, pipeline, read, run, sample_image, save, srflow_tiny

RRDB_RADIUS = 19
FAKE_FLOW_RADIUS = 3


def tiny_rrdb(scale: int = 2, **kw):
    from restorekit_rrdb import RRDBNet

    torch.manual_seed(0)
    return RRDBNet(nf=8, nb=1, gc=4, scale=scale, **kw).eval()


def lr_batch(h: int, w: int, batch: int = 1) -> torch.Tensor:
    imgs = [sample_image(n, h, w) for n in ("astronaut", "coffee", "chelsea")[:batch]]
    return torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float()


# ----------------------------------------------------------------------------------------------------
# layout properties


@settings(max_examples=300, deadline=None)
@given(
    length=st.integers(1, 300),
    tile=st.integers(8, 128),
    overlap=st.integers(0, 64),
    align=st.sampled_from([1, 2, 4, 8]),
    scale=st.sampled_from([1, 2, 4]),
    window=st.sampled_from(["cosine", "linear"]),
)
def test_tile_layout_covers_aligns_overlaps_and_weights(length: int, tile: int, overlap: int, align: int, scale: int,
                                                        window: str) -> None:
    length = round_up(length, align)
    size = min(max((tile // align) * align, align), length)
    if size < length and (size - overlap) // align * align < align:
        with pytest.raises(ValueError):
            tile_starts(length, size, overlap, align)
        return
    starts = tile_starts(length, size, overlap, align)
    assert starts[0] == 0 and starts[-1] + size == length
    assert all(s % align == 0 for s in starts)
    assert all(b - a >= align and a + size - b >= overlap for a, b in zip(starts, starts[1:]))
    tiles = plan_tiles(length, 8, tile, overlap, align)
    assert all(t.w == 8 and t.h == size for t in tiles)
    total = weight_sum(tiles, length, 8, scale, window=window)  # type: ignore[arg-type]
    assert bool((total > 0).all())  # every output pixel gets weight: nothing left black
    for t in tiles:  # the outer quarter of every interior overlap never contributes (the exactness argument)
        w = tile_weights(t, scale, window=window)  # type: ignore[arg-type]
        if t.top:
            assert not w[: int(t.top * scale / 4)].any()
        if t.bottom:
            assert not w[w.shape[0] - int(t.bottom * scale / 4):].any()


class ConvStack(torch.nn.Module):
    """``depth`` 3x3 convolutions at LR, then a 3x3 convolution to 3·s² channels and pixel_shuffle: the
    receptive-field radius is depth + 1 LR pixels."""

    def __init__(self, depth: int, scale: int, size_multiple: int = 1) -> None:
        super().__init__()
        torch.manual_seed(depth * 10 + scale)
        layers: list[torch.nn.Module] = []
        for i in range(depth):
            layers += [torch.nn.Conv2d(3 if i == 0 else 6, 6, 3, padding=1), torch.nn.Tanh()]
        layers += [torch.nn.Conv2d(6 if depth else 3, 3 * scale * scale, 3, padding=1), torch.nn.PixelShuffle(scale)]
        self.body = torch.nn.Sequential(*layers)
        self.scale, self.size_multiple = scale, size_multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] % self.size_multiple or x.shape[-1] % self.size_multiple:
            raise ValueError("size not a multiple")
        return self.body(x)


@settings(max_examples=20, deadline=None)
@given(
    h=st.integers(4, 36),
    w=st.integers(4, 36),
    depth=st.integers(0, 2),
    scale=st.sampled_from([1, 2, 3]),
    multiple=st.sampled_from([1, 2, 4]),
    tile_extra=st.integers(6, 24),
)
def test_tiled_equals_untiled_whenever_overlap_is_four_receptive_radii(
    h: int, w: int, depth: int, scale: int, multiple: int, tile_extra: int
) -> None:
    net = ConvStack(depth, scale, multiple).eval()
    overlap = 4 * (depth + 1)
    lr = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(h * 100 + w))
    with torch.no_grad():
        padded, _ = pad_to_multiple(lr, multiple)
        full = net(padded)[..., : h * scale, : w * scale]
        res = tiled_forward(net, lr, tile=overlap + multiple * tile_extra, overlap=overlap)
    assert res.outputs[0].shape == full.shape
    assert (res.outputs[0] - full).abs().max().item() < 1e-5


def test_window_shapes() -> None:
    w = window_1d(40, 16, 0, window="linear")
    assert w[:4].max() == 0 and w[12:].min() == 1 and torch.all(w[1:] >= w[:-1])
    c = window_1d(40, 16, 16)
    assert torch.allclose(c, c.flip(0)) and c[20] == 1
    assert torch.equal(window_1d(10, 0, 0), torch.ones(10, dtype=torch.float64))
    with pytest.raises(ValueError):
        window_1d(10, 4, 4, margin=0.5)


def test_pad_to_multiple_reflects_bottom_right() -> None:
    x = torch.arange(15.0).view(1, 1, 3, 5)
    y, pad = pad_to_multiple(x, 4)
    assert pad == (1, 3) and y.shape == (1, 1, 4, 8)
    assert torch.equal(y[..., :3, :5], x) and torch.equal(y[0, 0, 3, :5], x[0, 0, 1])
    tiny, _ = pad_to_multiple(torch.ones(1, 1, 1, 1), 4)  # too small to reflect: replicated
    assert tiny.shape == (1, 1, 4, 4) and bool((tiny == 1).all())



def test_run_padded_runs_any_size_and_crops_back() -> None:
    """restorekit.run_padded: the one pad -> run -> crop (inference, the fidelity validators, SRFlowNet(lr))."""
    from restorekit import run_padded

    seen = []

    def nearest_x2(x: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(x.shape[-2:]))
        return torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")

    lr = torch.rand(2, 3, 5, 7)
    out = run_padded(nearest_x2, lr, multiple=4, scale=2)
    assert seen == [(8, 8)] and out.shape == (2, 3, 10, 14)
    assert torch.equal(out, torch.nn.functional.interpolate(lr, scale_factor=2, mode="nearest"))
    with pytest.raises(ValueError, match=r"returned shape \(2, 3, 8, 8\) for input \(2, 3, 8, 8\) \(scale 2\)"):
        run_padded(lambda x: x, lr, multiple=4, scale=2)


def test_flow_alignment_and_latent_crops() -> None:
    shapes = [(1, 6, 16, 24), (1, 24, 8, 12)]  # HR 32x48 from LR 16x24 at x2
    assert flow_alignment(2, 2, (16, 24), shapes) == 2
    assert flow_alignment(4, 1, (8, 8), [(1, 96, 4, 4)]) == 2  # top z at HR/8, x4: LR multiples of 2
    with pytest.raises(ValueError):
        flow_alignment(2, 1, (16, 24), [(1, 6, 5, 24)])
    zs = [torch.arange(16 * 24.0).view(1, 1, 16, 24), torch.arange(8 * 12.0).view(1, 1, 8, 12)]
    crops = crop_latents(zs, Tile(4, 8, 8, 12), 2, (16, 24))
    assert torch.equal(crops[0], zs[0][..., 4:12, 8:20]) and torch.equal(crops[1], zs[1][..., 2:6, 4:10])


# ----------------------------------------------------------------------------------------------------
# RRDB


def test_rrdb_receptive_field_is_within_the_computed_radius() -> None:
    net = tiny_rrdb()
    x = torch.rand(1, 3, 64, 64)
    y = x.clone()
    y[..., 32, 32] += 1
    with torch.no_grad():
        changed = (net(x) - net(y)).abs().sum((0, 1)).nonzero()
    lo, hi = changed.min(0).values / 2, changed.max(0).values / 2
    assert (32 - lo <= RRDB_RADIUS).all() and (hi - 32 <= RRDB_RADIUS).all()


def test_rrdb_tiled_equals_untiled_when_overlap_covers_the_receptive_field() -> None:
    net = tiny_rrdb()
    lr = lr_batch(120, 120, batch=2)
    with torch.no_grad():
        full = net(lr)
        res = tiled_forward(net, lr, tile=100, overlap=4 * RRDB_RADIUS + 4)
    assert len(plan_tiles(120, 120, 100, 4 * RRDB_RADIUS + 4)) == 4
    assert not res.nonfinite.any()
    assert (res.outputs[0] - full).abs().max().item() < 1e-4


def test_rrdb_small_overlap_is_seamless_not_exact() -> None:
    net = tiny_rrdb()
    lr = lr_batch(64, 64)
    with torch.no_grad():
        full = net(lr)
        blended = tiled_forward(net, lr, tile=24, overlap=8).outputs[0]
        hard = tiled_forward(net, lr, tile=16, overlap=0).outputs[0]  # abutting tiles, visible seams
    err_blend, err_hard = (blended - full).abs(), (hard - full).abs()
    assert err_blend.max() > 1e-6  # not exact: the overlap is smaller than the receptive field
    assert err_blend.max() < err_hard.max() and err_blend.mean() < err_hard.mean()
    assert err_blend.mean() < 2e-3


def test_tiled_forward_pads_to_the_size_multiple() -> None:
    net = tiny_rrdb(scale=2, pixel_unshuffle=True)  # Real-ESRGAN x2 layout: size_multiple 2
    lr = lr_batch(37, 45)
    with torch.no_grad():
        padded, _ = pad_to_multiple(lr, 2)
        full = net(padded)[..., :74, :90]
        res = tiled_forward(net, lr, tile=100, overlap=80)
    assert res.outputs[0].shape == (1, 3, 74, 90)
    assert (res.outputs[0] - full).abs().max().item() < 1e-4


def test_non_finite_tiles_are_flagged_and_left_out() -> None:
    lr = torch.rand(2, 3, 32, 32)

    def fn(x: torch.Tensor, t: Tile) -> list[torch.Tensor]:
        y = x.repeat_interleave(2, -1).repeat_interleave(2, -2)
        if t.x > 0 and t.y == 0:
            y = y.clone()
            y[1] = float("nan")
        return [y]

    res = run_tiled(lr, fn, scale=2, tile=20, overlap=8)
    assert res.nonfinite.tolist() == [[False, True]]
    assert res.bad_tiles[(0, 1)].x > 0 and res.bad_tiles[(0, 1)].y == 0
    assert torch.isfinite(res.outputs[0]).all()
    assert torch.allclose(res.outputs[0][0], lr[0].repeat_interleave(2, -1).repeat_interleave(2, -2), atol=1e-6)


# ----------------------------------------------------------------------------------------------------
# flows


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_fake_flow_tiled_decode_matches_untiled_with_the_same_latents(temperature: float) -> None:
    torch.manual_seed(0)
    flow = FakeFlow().eval()
    lr = lr_batch(40, 56, batch=2)
    latents = sample_latents(flow.latent_shapes(lr.shape), temperature, torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = flow.decode(lr, latents=latents)
        res = tiled_flow_decode(flow, lr, [latents], tile=24, overlap=4 * FAKE_FLOW_RADIUS)
    assert not res.nonfinite.any()
    assert (res.outputs[0] - full).abs().max().item() < 1e-5


def test_flow_tiles_reuse_conditional_features_for_every_latent_set() -> None:
    flow = FakeFlow().eval()
    lr = lr_batch(32, 32)
    sets = [sample_latents(flow.latent_shapes(lr.shape), t, torch.Generator().manual_seed(0)) for t in (0.0, 0.5, 0.9)]
    with torch.no_grad():
        res = tiled_flow_decode(flow, lr, sets, tile=20, overlap=12)
        fulls = [flow.decode(lr, latents=z) for z in sets]
    n_tiles = len(plan_tiles(32, 32, 20, 12, 2))
    assert flow.cond_calls == n_tiles + 3 and len(res.outputs) == 3
    assert max((a - b).abs().max().item() for a, b in zip(res.outputs, fulls)) < 1e-5


def _radius(model, lr: torch.Tensor, latents) -> float:
    """Measured receptive-field radius (LR pixels) of a flow decode around the image centre."""
    y = lr.clone()
    cy, cx = lr.shape[-2] // 2, lr.shape[-1] // 2
    y[..., cy, cx] += 0.5
    with torch.no_grad():
        d = (model.decode(lr, latents=latents) - model.decode(y, latents=latents)).abs().sum((0, 1)).nonzero()
    assert len(d), "the decode does not depend on the LR image"
    s = model.scale
    return float(max(cy - d[:, 0].min() / s, d[:, 0].max() / s - cy, cx - d[:, 1].min() / s, d[:, 1].max() / s - cx))


def test_srflow_tiled_decode_matches_untiled_at_temperatures_0_and_0_8() -> None:
    """The same latents, cropped per tile: tiled == untiled to float rounding when overlap >= 4 (radius + 2), at
    T = 0 and T = 0.8 (both latent sets decoded in one tiled pass, conditional features shared)."""
    model = srflow_tiny()
    lr = lr_batch(32, 96)
    shapes = model.latent_shapes(lr.shape)
    sets = [sample_latents(shapes, t, torch.Generator().manual_seed(2), batch=1) for t in (0.0, 0.8)]
    radius = _radius(model, lr, sets[1])
    assert 4 < radius < 30  # the RRDB trunk plus the flow's convolutions (about 15 LR pixels for this net)
    overlap = int(4 * (radius + 2)) // 2 * 2
    with torch.no_grad():
        fulls = flow_decoder(model)(lr, sets)
        res = tiled_flow_decode(model, lr, sets, tile=overlap + 16, overlap=overlap)
    assert len(plan_tiles(32, 96, overlap + 16, overlap, model.size_multiple)) > 1
    assert not res.nonfinite.any()
    for tiled, full in zip(res.outputs, fulls):  # measured: ~1e-7 at T = 0, ~2e-6 at T = 0.8
        assert (tiled - full).abs().max().item() < 1e-5


# ----------------------------------------------------------------------------------------------------
# end to end


def test_cli_tiled_samples_equal_untiled_samples(tmp_path: Path, fakes: FakePlugin, capsys) -> None:
    save(tmp_path / "in" / "a.png", sample_image("astronaut", 38, 50))  # padded to 38 x 50 (even) already
    save(tmp_path / "in" / "b.png", sample_image("coffee", 37, 45))  # odd: padded by reflection, cropped back
    spec = {"inputs": ["in"], "mode": "sample", "temperatures": [0.0, 0.8], "output_dir": "whole"}
    assert run([pipeline(tmp_path, spec)], capsys)[0] == 0
    tiled = {**spec, "output_dir": "tiled", "tile": {"size": 20, "overlap": 12}}
    assert run([pipeline(tmp_path, tiled, name="t.toml")], capsys)[0] == 0
    for name in ("a_t0_s0_seed0.png", "a_t0.8_s0_seed0.png", "b_t0.8_s0_seed0.png"):
        whole, tile = read(tmp_path / "whole" / name).astype(int), read(tmp_path / "tiled" / name).astype(int)
        assert whole.shape == tile.shape and np.abs(whole - tile).max() <= 1, name


def test_cli_tiled_rrdb_sr(tmp_path: Path, capsys) -> None:
    save(tmp_path / "in" / "a.png", sample_image("chelsea", 40, 44))
    base = {"inputs": ["in"], "output_dir": "whole"}
    params = {"nf": 8, "nb": 1, "gc": 4, "scale": 2}
    assert run([pipeline(tmp_path, base, component="rrdb", params=params)], capsys)[0] == 0
    tiled = {**base, "output_dir": "tiled", "tile": {"size": 32, "overlap": 24}}
    assert run([pipeline(tmp_path, tiled, component="rrdb", params=params, name="t.toml")], capsys)[0] == 0
    whole, tile = read(tmp_path / "whole" / "a.png").astype(int), read(tmp_path / "tiled" / "a.png").astype(int)
    assert whole.shape == tile.shape == (80, 88, 3) and np.abs(whole - tile).mean() < 0.5
