"""restorekit.metrics is the one PSNR/SSIM: the validators and the inference reports give the same numbers, and
an image under SSIM's 11x11 window is one rule for both (undefined: a one-line error in a validator, "n/a" in a
report)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import restorekit
from restorekit import Sample, UserError, ValidationContext, metrics
from restorekit.infer import image_metrics
from restorekit_validators import PSNR, SSIM, PSNRParams, SSIMParams


def _pair(h: int, w: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    hr = torch.rand(3, h, w, generator=g)
    return (hr + 0.05 * torch.randn(3, h, w, generator=g)).clamp(0, 1), hr


class Upscale(nn.Module):
    """model(lr) = nearest x2 of lr: the validators then compare the given SR with HR."""

    scale, size_multiple = 2, 1

    def __init__(self, sr: Tensor) -> None:
        super().__init__()
        self.sr = sr

    def forward(self, lr: Tensor) -> Tensor:
        return self.sr[None]


def test_validators_and_reports_measure_alike() -> None:
    sr, hr = _pair(24, 30)
    report = image_metrics(sr, hr, border=2)
    sample = Sample("a", F.avg_pool2d(hr[None], 2), hr[None])
    ctx = ValidationContext(device=torch.device("cpu"), scale=2)
    model = Upscale(sr)
    assert PSNR()(model, [sample], ctx).metrics["psnr"] == pytest.approx(report["psnr_rgb"], abs=1e-9)
    assert PSNR(PSNRParams(channel="y"))(model, [sample], ctx).metrics["psnr_y"] == pytest.approx(report["psnr_y"], abs=1e-9)
    assert SSIM()(model, [sample], ctx).metrics["ssim"] == pytest.approx(report["ssim_rgb"], abs=1e-12)
    assert SSIM(SSIMParams(channel="y"))(model, [sample], ctx).metrics["ssim_y"] == pytest.approx(report["ssim_y"], abs=1e-12)
    assert 20 < report["psnr_rgb"] < 40 and 0 < report["ssim_rgb"] < 1


def test_images_under_eleven_pixels_have_no_ssim() -> None:
    sr, hr = _pair(10, 16)
    a, b = sr.permute(1, 2, 0).double().numpy(), hr.permute(1, 2, 0).double().numpy()
    with pytest.raises(ValueError, match="at least 11x11 pixels, got 10x16"):
        metrics.ssim(a, b)
    assert metrics.ssim(*(np.pad(x, ((0, 1), (0, 0), (0, 0)), mode="edge") for x in (a, b))) < 1  # 11 rows: defined
    assert math.isfinite(metrics.psnr(a, b))
    report = image_metrics(sr, hr, border=0)  # the report: PSNR measured, SSIM "n/a"
    assert math.isfinite(report["psnr_rgb"]) and math.isnan(report["ssim_rgb"]) and math.isnan(report["ssim_y"])
    ctx = ValidationContext(device=torch.device("cpu"), scale=2)
    small = Sample("small", F.avg_pool2d(hr[None], 2), hr[None])
    with pytest.raises(UserError, match=r"^ssim: sample 'small': SSIM needs images of at least 11x11 pixels") as info:
        SSIM(SSIMParams(crop_border=0))(Upscale(sr), [small], ctx)
    assert "\n" not in str(info.value)


def test_the_validators_plugin_uses_the_core_metrics() -> None:
    import restorekit_validators as rv

    assert rv.psnr is metrics.psnr and rv.ssim is metrics.ssim and rv.rgb_to_y is metrics.rgb_to_y
    assert "metrics" in restorekit.__all__
