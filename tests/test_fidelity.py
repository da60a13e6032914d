"""PSNR / SSIM: known values, the Y channel, border crops, and the validator classes on a tiny model."""

from __future__ import annotations

import importlib.util
import math
import warnings

import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import Tensor, nn

from restorekit.components import Sample, ValidationContext, ValidationResult
from restorekit.errors import UserError
from restorekit_validators import PSNR, SSIM, PSNRParams, SSIMParams, psnr, rgb_to_y, ssim


@pytest.fixture(scope="module")
def hr() -> np.ndarray:
    img = skimage.data.astronaut()[100:164:2, 180:260:2].astype(np.float64) / 255.0  # 32x40x3
    return 0.1 + 0.8 * img  # room for a +0.1 offset without clipping


def test_identical_images() -> None:
    img = np.random.rand(16, 16, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert psnr(img, img) == math.inf
        assert psnr(img, img, channel="y") == math.inf
        assert ssim(img, img) == pytest.approx(1.0, abs=1e-12)
        assert ssim(img, img, channel="y") == pytest.approx(1.0, abs=1e-12)


def test_constant_offset_gives_exact_psnr(hr: np.ndarray) -> None:
    assert psnr(hr + 0.1, hr) == pytest.approx(20.0, abs=1e-9)
    assert psnr(hr - 0.01, hr) == pytest.approx(40.0, abs=1e-9)
    # Y = 16/255 + (65.481 R + 128.553 G + 24.966 B)/255: an offset of 0.1 on R, G, B moves Y by 0.1·219/255
    expected_y = -20 * math.log10(0.1 * 219 / 255)
    assert psnr(hr + 0.1, hr, channel="y") == pytest.approx(expected_y, abs=1e-9)
    assert psnr(hr + 0.1, hr, channel="y") != pytest.approx(20.0)


def test_y_channel_matches_matlab_rgb2ycbcr() -> None:
    white, black = np.ones((1, 1, 3)), np.zeros((1, 1, 3))
    assert rgb_to_y(white)[0, 0] == pytest.approx(235 / 255)
    assert rgb_to_y(black)[0, 0] == pytest.approx(16 / 255)
    red = np.array([[[1.0, 0.0, 0.0]]])
    assert rgb_to_y(red)[0, 0] == pytest.approx((16 + 65.481) / 255)
    gray = np.random.rand(4, 5, 1)
    np.testing.assert_array_equal(rgb_to_y(gray), gray[..., 0])


def test_y_channel_differs_from_rgb(hr: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    sr = np.clip(hr + rng.normal(0, 0.05, hr.shape), 0, 1)
    assert psnr(sr, hr, channel="y") != pytest.approx(psnr(sr, hr))
    assert ssim(sr, hr, channel="y") != pytest.approx(ssim(sr, hr))


def test_crop_border_removes_the_border(hr: np.ndarray) -> None:
    sr = hr.copy()
    sr[:3] = 0.0
    sr[:, -3:] = 1.0
    assert math.isfinite(psnr(sr, hr)) and math.isfinite(psnr(sr, hr, crop_border=2))
    assert psnr(sr, hr, crop_border=3) == math.inf
    assert ssim(sr, hr) < 1.0
    assert ssim(sr, hr, crop_border=3) == pytest.approx(1.0, abs=1e-12)
    # the crop is of the compared region, not a rescaling: same as cropping by hand
    noisy = np.clip(hr + np.random.default_rng(1).normal(0, 0.03, hr.shape), 0, 1)
    assert psnr(noisy, hr, crop_border=4) == pytest.approx(psnr(noisy[4:-4, 4:-4], hr[4:-4, 4:-4]))


def test_bad_inputs() -> None:
    a = np.zeros((12, 12, 3))
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(a, np.zeros((12, 13, 3)))
    with pytest.raises(ValueError, match="leaves nothing"):
        psnr(a, a, crop_border=6)
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(a, a, crop_border=1)
    with pytest.raises(ValueError, match="channel"):
        psnr(a, a + 0.1, channel="ycbcr")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\(H, W, C\)"):
        psnr(a[..., 0], a[..., 0])


def _reference_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Wang et al. 2004 with an 11x11 Gaussian (sigma 1.5), 'valid' filtering, per channel then averaged."""
    x = np.arange(11) - 5
    g = np.exp(-(x**2) / (2 * 1.5**2))
    g /= g.sum()
    kernel = torch.from_numpy(np.outer(g, g))[None, None]

    def blur(t: np.ndarray) -> np.ndarray:
        return F.conv2d(torch.from_numpy(t)[None, None], kernel).numpy()[0, 0]

    c1, c2 = 0.01**2, 0.03**2
    values = []
    for ch in range(a.shape[2]):
        p, q = a[..., ch], b[..., ch]
        mp, mq = blur(p), blur(q)
        vp, vq, cov = blur(p * p) - mp**2, blur(q * q) - mq**2, blur(p * q) - mp * mq
        m = ((2 * mp * mq + c1) * (2 * cov + c2)) / ((mp**2 + mq**2 + c1) * (vp + vq + c2))
        values.append(m.mean())
    return float(np.mean(values))


def test_ssim_is_the_sr_papers_ssim(hr: np.ndarray) -> None:
    sr = np.clip(hr + np.random.default_rng(2).normal(0, 0.05, hr.shape), 0, 1)
    assert ssim(sr, hr) == pytest.approx(_reference_ssim(sr, hr), abs=1e-9)
    assert ssim(sr, hr, channel="y") == pytest.approx(
        _reference_ssim(rgb_to_y(sr)[..., None], rgb_to_y(hr)[..., None]), abs=1e-9
    )
    assert 0.0 < ssim(sr, hr) < 1.0
    assert ssim(sr, hr) == pytest.approx(ssim(hr, sr), abs=1e-12)


# ----------------------------------------------------------------------------------------------------
# validators


class Bicubic(nn.Module):
    """A tiny generator: bicubic x2 upsampling (the generator contract: model(lr) -> SR)."""

    scale = 2

    def __init__(self, size_multiple: int = 1, offset: float = 0.0) -> None:
        super().__init__()
        self.size_multiple = size_multiple
        self.offset = offset
        self.seen: list[tuple[int, ...]] = []

    def forward(self, x: Tensor) -> Tensor:
        assert not self.training and not torch.is_grad_enabled()
        assert x.shape[-1] % self.size_multiple == 0 and x.shape[-2] % self.size_multiple == 0
        self.seen.append(tuple(x.shape))
        return F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False) + self.offset


def _samples(hr: np.ndarray) -> list[Sample]:
    out = []
    for i, (y, x) in enumerate([(0, 0), (0, 2), (2, 0)]):
        crop = hr[y : y + 28, x : x + 36]
        hq = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)[None].float()
        lq = F.avg_pool2d(hq, 2)
        out.append(Sample(f"img{i}", lq, hq))
    return out


def _hwc(t: Tensor) -> np.ndarray:
    return t[0].permute(1, 2, 0).double().numpy()


CTX = ValidationContext(device=torch.device("cpu"), scale=2)


@pytest.mark.parametrize(
    ("validator", "fn", "key"),
    [
        (PSNR(), psnr, "psnr"),
        (PSNR(PSNRParams(channel="y")), psnr, "psnr_y"),
        (SSIM(), ssim, "ssim"),
        (SSIM(SSIMParams(channel="y", crop_border=4)), ssim, "ssim_y"),
    ],
)
def test_validator_averages(hr: np.ndarray, validator, fn, key: str) -> None:
    model = Bicubic().train()
    samples = _samples(hr)
    result = validator(model, samples, CTX)
    assert isinstance(result, ValidationResult)
    assert model.training  # restored after validation
    assert [r["name"] for r in result.per_image] == ["img0", "img1", "img2"]
    assert set(result.metrics) == {key}
    crop = validator.params.crop_border if validator.params.crop_border is not None else CTX.scale
    expected = []
    for s in samples:
        with torch.no_grad():
            sr = F.interpolate(s.lq, scale_factor=2, mode="bicubic", align_corners=False).clamp(0, 1)
        expected.append(fn(_hwc(sr), _hwc(s.hq), channel=validator.params.channel, crop_border=crop))
    assert [r[key] for r in result.per_image] == pytest.approx(expected, rel=1e-9)
    assert result.metrics[key] == pytest.approx(float(np.mean(expected)), rel=1e-12)
    assert 0 < result.metrics[key] < (60 if key.startswith("psnr") else 1)


def test_validator_crop_defaults_to_scale(hr: np.ndarray) -> None:
    samples = _samples(hr)
    default = PSNR()(Bicubic(), samples, CTX).per_image[0]["psnr"]
    explicit = PSNR(PSNRParams(crop_border=2))(Bicubic(), samples, CTX).per_image[0]["psnr"]
    none = PSNR(PSNRParams(crop_border=0))(Bicubic(), samples, CTX).per_image[0]["psnr"]
    assert default == explicit != none


def test_validator_clamps_the_output(hr: np.ndarray) -> None:
    samples = _samples(hr)[:1]
    result = PSNR(PSNRParams(crop_border=0))(Bicubic(offset=5.0), samples, CTX)
    expected = psnr(np.ones_like(_hwc(samples[0].hq)), _hwc(samples[0].hq))
    assert result.metrics["psnr"] == pytest.approx(expected)


def test_validator_pads_to_size_multiple(hr: np.ndarray) -> None:
    hq = torch.from_numpy(np.ascontiguousarray(hr[:20, :28])).permute(2, 0, 1)[None].float()
    sample = Sample("odd", F.avg_pool2d(hq, 2), hq)  # LR 10x14, not a multiple of 4
    model = Bicubic(size_multiple=4)
    result = SSIM()(model, [sample], CTX)
    assert model.seen == [(1, 3, 12, 16)]
    assert 0 < result.metrics["ssim"] < 1


def test_perfect_model_and_empty_samples(hr: np.ndarray) -> None:
    class Oracle(nn.Module):
        scale = 2
        size_multiple = 1

        def __init__(self, hq: Tensor) -> None:
            super().__init__()
            self.hq = hq

        def forward(self, x: Tensor) -> Tensor:
            return self.hq

    sample = _samples(hr)[0]
    assert PSNR()(Oracle(sample.hq), [sample], CTX).metrics == {"psnr": math.inf}
    assert SSIM()(Oracle(sample.hq), [sample], CTX).metrics["ssim"] == pytest.approx(1.0)
    assert PSNR()(Bicubic(), [], CTX) == ValidationResult({}, [])


def test_validator_size_mismatch_is_a_user_error(hr: np.ndarray) -> None:
    s = _samples(hr)[0]
    bad = Sample("bad", s.lq, s.hq[..., :-1])
    with pytest.raises(UserError, match=r"^psnr: sample 'bad': SR is 28x36 but HQ is 28x35"):
        PSNR()(Bicubic(), [bad], CTX)
    with pytest.raises(UserError, match=r"^ssim: sample 'img0': crop_border 20 leaves nothing"):
        SSIM(SSIMParams(crop_border=20))(Bicubic(), [s], CTX)


def test_params_models() -> None:
    for model in (PSNRParams, SSIMParams):
        assert model().channel == "rgb" and model().crop_border is None
        with pytest.raises(ValidationError):
            model(channel="ycbcr")
        with pytest.raises(ValidationError):
            model(crop_border=-1)
        with pytest.raises(ValidationError):
            model(crop=2)
        assert all(f.description for f in model.model_fields.values())


def test_validators_plugin_hook(empty_registry, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hook offers psnr, ssim, gaussian_distance and the SR-space validators; while ``restorekit_validators.gaussian`` is not
    written yet, a stand-in module supplies its two names."""
    import sys
    import types

    from restorekit.components import Params

    stubbed = importlib.util.find_spec("restorekit_validators.gaussian") is None
    if stubbed:
        stub = types.ModuleType("restorekit_validators.gaussian")
        stub.GaussianDistanceParams = type("GaussianDistanceParams", (Params,), {})  # type: ignore[attr-defined]
        stub.build_gaussian_distance = lambda params: None  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "restorekit_validators.gaussian", stub)
    try:
        plugin = importlib.import_module("restorekit_validators.plugin")
        comps = plugin.restorekit_validators()
        assert [c.name for c in comps] == ["psnr", "ssim", "gaussian_distance", "lr_psnr", "lpips", "diversity", "nll"]
        assert all(c.summary for c in comps)
        empty_registry.register(plugin, "validators")
        psnr_comp = empty_registry.get("validator", "psnr").component
        v = psnr_comp.build(psnr_comp.params(channel="y"))
        assert isinstance(v, PSNR) and v.key == "psnr_y"
        ssim_comp = empty_registry.get("validator", "ssim").component
        assert isinstance(ssim_comp.build(ssim_comp.params()), SSIM)
    finally:
        if stubbed:  # do not leave a plugin module bound to the stand-in behind
            sys.modules.pop("restorekit_validators.plugin", None)
            vars(sys.modules["restorekit_validators"]).pop("plugin", None)
