"""SRFlow layers and geometries: invertibility, log-determinants, sizes, presets, ActNorm initialisation."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import restorekit
from restorekit.errors import UserError
from restorekit_srflow import (
    PRESETS,
    ActNorm,
    CondAffineCoupling,
    FlowStep,
    InvConv1x1,
    SRFlowNet,
    SRFlowParams,
    Split2d,
    Squeeze,
    build_srflow,
)


def tiny(**kw) -> SRFlowNet:
    args = dict(scale=4, nf=8, nb=2, gc=4, K=1, L=3, stack_blocks=[0, 1], hidden_channels=8)
    args.update(kw)
    torch.manual_seed(1)
    net = SRFlowNet(**args)
    _randomise(net)
    return net.eval()


def _randomise(net: torch.nn.Module) -> None:
    """Give zero-initialised parts random values, so every layer does something."""
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "actnorm" in name or name.endswith(".logs") or ".4." in name or ".conv." in name:
                p.normal_(0, 0.05)
    for m in net.modules():
        if isinstance(m, ActNorm):
            m.initialized = True


@settings(max_examples=15, deadline=None)
@given(c=st.sampled_from([2, 3, 6, 12]), h=st.integers(1, 5), seed=st.integers(0, 1000))
def test_actnorm_invconv_invert_with_opposite_logdet(c: int, h: int, seed: int) -> None:
    torch.manual_seed(seed)
    x = torch.randn(2, c, h, h + 1)
    for layer in (ActNorm(c), InvConv1x1(c)):
        layer.eval()
        if isinstance(layer, ActNorm):
            layer.initialized = True
            layer.bias.data.normal_()
            layer.logs.data.normal_(0, 0.3)
        y, ld = layer(x, torch.zeros(2))
        back, ld_back = layer(y, ld, reverse=True)
        assert torch.allclose(back, x, atol=1e-4)
        assert torch.allclose(ld_back, torch.zeros(2), atol=1e-3)


@settings(max_examples=15, deadline=None)
@given(c=st.sampled_from([2, 5, 12]), seed=st.integers(0, 1000))
def test_coupling_step_split_invert(c: int, seed: int) -> None:
    torch.manual_seed(seed)
    x, u = torch.randn(2, c, 4, 6), torch.randn(2, 7, 4, 6)
    step = FlowStep(c, 7, hidden=8)
    _randomise(step)
    step.eval()
    y, ld = step(x, torch.zeros(2), cond=u)
    back, ld2 = step(y, ld, reverse=True, cond=u)
    assert torch.allclose(back, x, atol=1e-4) and torch.allclose(ld2, torch.zeros(2), atol=1e-3)
    split = Split2d(c)
    _randomise(split)
    kept, ld, eps = split(x, torch.zeros(2))
    assert kept.shape[1] == c - round(c / 2) and eps.shape[1] == round(c / 2)
    back, ld2, _ = split(kept, ld, reverse=True, eps=eps)
    assert torch.allclose(back, x, atol=1e-5) and torch.allclose(ld2, torch.zeros(2), atol=1e-3)


def test_squeeze_is_pixel_unshuffle_ordering() -> None:
    x = torch.arange(16.0).view(1, 1, 4, 4)
    y, _ = Squeeze()(x)
    assert y[0, :, 0, 0].tolist() == [0.0, 1.0, 4.0, 5.0]  # (0,0), (0,1), (1,0), (1,1): row offset major
    assert torch.equal(Squeeze()(y, reverse=True)[0], x)


def test_coupling_logdet_is_log_of_scales() -> None:
    torch.manual_seed(0)
    cp = CondAffineCoupling(4, 3, hidden=8)
    _randomise(cp)
    x, u = torch.randn(1, 4, 3, 3), torch.randn(1, 3, 3, 3)
    _, ld = cp(x, u, torch.zeros(1))
    jac = torch.autograd.functional.jacobian(lambda v: cp(v.view(1, 4, 3, 3), u)[0].flatten(), x.flatten())
    assert ld.item() == pytest.approx(torch.linalg.slogdet(jac)[1].item(), abs=1e-3)


GEOMETRIES = [
    dict(scale=2, L=2, stack_blocks=[1]),
    dict(scale=4, L=3, K=2),
    dict(scale=8, L=4, stack_blocks=[0]),
    dict(scale=16, L=5, nb=3, stack_blocks=[0, 2], K=1),
    dict(scale=4, L=3, stack_blocks=[], additional_flow_no_affine=0),
    dict(scale=4, L=4, fea_up_minus1=True),
    dict(scale=4, L=3, split_correct_levels=True),
]


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: "-".join(f"{k}{v}" for k, v in g.items()))
def test_round_trip_and_shapes_for_other_geometries(geometry: dict) -> None:
    net = tiny(**geometry)
    m = net.size_multiple
    lr = torch.rand(1, 3, 3 * m, 2 * m)  # batch 1, non-square
    hr = torch.rand(1, 3, lr.shape[-2] * net.scale, lr.shape[-1] * net.scale)
    with torch.no_grad():
        enc = net.encode(hr, lr)
        assert [tuple(z.shape[1:]) for z in enc.latents] == net.latent_shapes(lr.shape)
        back, ld = net.decode(lr, enc.latents, return_logdet=True)
    assert (back - hr).abs().max().item() <= 1e-4
    assert torch.allclose(ld, -enc.logdet, rtol=1e-4, atol=1e-2)
    assert torch.isfinite(enc.nll).all()


def test_nll_is_bits_per_pixel_of_logdet_and_top_z() -> None:
    net = tiny()
    lr, hr = torch.rand(2, 3, 4, 6), torch.rand(2, 3, 16, 24)
    with torch.no_grad():
        enc = net.encode(hr, lr)
    z = enc.latents[-1]
    logp = (-0.5 * (z**2 + math.log(2 * math.pi))).flatten(1).sum(1)
    assert torch.allclose(enc.nll, -(enc.logdet + logp) / (math.log(2) * 16 * 24), rtol=1e-5)


def test_invalid_sizes_are_one_line_errors_with_nearest_sizes() -> None:
    net = tiny()
    with pytest.raises(UserError) as info:
        net.encode(torch.rand(1, 3, 20, 28), torch.rand(1, 3, 5, 7))
    msg = str(info.value)
    assert "\n" not in msg and "multiples of 2" in msg and "4 or 6 x 6 or 8" in msg
    with pytest.raises(UserError, match="HR size"):
        net.encode(torch.rand(1, 3, 20, 20), torch.rand(1, 3, 4, 4))


def test_forward_pads_any_size_and_crops_back() -> None:
    net = tiny()
    lr = torch.rand(1, 3, 5, 7)
    with torch.no_grad():
        out = net(lr)
        ref = net.decode(torch.nn.functional.pad(lr, (0, 1, 0, 1), mode="reflect"))[..., :20, :28]
    assert out.shape == (1, 3, 20, 28) and torch.equal(out, ref)


def test_temperature_zero_map_equals_temperature_zero_and_map_localises_noise() -> None:
    net = tiny()
    lr = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        t0 = net.decode(lr, temperature=0.0)
        zero_map = net.decode(lr, temperature=torch.zeros(1, 1, 32, 32), generator=torch.Generator().manual_seed(0))
        half = torch.zeros(1, 1, 32, 32)
        half[..., :, 16:] = 0.9
        mixed = net.decode(lr, temperature=half, generator=torch.Generator().manual_seed(0))
    assert torch.equal(zero_map, t0)
    diff = (mixed - t0).abs().mean(1)[0]
    assert diff[:, :8].mean() < 0.2 * diff[:, 24:].mean()


def test_sampling_is_reproducible_with_a_generator() -> None:
    net = tiny()
    lr = torch.rand(2, 3, 4, 4)
    with torch.no_grad():
        a = net.decode(lr, temperature=0.8, generator=torch.Generator().manual_seed(3))
        b = net.decode(lr, temperature=0.8, generator=torch.Generator().manual_seed(3))
        c = net.decode(lr, temperature=0.8, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_cached_conditional_features_give_the_same_decode() -> None:
    net = tiny()
    lr = torch.rand(1, 3, 4, 4)
    with torch.no_grad():
        cond = net.conditional_features(lr)
        a = net.decode(lr, temperature=0.7, generator=torch.Generator().manual_seed(1), cond=cond)
        b = net.decode(lr, temperature=0.7, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_fresh_actnorm_initialises_from_data_in_training_only() -> None:
    torch.manual_seed(0)
    net = SRFlowNet(scale=4, nf=8, nb=1, gc=4, K=1, L=3, stack_blocks=[0], hidden_channels=8)
    lr, hr = torch.rand(4, 3, 4, 4), torch.rand(4, 3, 16, 16) * 3 + 1
    net.eval()
    with torch.no_grad():
        net.encode(hr, lr)
    first = net.flowUpsamplerNet.layers[1].actnorm
    assert not first.initialized and torch.count_nonzero(first.bias) == 0
    net.train()
    net.encode(hr, lr)
    assert first.initialized
    y, _ = first(torch.nn.functional.pixel_unshuffle(hr, 2))
    assert y.mean(dim=(0, 2, 3)).abs().max() < 1e-4 and (y.std(dim=(0, 2, 3), unbiased=False) - 1).abs().max() < 1e-3


def test_loaded_actnorm_counts_as_initialised(tmp_path) -> None:
    net = tiny()
    path = tmp_path / "n.safetensors"
    restorekit.save_generator(path, net, "srflow", net.arch_params)
    loaded = restorekit.load(path)
    loaded.train()
    before = loaded.flowUpsamplerNet.layers[1].actnorm.bias.detach().clone()
    loaded.encode(torch.rand(2, 3, 16, 16), torch.rand(2, 3, 4, 4))
    assert torch.equal(loaded.flowUpsamplerNet.layers[1].actnorm.bias.detach(), before)


@pytest.mark.parametrize("preset, count", [("srflow-df2k-4x", 39_541_811), ("srflow-df2k-8x", 50_821_891), ("srflow-celeba-8x", 40_030_531)])
def test_official_presets_have_the_published_parameter_counts(preset: str, count: int) -> None:
    with torch.device("meta"):
        net = build_srflow(SRFlowParams(preset=preset))
    assert sum(p.numel() for p in net.parameters()) == count
    assert net.stack_blocks == PRESETS[preset]["stack_blocks"]
    assert len(net.state_dict()) == {"srflow-df2k-4x": 1733, "srflow-df2k-8x": 2080, "srflow-celeba-8x": 1630}[preset]


def test_params_validation_errors() -> None:
    with pytest.raises(ValueError, match=r"stack_blocks \[5\] outside"):
        SRFlowParams(nb=4, stack_blocks=[0, 5])
    with pytest.raises(ValueError, match="needs fea_up_minus1"):
        SRFlowParams(scale=4, L=4, stack_blocks=[1])
    with pytest.raises(ValueError, match="too deep"):
        SRFlowParams(scale=2, L=5, fea_up_minus1=True, stack_blocks=[1])
