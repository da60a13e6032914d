"""Latent tools as SRFlow users see them (``restorekit_srflow.latents``): normalise, transfer, interpolate, sample —
with hand-computed numbers, and with the latent shapes of a real (tiny) SRFlow network."""

from __future__ import annotations

import math

import pytest
import torch

import restorekit.latents
import restorekit_srflow
from restorekit.errors import UserError
from restorekit_srflow import SRFlowNet
from restorekit_srflow.latents import interpolate_latents, normalize_latents, sample_latents, transfer_latents

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


def test_normalize_latents_gives_zero_mean_unit_std_per_location() -> None:
    torch.manual_seed(0)
    latents = [torch.randn(2, 6, 8, 8) * 3 + 2, torch.randn(2, 24, 4, 4) * 0.2 - 1]
    for z in normalize_latents(latents):
        assert z.mean(1).abs().max() < 1e-5
        assert (z.std(1, unbiased=False) - 1).abs().max() < 1e-4
    assert [tuple(z.shape) for z in normalize_latents(latents)] == [(2, 6, 8, 8), (2, 24, 4, 4)]


def test_transfer_latents_takes_aligned_centre_crops() -> None:
    torch.manual_seed(0)
    ref = [torch.randn(1, 6, 16, 16), torch.randn(1, 96, 4, 4)]
    out = transfer_latents(ref, [(6, 8, 8), (96, 2, 2)])
    assert [tuple(z.shape) for z in out] == [(1, 6, 8, 8), (1, 96, 2, 2)]
    # the deepest level is cropped from (4-2)//2 = 1, the level 4x larger from 4: the same image region
    assert torch.equal(out[1], ref[1][:, :, 1:3, 1:3])
    assert torch.equal(out[0], ref[0][:, :, 4:12, 4:12])
    # a batch-1 reference serves a target batch of 3
    assert transfer_latents(ref, [(3, 6, 8, 8), (3, 96, 2, 2)])[0].shape == (3, 6, 8, 8)


def test_transfer_from_a_smaller_reference_is_a_one_line_error() -> None:
    ref = [torch.randn(1, 6, 4, 4), torch.randn(1, 96, 1, 1)]
    with pytest.raises(UserError) as info:
        transfer_latents(ref, [(6, 8, 8), (96, 2, 2)])
    assert "smaller than the target" in str(info.value) and "\n" not in str(info.value)


def test_linear_interpolation_numbers() -> None:
    a, b = [torch.zeros(1, 2, 1, 1)], [torch.tensor([2.0, -4.0]).view(1, 2, 1, 1)]
    frames = interpolate_latents(a, b, 5)
    assert len(frames) == 5
    assert torch.equal(frames[0][0], a[0]) and torch.equal(frames[-1][0], b[0])
    assert frames[2][0].flatten().tolist() == [1.0, -2.0]
    assert frames[1][0].flatten().tolist() == [0.5, -1.0]


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


def test_sample_latents_for_srflow_shapes() -> None:
    torch.manual_seed(0)
    net = SRFlowNet(scale=4, nf=8, nb=1, gc=4, K=1, L=3, stack_blocks=[0], hidden_channels=8)
    shapes = net.latent_shapes((1, 3, 32, 32))
    assert shapes == [(6, 64, 64), (96, 16, 16)]
    zs = sample_latents(shapes, 0.8, torch.Generator().manual_seed(1), batch=2)
    assert [tuple(z.shape) for z in zs] == [(2, 6, 64, 64), (2, 96, 16, 16)]
    for z in zs:
        assert abs(z.mean().item()) < 0.02 and abs(z.std().item() - 0.8) < 0.02
    assert all(not z.any() for z in sample_latents(shapes, 0.0, torch.Generator().manual_seed(1)))
    half = torch.ones(1, 1, 128, 128)
    half[..., 64:] = 0.0  # a temperature map at HR size, resized per level
    zmap = sample_latents(shapes, half, torch.Generator().manual_seed(1))
    assert not zmap[0][..., 32:].any() and zmap[0][..., :32].std() > 0.9
    assert not zmap[1][..., 8:].any()


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
