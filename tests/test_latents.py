"""restorekit.latents: sampling (one sampler, the official SRFlow order), the restore normalisation, centre-crop
transfer and interpolation; with hand-computed numbers and through a tiny real SRFlow."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import restorekit.latents
import restorekit_srflow
from restorekit.errors import UserError
from restorekit.latents import (
    interpolate_latents,
    latent_norm,
    normalize_latents,
    sample_latents,
    scale_latents,
    temperature_at,
    transfer_latents,
    zeros_like_latents,
)
from restorekit_srflow import SRFlowNet

SHAPES = [(2, 6, 16, 12), (2, 24, 8, 6)]  # a 2-level flow: split eps at H/2, top z at H/4 (HR 32x24)


def test_sample_latents_shapes_statistics_and_reproducibility() -> None:
    zs = sample_latents([(1, 8, 64, 64), (1, 32, 32, 32)], 0.7, torch.Generator().manual_seed(3))
    assert [tuple(z.shape) for z in zs] == [(1, 8, 64, 64), (1, 32, 32, 32)]
    for z in zs:
        assert abs(z.mean().item()) < 0.02 and abs(z.std().item() - 0.7) < 0.02
    again = sample_latents([(1, 8, 64, 64), (1, 32, 32, 32)], 0.7, torch.Generator().manual_seed(3))
    assert all(torch.equal(a, b) for a, b in zip(zs, again))
    # the same generator state gives the same noise at every temperature: T=0.35 is the T=0.7 sample halved
    half = sample_latents([(1, 8, 64, 64), (1, 32, 32, 32)], 0.35, torch.Generator().manual_seed(3))
    assert all(torch.allclose(a * 0.5, b) for a, b in zip(zs, half))
    zero = sample_latents(SHAPES, 0.0, torch.Generator().manual_seed(3))
    assert all(not z.any() for z in zero)


def test_per_sample_shapes_get_a_batch() -> None:
    per_sample = [(6, 16, 12), (24, 8, 6)]  # what SRFlow's latent_shapes returns
    zs = sample_latents(per_sample, 1.0, torch.Generator().manual_seed(0), batch=2)
    assert [tuple(z.shape) for z in zs] == SHAPES
    assert [tuple(z.shape) for z in sample_latents(per_sample, 1.0)] == [(1, 6, 16, 12), (1, 24, 8, 6)]
    assert sample_latents(SHAPES, 1.0, batch=3)[0].shape[0] == 3
    ref = [torch.randn(2, 6, 20, 20), torch.randn(2, 24, 10, 10)]
    assert [tuple(z.shape) for z in transfer_latents(ref, per_sample)] == SHAPES


def test_sample_latents_temperature_map_scales_per_region() -> None:
    tmap = torch.zeros(1, 1, 32, 24)
    tmap[..., :, 12:] = 1.0  # right half hot, left half cold
    zs = sample_latents(SHAPES, tmap, torch.Generator().manual_seed(0))
    for z in zs:
        w = z.shape[-1]
        assert not z[..., : w // 2].any()
        assert z[..., w // 2 :].std() > 0.5
    # a map is area-resized to each level
    assert temperature_at(tmap, (8, 6)).shape == (1, 1, 8, 6)
    assert temperature_at(0.5, (8, 6)) == 0.5
    with pytest.raises(ValueError):
        temperature_at(torch.ones(1, 3, 4, 4), (2, 2))
    with pytest.raises(ValueError):
        sample_latents([(1, 2)], 1.0)


def test_scale_latents_float_and_map() -> None:
    zs = [torch.ones(1, 2, 4, 4), torch.ones(1, 8, 2, 2)]
    assert all(torch.equal(z, torch.full_like(z, 0.5)) for z in scale_latents(zs, 0.5))
    m = torch.linspace(0, 1, 16).view(1, 1, 4, 4)
    out = scale_latents(zs, m)
    assert torch.allclose(out[0][0, 0], m[0, 0]) and out[1].shape == (1, 8, 2, 2)


def test_normalize_latents_channel_then_location() -> None:
    g = torch.Generator().manual_seed(1)
    zs = [torch.randn(2, 6, 16, 12, generator=g) * 3 + 5, torch.randn(2, 24, 8, 6, generator=g) * 0.1 - 2]
    out = normalize_latents(zs)
    for z in out:
        # the last step: every location standardised over channels
        assert torch.allclose(z.mean(1), torch.zeros_like(z.mean(1)), atol=1e-4)
        assert torch.allclose(z.std(1, unbiased=False), torch.ones_like(z.mean(1)), atol=1e-3)
        # and the channel step before it left every channel roughly standard over space
        assert abs(z.std().item() - 1) < 0.1
    # the first step alone, checked directly on a 1-channel tensor (the location step is skipped for C = 1)
    one = normalize_latents([torch.randn(1, 1, 8, 8, generator=g) * 4 + 1])[0]
    assert abs(one.mean().item()) < 1e-5 and abs(one.std(unbiased=False).item() - 1) < 1e-4
    # degenerate axes do not make NaN
    assert torch.isfinite(normalize_latents([torch.randn(1, 4, 1, 1)])[0]).all()
    with pytest.raises(ValueError):
        normalize_latents([torch.zeros(3, 4)])


def test_normalize_latents_matches_a_direct_two_step_formula() -> None:
    z = torch.randn(1, 3, 5, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    a = (z - z.mean((2, 3), keepdim=True)) / (z.std((2, 3), keepdim=True, unbiased=False) + 1e-6)
    b = (a - a.mean(1, keepdim=True)) / (a.std(1, keepdim=True, unbiased=False) + 1e-6)
    assert torch.allclose(normalize_latents([z])[0], b)


def test_transfer_latents_aligned_centre_crop() -> None:
    # reference HR 48x40 -> levels 24x20 and 12x10; target HR 32x24 -> 16x12 and 8x6
    ref = [torch.arange(24 * 20).float().view(1, 1, 24, 20).repeat(1, 6, 1, 1),
           torch.arange(12 * 10).float().view(1, 1, 12, 10).repeat(1, 24, 1, 1)]
    out = transfer_latents(ref, SHAPES)
    assert [tuple(z.shape) for z in out] == SHAPES
    # top level: (12-8)//2 = 2 rows, (10-6)//2 = 2 cols; level 1 uses twice that: the same image region
    assert torch.equal(out[1][0, 0], ref[1][0, 0, 2:10, 2:8])
    assert torch.equal(out[0][0, 0], ref[0][0, 0, 4:20, 4:16])
    assert torch.equal(out[0][0], out[0][1])  # batch of 1 repeated


def test_transfer_latents_errors_are_one_line_user_errors() -> None:
    ref = [torch.zeros(1, 6, 8, 8), torch.zeros(1, 24, 4, 4)]
    with pytest.raises(UserError, match="smaller than the target") as exc:
        transfer_latents(ref, SHAPES)
    assert "\n" not in str(exc.value)
    with pytest.raises(UserError, match="latent levels"):
        transfer_latents(ref[:1], SHAPES)
    with pytest.raises(UserError, match="level 0"):
        transfer_latents([torch.zeros(1, 5, 40, 40), torch.zeros(1, 24, 20, 20)], SHAPES)


def test_transfer_latents_unnested_levels_crop_each_level() -> None:
    ref = [torch.arange(49.0).view(1, 1, 7, 7), torch.arange(25.0).view(1, 1, 5, 5)]
    out = transfer_latents(ref, [(1, 1, 3, 3), (1, 1, 3, 3)])
    assert torch.equal(out[0][0, 0], ref[0][0, 0, 2:5, 2:5]) and torch.equal(out[1][0, 0], ref[1][0, 0, 1:4, 1:4])


def test_interpolate_linear_endpoints_and_midpoint() -> None:
    a = [torch.zeros(1, 2, 4, 4), torch.zeros(1, 8, 2, 2)]
    b = [torch.ones(1, 2, 4, 4), torch.full((1, 8, 2, 2), 2.0)]
    frames = interpolate_latents(a, b, 5, "linear")
    assert len(frames) == 5
    assert all(torch.equal(x, y) for x, y in zip(frames[0], a)) and all(torch.equal(x, y) for x, y in zip(frames[-1], b))
    assert torch.allclose(frames[2][1], torch.ones(1, 8, 2, 2))
    # slerp from zeros falls back to the straight line t * z
    sl = interpolate_latents(a, b, 5, "slerp")
    assert all(torch.allclose(x, y) for f, g in zip(frames, sl) for x, y in zip(f, g))
    with pytest.raises(ValueError):
        interpolate_latents(a, b, 1)
    with pytest.raises(ValueError):
        interpolate_latents(a, b[:1], 3)


def test_slerp_keeps_the_norm_between_equal_norm_ends() -> None:
    g = torch.Generator().manual_seed(5)
    a = [torch.randn(2, 6, 8, 8, generator=g), torch.randn(2, 24, 4, 4, generator=g)]
    b = [torch.randn(2, 6, 8, 8, generator=g), torch.randn(2, 24, 4, 4, generator=g)]
    b = [z * (latent_norm(a) / latent_norm(b)).view(2, 1, 1, 1) for z in b]
    frames = interpolate_latents(a, b, 7, "slerp")
    for f in frames:
        assert torch.allclose(latent_norm(f), latent_norm(a), rtol=1e-4)
    lin_mid = interpolate_latents(a, b, 3, "linear")[1]
    assert (latent_norm(lin_mid) < latent_norm(a)).all()  # the straight line cuts through the sphere


@settings(max_examples=30, deadline=None)
@given(
    t=st.floats(0.0, 2.0),
    h=st.integers(1, 6),
    w=st.integers(1, 6),
    n=st.integers(2, 6),
    mode=st.sampled_from(["linear", "slerp"]),
)
def test_properties_shapes_and_ends(t: float, h: int, w: int, n: int, mode: str) -> None:
    shapes = [(1, 3, 4 * h, 4 * w), (1, 12, 2 * h, 2 * w)]
    zs = sample_latents(shapes, t, torch.Generator().manual_seed(h * 7 + w))
    assert [tuple(z.shape) for z in zs] == shapes and all(torch.isfinite(z).all() for z in zs)
    assert math.isclose(float(latent_norm(zeros_like_latents(zs))[0]), 0.0)
    other = sample_latents(shapes, 1.0, torch.Generator().manual_seed(99))
    frames = interpolate_latents(zs, other, n, mode)  # type: ignore[arg-type]
    assert len(frames) == n
    assert all(torch.allclose(x, y) for x, y in zip(frames[-1], other))
    assert all(torch.isfinite(z).all() for f in frames for z in f)
    crop = transfer_latents(other, [(1, 3, 4 * max(1, h // 2), 4 * max(1, w // 2)), (1, 12, 2 * max(1, h // 2), 2 * max(1, w // 2))])
    assert crop[0].shape[-1] == 4 * max(1, w // 2)


def test_sample_latents_draws_top_z_first_then_the_deepest_split() -> None:
    """The official SRFlow order, so ``restore-run`` and ``SRFlowNet.decode`` give one sample per seed."""
    shapes = [(1, 2, 8, 8), (1, 4, 4, 4), (1, 8, 2, 2)]  # encode order: shallow split, deeper split, top z
    zs = sample_latents(shapes, 0.5, torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(4)
    top, deep, shallow = (torch.randn(s, generator=g) for s in reversed(shapes))
    assert torch.equal(zs[2], top * 0.5) and torch.equal(zs[1], deep * 0.5) and torch.equal(zs[0], shallow * 0.5)
    g = torch.Generator().manual_seed(4)
    before = g.get_state()
    assert all(not z.any() for z in sample_latents(shapes, 0.0, g))  # temperature 0: zeros, nothing drawn
    assert torch.equal(g.get_state(), before)


# ----------------------------------------------------------------------------------------------------
# as SRFlow users see them (restorekit_srflow re-exports these functions)


SQRT_1_5 = math.sqrt(1.5)


def test_the_plugin_re_exports_the_core_implementations() -> None:
    for name in ("normalize_latents", "transfer_latents", "interpolate_latents", "sample_latents"):
        assert getattr(restorekit_srflow, name) is getattr(restorekit.latents, name)


def test_normalize_latents_by_hand() -> None:
    # 3 channels × 2 locations: per channel over space first, then per location over channels
    z = torch.tensor([[1.0, 3.0], [5.0, 1.0], [7.0, 7.0]]).view(1, 3, 1, 2)
    # channel step: [1,3] → [-1,1]; [5,1] → [1,-1]; [7,7] (std 0) → [0,0]
    # location step: [-1,1,0] has mean 0 and std sqrt(2/3) → [-sqrt(1.5), sqrt(1.5), 0]
    (out,) = normalize_latents([z])
    expected = torch.tensor([[-SQRT_1_5, SQRT_1_5], [SQRT_1_5, -SQRT_1_5], [0.0, 0.0]]).view(1, 3, 1, 2)
    assert torch.allclose(out, expected, atol=1e-5)


def test_slerp_keeps_endpoints_and_the_norm_between_orthogonal_unit_vectors() -> None:
    a = [torch.tensor([1.0, 0.0]).view(1, 2, 1, 1), torch.zeros(1, 1, 1, 1)]
    b = [torch.tensor([0.0, 0.0]).view(1, 2, 1, 1), torch.ones(1, 1, 1, 1)]  # orthogonal to a, both unit norm
    slerp = interpolate_latents(a, b, 3, mode="slerp")
    linear = interpolate_latents(a, b, 3, mode="linear")
    assert all(torch.equal(x, y) for x, y in zip(slerp[0], a)) and all(torch.equal(x, y) for x, y in zip(slerp[-1], b))

    def norm(latents: list[torch.Tensor]) -> float:
        return math.sqrt(sum(float((z**2).sum()) for z in latents))

    assert norm(slerp[1]) == pytest.approx(1.0, abs=1e-6)  # stays on the unit sphere
    assert norm(linear[1]) == pytest.approx(1 / math.sqrt(2), abs=1e-6)  # the chord cuts inside
    assert slerp[1][0].flatten()[0].item() == pytest.approx(1 / math.sqrt(2), abs=1e-6)
    # from zero latents the angle is undefined: slerp falls back to the straight line
    zero = [torch.zeros_like(z) for z in b]
    assert all(torch.allclose(x, 0.5 * y) for x, y in zip(interpolate_latents(zero, b, 3, mode="slerp")[1], b))


def test_latent_tools_round_trip_through_a_tiny_srflow() -> None:
    torch.manual_seed(0)
    net = SRFlowNet(scale=4, nf=8, nb=1, gc=4, K=1, L=3, stack_blocks=[0], hidden_channels=8).eval()
    lr_big, hr_big = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 32, 32)
    lr_small = torch.rand(1, 3, 4, 6)
    with torch.no_grad():
        ref = net.encode(hr_big, lr_big).latents
        moved = transfer_latents(ref, net.latent_shapes(lr_small.shape))
        sr = net.decode(lr_small, moved)
        restored = net.decode(lr_big, normalize_latents(ref))
        frames = interpolate_latents([torch.zeros_like(z) for z in ref], ref, 3, mode="slerp")
        last = net.decode(lr_big, frames[-1])
    assert sr.shape == (1, 3, 16, 24) and torch.isfinite(sr).all()
    assert restored.shape == hr_big.shape and torch.isfinite(restored).all()
    assert (last - hr_big).abs().max() < 1e-4
