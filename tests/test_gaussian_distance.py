"""The Gaussian-distance validator: HQ → latents → mean per-element distance from N(0, 1) (not logged)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from restorekit.components import EncodeResult, Sample, ValidationContext
from restorekit.errors import UserError
from restorekit_srflow import SRFlowNet
from restorekit_validators.gaussian import IDEAL, GaussianDistance, GaussianDistanceParams


class GaussianFlow(nn.Module):
    """Pretends to be a perfect flow: its latents are exact N(0, σ²) draws."""

    scale, size_multiple = 2, 1

    def __init__(self, sigma: float = 1.0) -> None:
        super().__init__()
        self.sigma = sigma

    def encode(self, hr, lr, add_noise=False):
        g = torch.Generator().manual_seed(int(hr.sum().item() * 1000) % 10_000)
        z = [torch.randn(hr.shape[0], 6, 32, 32, generator=g) * self.sigma, torch.randn(hr.shape[0], 24, 16, 16, generator=g) * self.sigma]
        return EncodeResult(z, torch.full((hr.shape[0],), 3.0), torch.zeros(hr.shape[0]))


def samples(n: int = 3, size: int = 16, scale: int = 2):
    torch.manual_seed(0)
    return [Sample(f"img{i}.png", torch.rand(1, 3, size, size), torch.rand(1, 3, size * scale, size * scale)) for i in range(n)]


def test_standard_normal_latents_score_the_ideal_value() -> None:
    res = GaussianDistance()(GaussianFlow(), samples(), ValidationContext(torch.device("cpu"), 2))
    assert IDEAL == pytest.approx(0.5 * (1 + math.log(2 * math.pi)))
    assert res.metrics["gaussian_distance"] == pytest.approx(IDEAL, abs=0.01)
    assert res.metrics["latent_std_0"] == pytest.approx(1.0, abs=0.02)
    assert res.metrics["latent_mean_1"] == pytest.approx(0.0, abs=0.02)
    assert res.metrics["nll"] == 3.0 and len(res.per_image) == 3


def test_wider_latents_score_further_from_the_ideal() -> None:
    res = GaussianDistance()(GaussianFlow(sigma=2.0), samples(), ValidationContext(torch.device("cpu"), 2))
    assert res.metrics["gaussian_distance"] == pytest.approx(0.5 * 4 + 0.5 * math.log(2 * math.pi), abs=0.05)


def test_matches_direct_computation_on_srflow_and_writes_heatmaps(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = SRFlowNet(scale=4, nf=8, nb=1, gc=4, K=1, L=3, stack_blocks=[0], hidden_channels=8).eval()
    data = [Sample("a.png", torch.rand(1, 3, 5, 6), torch.rand(1, 3, 20, 24))]  # odd LR height: cropped to 4
    res = GaussianDistance(GaussianDistanceParams(heatmaps=1))(
        net, data, ValidationContext(torch.device("cpu"), 4, step=7, output_dir=tmp_path)
    )
    with torch.no_grad():
        enc = net.encode(data[0].hq[..., :16, :24], data[0].lq[..., :4, :6])
    flat = torch.cat([z.flatten() for z in enc.latents])
    assert res.metrics["gaussian_distance"] == pytest.approx((0.5 * flat**2 + 0.5 * math.log(2 * math.pi)).mean().item(), rel=1e-5)
    assert res.metrics["nll"] == pytest.approx(enc.nll.item(), rel=1e-5)
    maps = sorted(p.name for p in (tmp_path / "gaussian_distance").iterdir())
    assert maps == ["a_step7_level0.png", "a_step7_level1.png"]


def test_non_flow_is_a_clear_error() -> None:
    with pytest.raises(UserError, match="gaussian_distance: the validated network \\(Conv2d\\) is not a flow"):
        GaussianDistance()(nn.Conv2d(3, 3, 1), samples(1), ValidationContext(torch.device("cpu"), 2))
