"""The core's built-in components: the generator injector and the pixel / direct losses."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from restorekit.builtins import (
    DirectLoss,
    DirectLossParams,
    GeneratorInjector,
    GeneratorInjectorParams,
    PixelLoss,
    PixelLossParams,
)
from restorekit.components import EncodeResult
from restorekit.errors import UserError


class ToyFlow(nn.Module):
    """x ↔ z = (x - up(lr)) * 2: a minimal FlowModel to check the wiring."""

    scale, size_multiple = 2, 1

    def forward(self, lr):
        return self.decode(lr)

    def _mean(self, lr):
        return nn.functional.interpolate(lr, scale_factor=2)

    def encode(self, hr, lr, add_noise=False):
        z = (hr - self._mean(lr)) * 2
        logdet = torch.full((hr.shape[0],), hr[0].numel() * math.log(2.0))
        return EncodeResult([z], 0.5 * (z**2).flatten(1).sum(1), logdet)

    def decode(self, lr, latents=None, temperature=0.0, generator=None, *, cond=None):
        z = latents[0] if latents is not None else torch.zeros_like(self._mean(lr)) + temperature
        return self._mean(lr) + z / 2

    def conditional_features(self, lr):
        return None

    def latent_shapes(self, lr_shape):
        return [(3, lr_shape[-2] * 2, lr_shape[-1] * 2)]


@pytest.fixture
def state():
    torch.manual_seed(0)
    return {"lq": torch.rand(2, 3, 4, 4), "hq": torch.rand(2, 3, 8, 8)}


def test_generator_injector_encode_then_decode_round_trips(state) -> None:
    nets = {"generator": ToyFlow()}
    enc = GeneratorInjector(GeneratorInjectorParams(mode="encode"), nets)
    out = enc(state, 0)
    assert set(out) == {"z", "nll", "logdet"} and out["nll"].shape == (2,)
    state.update(out)
    dec = GeneratorInjector(
        GeneratorInjectorParams(mode="decode", inputs={"lr": "lq", "latents": "z"}, outputs={"sr": "rec"}), nets
    )
    assert torch.allclose(dec(state, 0)["rec"], state["hq"], atol=1e-6)


def test_generator_injector_missing_key_lists_present(state) -> None:
    inj = GeneratorInjector(GeneratorInjectorParams(mode="forward", inputs={"lr": "lr_image"}), {"generator": ToyFlow()})
    with pytest.raises(UserError) as info:
        inj(state, 0)
    assert str(info.value) == "generator injector (generator): state has no 'lr_image' (present: hq, lq)"


def test_generator_injector_rejects_non_flow_for_encode() -> None:
    with pytest.raises(UserError, match="network 'generator' is not a flow"):
        GeneratorInjector(GeneratorInjectorParams(mode="encode"), {"generator": nn.Conv2d(3, 3, 1)})
    with pytest.raises(ValueError, match="mode 'encode' needs inputs.hr"):
        GeneratorInjectorParams(mode="encode", inputs={"lr": "lq"})


@pytest.mark.parametrize(
    "criterion, expected",
    [("l1", 0.25), ("l2", 0.0625), ("mse", 0.0625), ("charbonnier", math.sqrt(0.0625 + 1e-12))],
)
def test_pixel_loss_values(criterion: str, expected: float) -> None:
    hq = torch.rand(2, 3, 5, 5)
    loss = PixelLoss(PixelLossParams(criterion=criterion))({"sr": hq + 0.25, "hq": hq})
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_pixel_loss_has_gradient_and_checks_shapes() -> None:
    pred = torch.zeros(1, 3, 4, 4, requires_grad=True)
    PixelLoss(PixelLossParams())({"sr": pred, "hq": torch.ones(1, 3, 4, 4)}).backward()
    assert torch.allclose(pred.grad, torch.full_like(pred, -1 / pred.numel()))
    with pytest.raises(UserError, match=r"'sr' has shape \(1, 3, 4, 4\) but 'hq' has \(1, 3, 8, 8\)"):
        PixelLoss(PixelLossParams())({"sr": pred, "hq": torch.ones(1, 3, 8, 8)})


def test_direct_loss_is_the_batch_mean() -> None:
    assert DirectLoss(DirectLossParams(key="nll"))({"nll": torch.tensor([1.0, 3.0])}).item() == 2.0
    with pytest.raises(UserError, match="direct loss: state has no 'nll' \\(present: z\\)"):
        DirectLoss(DirectLossParams())({"z": torch.zeros(1)})


def test_pixel_loss_downscale_compares_the_bicubic_downsampled_prediction_with_the_lr() -> None:
    """``downscale = 4`` with target ``lq``: an LR-consistency loss (0 for an HR image against its own bicubic LR,
    gradients reach the prediction) and a shape mismatch names the downscale."""
    from restorekit.data.resize import downsample

    torch.manual_seed(0)
    hq = torch.rand(2, 3, 32, 32)
    lq = downsample(hq, 4, "bicubic", clamp=False)
    loss = PixelLoss(PixelLossParams(pred="sr", target="lq", downscale=4))
    assert float(loss({"sr": hq, "lq": lq})) < 1e-6
    sr = (hq + 0.1).requires_grad_()
    value = loss({"sr": sr, "lq": lq})
    value.backward()
    assert abs(float(value.detach()) - 0.1) < 1e-4 and sr.grad is not None and sr.grad.abs().sum() > 0
    with pytest.raises(UserError, match="'sr' downscaled 4x has shape"):
        loss({"sr": hq[..., :16], "lq": lq})
