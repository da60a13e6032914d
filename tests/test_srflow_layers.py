"""SRFlow layers and geometries: invertibility, log-determinants, sizes, sampling, caching, presets, ActNorm
initialisation, checkpoint naming and the Gaussian-distance validator. Small random networks only (fast on CPU)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from restorekit.components import EncodeResult, Sample, ValidationContext
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
    convert_state_dict,
    detect,
    params_from_state_dict,
    set_actnorm_initialized,
)
from restorekit_validators.gaussian import IDEAL, GaussianDistance, GaussianDistanceParams

SMALL = dict(scale=4, nf=8, nb=2, gc=4, K=1, L=3, stack_blocks=[0, 1], hidden_channels=8)


def _randomise(module: torch.nn.Module, seed: int = 1) -> None:
    """Random values for the zero-initialised parts (ActNorms, zero-convs, split priors), all marked initialised,
    so that every layer does something non-trivial."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "actnorm" in name or name.endswith(".logs") or ".4." in name or ".conv." in name or name.startswith("conv."):
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    set_actnorm_initialized(module)


def tiny(**kw: Any) -> SRFlowNet:
    torch.manual_seed(1)
    net = SRFlowNet(**{**SMALL, **kw})
    _randomise(net)
    return net.eval()


@pytest.fixture(scope="module")
def net() -> SRFlowNet:
    return tiny()


# ----------------------------------------------------------------------------------------------------
# single layers


@settings(max_examples=10, deadline=None)
@given(c=st.sampled_from([2, 3, 6, 12]), h=st.integers(1, 4), w=st.integers(1, 4), seed=st.integers(0, 10_000))
def test_actnorm_and_invconv_invert_with_opposite_logdet(c: int, h: int, w: int, seed: int) -> None:
    torch.manual_seed(seed)
    x = torch.randn(2, c, h, w)
    actnorm, invconv = ActNorm(c).eval(), InvConv1x1(c).eval()
    with torch.no_grad():
        actnorm.bias.normal_()
        actnorm.logs.normal_(0, 0.3)
        invconv.weight.copy_(invconv.weight @ torch.diag(torch.exp(torch.randn(c) * 0.2)))  # not orthogonal
    for layer in (actnorm, invconv):
        y, ld = layer(x, torch.zeros(2))
        back, ld_back = layer(y, torch.zeros(2), reverse=True)
        assert torch.allclose(back, x, atol=1e-5)
        assert torch.allclose(ld_back, -ld, atol=1e-4)
    assert torch.allclose(actnorm(x, torch.zeros(2))[1], torch.full((2,), h * w * actnorm.logs.sum().item()), rtol=1e-5)
    lad = torch.linalg.slogdet(invconv.weight.double())[1].item()
    assert invconv(x, torch.zeros(2))[1][0].item() == pytest.approx(h * w * lad, rel=1e-5, abs=1e-5)


@settings(max_examples=8, deadline=None)
@given(c=st.sampled_from([2, 5, 12]), seed=st.integers(0, 10_000))
def test_coupling_step_and_split_invert(c: int, seed: int) -> None:
    torch.manual_seed(seed)
    x, u = torch.randn(2, c, 4, 6), torch.randn(2, 7, 4, 6)
    step = FlowStep(c, 7, hidden=8)
    _randomise(step, seed)
    y, ld = step(x, torch.zeros(2), cond=u)
    back, ld_back = step(y, torch.zeros(2), reverse=True, cond=u)
    assert torch.allclose(back, x, atol=1e-4) and torch.allclose(ld_back, -ld, atol=1e-4)
    # a conditional map of batch 1 conditions every sample
    y1, _ = step(x, torch.zeros(2), cond=u[:1])
    y_ref, _ = step(x, torch.zeros(2), cond=u[:1].expand(2, -1, -1, -1))
    assert torch.allclose(y1, y_ref, atol=1e-6)
    split = Split2d(c)
    _randomise(split, seed)
    kept, ld, eps = split(x, torch.zeros(2))
    assert kept.shape[1] == c - round(c / 2) and eps is not None and eps.shape[1] == round(c / 2)
    back, ld_back, _ = split(kept, torch.zeros(2), reverse=True, eps=eps)
    assert torch.allclose(back, x, atol=1e-5) and torch.allclose(ld_back, -ld, atol=1e-4)


def test_squeeze_is_pixel_unshuffle_with_row_offset_major_order() -> None:
    x = torch.arange(32.0).view(1, 2, 4, 4)
    y, ld = Squeeze()(x, torch.zeros(1))
    assert y.shape == (1, 8, 2, 2) and ld is not None and ld.item() == 0
    assert y[0, :4, 0, 0].tolist() == [0.0, 1.0, 4.0, 5.0]  # (0,0), (0,1), (1,0), (1,1) of channel 0
    assert y[0, 4:, 1, 1].tolist() == [26.0, 27.0, 30.0, 31.0]
    assert torch.equal(Squeeze()(y, reverse=True)[0], x)


def test_coupling_logdet_is_the_log_determinant_of_its_jacobian() -> None:
    torch.manual_seed(0)
    coupling = CondAffineCoupling(4, 3, hidden=8)
    _randomise(coupling)
    x, u = torch.randn(1, 4, 3, 3), torch.randn(1, 3, 3, 3)
    _, ld = coupling(x, u, torch.zeros(1))
    jac = torch.autograd.functional.jacobian(lambda v: coupling(v.view(1, 4, 3, 3), u)[0].flatten(), x.flatten())
    assert ld.item() == pytest.approx(torch.linalg.slogdet(jac)[1].item(), abs=1e-3)


def test_invconv_inverse_is_cached_without_gradients_and_follows_weight_changes() -> None:
    torch.manual_seed(0)
    conv = InvConv1x1(6).eval()
    x = torch.randn(1, 6, 2, 2)
    with torch.no_grad():
        inv1, _ = conv.inverse_and_logabsdet()
        inv2, _ = conv.inverse_and_logabsdet()
        assert inv1 is inv2  # cached
        assert torch.equal(inv1, torch.linalg.inv(conv.weight.double()).float())  # float64 then cast
        conv.weight.mul_(1.5)  # in-place change: new version
        inv3, lad3 = conv.inverse_and_logabsdet()
        assert inv3 is not inv1 and torch.allclose(inv3, inv1 / 1.5)
        assert lad3.item() == pytest.approx(torch.linalg.slogdet(conv.weight.double())[1].item(), rel=1e-6)
    # with gradients the inverse is differentiable with respect to the weight
    y, ld = conv(x, torch.zeros(1), reverse=True)
    (y.sum() + ld.sum()).backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0


def test_actnorm_initialises_from_data_in_training_only() -> None:
    torch.manual_seed(0)
    x = torch.randn(8, 3, 5, 5) * 3 + 2
    an = ActNorm(3).eval()
    an(x)
    assert not an.initialized and torch.count_nonzero(an.bias) == 0
    an.train()
    y, _ = an(x)
    assert an.initialized
    assert y.mean(dim=(0, 2, 3)).abs().max() < 1e-5 and (y.std(dim=(0, 2, 3), unbiased=False) - 1).abs().max() < 1e-4
    bias = an.bias.detach().clone()
    an(x * 5)
    assert torch.equal(an.bias.detach(), bias)  # only once
    fresh = ActNorm(3).train()
    fresh(x, reverse=True)  # the decode direction initialises from the tensor entering the inverse
    assert fresh.initialized and torch.allclose(fresh.bias.detach().flatten(), -x.mean(dim=(0, 2, 3)), atol=1e-5)


# ----------------------------------------------------------------------------------------------------
# whole network


GEOMETRIES = [
    dict(scale=2, L=2, stack_blocks=[1]),
    dict(scale=4, L=3, K=2),
    dict(scale=4, L=3, K=3, nf=16, gc=8, hidden_channels=16, stack_blocks=[1, 0, 1]),
    dict(scale=8, L=4, stack_blocks=[0]),
    dict(scale=16, L=5, nb=3, stack_blocks=[0, 2], K=1),
    dict(scale=4, L=3, stack_blocks=[], additional_flow_no_affine=0),
    dict(scale=4, L=4, fea_up_minus1=True),
    dict(scale=4, L=3, split_correct_levels=True, split_consume_ratio=0.25),
    dict(scale=8, L=2),
]


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: "-".join(f"{k}{v}" for k, v in g.items()))
def test_round_trip_and_shapes_for_other_geometries(geometry: dict[str, Any]) -> None:
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
    json.dumps(net.arch_params)  # JSON-able
    assert SRFlowNet(**net.arch_params).state_dict().keys() == net.state_dict().keys()


def test_size_multiple_follows_the_levels() -> None:
    cases = {(4, 3): 2, (8, 4): 2, (2, 2): 2, (4, 2): 1, (8, 2): 1, (4, 4): 4, (16, 5): 2, (2, 1): 1}
    for (scale, L), m in cases.items():
        net = SRFlowNet(**{**SMALL, "nb": 1, "stack_blocks": [0], "K": 1, "scale": scale, "L": L, "fea_up_minus1": True})
        assert net.size_multiple == m, (scale, L)


def test_nll_is_bits_per_pixel_of_logdet_and_top_z(net: SRFlowNet) -> None:
    lr, hr = torch.rand(2, 3, 4, 6), torch.rand(2, 3, 16, 24)
    with torch.no_grad():
        enc = net.encode(hr, lr)
        noisy = net.encode(hr, lr, add_noise=True, noise=torch.full_like(hr, 0.5))
        dequant = net.encode(hr, lr, add_noise=True)
    z = enc.latents[-1]
    logp = (-0.5 * (z**2 + math.log(2 * math.pi))).flatten(1).sum(1)
    assert torch.allclose(enc.nll, -(enc.logdet + logp) / (math.log(2) * 16 * 24), rtol=1e-5)
    assert torch.allclose(noisy.nll - enc.nll, torch.full((2,), math.log2(32)), atol=1e-4)
    assert not torch.equal(dequant.latents[-1], enc.latents[-1])  # real noise moves the latents


def test_the_architecture_is_a_plain_module() -> None:
    """arch.py knows nothing of restorekit: it imports none of it and raises ValueError; SRFlowNet (the plugin layer)
    turns that into a one-line UserError and draws random latents with restorekit's sampler."""
    import ast

    import restorekit_srflow.arch as arch

    tree = ast.parse(Path(arch.__file__).read_text())
    imported = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    imported += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not [m for m in imported if m == "restorekit" or m.startswith("restorekit.")]
    assert "UserError" not in Path(arch.__file__).read_text()
    bare = arch.SRFlowArch(**SMALL).eval()
    with torch.no_grad():
        with pytest.raises(ValueError, match="LR size 3x4"):
            bare.decode(torch.rand(1, 3, 3, 4))
        with pytest.raises(ValueError, match="draws no random latents"):
            bare.decode(torch.rand(1, 3, 4, 4), temperature=0.5)
        zero = bare.decode(torch.rand(1, 3, 4, 4))  # temperature 0 needs no sampler: zero latents
    assert zero.shape == (1, 3, 16, 16) and issubclass(SRFlowNet, arch.SRFlowArch)


def test_invalid_sizes_are_one_line_errors_naming_valid_sizes(net: SRFlowNet) -> None:
    with pytest.raises(UserError) as info:
        net.encode(torch.rand(1, 3, 20, 28), torch.rand(1, 3, 5, 7))
    msg = str(info.value)
    assert "\n" not in msg and "multiples of 2" in msg and "4 or 6 x 6 or 8" in msg
    with pytest.raises(UserError, match="LR size 3x4"):
        net.decode(torch.rand(1, 3, 3, 4))
    with pytest.raises(UserError, match="HR size 20x20 must be 4x the LR size 4x4"):
        net.encode(torch.rand(1, 3, 20, 20), torch.rand(1, 3, 4, 4))
    with pytest.raises(UserError, match="latent 1 has shape"):
        net.decode(torch.rand(1, 3, 4, 4), [torch.zeros(1, 6, 8, 8), torch.zeros(1, 96, 3, 3)])


def test_forward_pads_any_size_and_crops_back(net: SRFlowNet) -> None:
    lr = torch.rand(1, 3, 5, 7)
    with torch.no_grad():
        out = net(lr)
        ref = net.decode(torch.nn.functional.pad(lr, (0, 1, 0, 1), mode="reflect"))[..., :20, :28]
        one = net(torch.rand(1, 3, 1, 1))  # too small to reflect: replicated
    assert out.shape == (1, 3, 20, 28) and torch.equal(out, ref)
    assert one.shape == (1, 3, 4, 4)


def test_temperature_maps(net: SRFlowNet) -> None:
    lr = torch.rand(1, 3, 8, 8)
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    with torch.no_grad():
        cond = net.conditional_features(lr)
        t0 = net.decode(lr, temperature=0.0, cond=cond)
        zero_map = net.decode(lr, temperature=torch.zeros(1, 1, 32, 32), generator=gen(), cond=cond)
        const = net.decode(lr, temperature=torch.full((1, 1, 7, 5), 0.7), generator=gen(), cond=cond)  # any size
        flat = net.decode(lr, temperature=0.7, generator=gen(), cond=cond)
        half = torch.zeros(1, 1, 32, 32)
        half[..., 16:] = 0.9
        mixed = net.decode(lr, temperature=half, generator=gen(), cond=cond)
        padded = net(torch.rand(1, 3, 7, 8), temperature=torch.zeros(1, 1, 28, 32), generator=gen())
    assert torch.equal(zero_map, t0)  # a zero map is exactly temperature 0
    assert torch.allclose(const, flat, atol=1e-6)
    diff = (mixed - t0).abs().mean(1)[0]
    assert diff[:, :8].mean() < 0.2 * diff[:, 24:].mean()  # noise stays (mostly) where the map is non-zero
    assert padded.shape == (1, 3, 28, 32)


def test_sampling_draw_order_and_reproducibility(net: SRFlowNet) -> None:
    lr = torch.rand(2, 3, 4, 4)
    with torch.no_grad():
        a = net.decode(lr, temperature=0.8, generator=torch.Generator().manual_seed(3))
        b = net.decode(lr, temperature=0.8, generator=torch.Generator().manual_seed(3))
        c = net.decode(lr, temperature=0.8, generator=torch.Generator().manual_seed(4))
        g = torch.Generator().manual_seed(3)  # official order: top z first, then the splits deepest first
        shapes = net.latent_shapes(lr.shape)
        z = torch.randn((2, *shapes[-1]), generator=g) * 0.8
        eps = torch.randn((2, *shapes[0]), generator=g) * 0.8
        manual = net.decode(lr, [eps, z])
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.allclose(a, manual, atol=1e-6)


def test_given_latents_are_never_scaled_by_the_temperature(net: SRFlowNet) -> None:
    lr = torch.rand(1, 3, 4, 4)
    zs = [torch.randn(1, *s) for s in net.latent_shapes(lr.shape)]
    with torch.no_grad():
        assert torch.equal(net.decode(lr, zs, temperature=0.3), net.decode(lr, zs, temperature=1.0))


def test_conditional_features_are_reused_and_the_cache_follows_weight_changes() -> None:
    net = tiny()
    lr = torch.rand(1, 3, 4, 4)
    zs = [torch.randn(1, *s) for s in net.latent_shapes(lr.shape)]
    with torch.no_grad():
        cond = net.conditional_features(lr)
        assert [tuple(m.shape) for m in cond.maps] == [(1, 24, 8, 8), (1, 24, 4, 4), (1, 24, 2, 2)]
        first = net.decode(lr, zs, cond=cond)
        assert len(cond.terms) == net.K * net.L  # one entry per conditional step
        assert torch.equal(net.decode(lr, zs, cond=cond), first)
        assert torch.allclose(net.decode(lr, zs), first, atol=1e-6)
        step = next(s for s in net.flowUpsamplerNet.layers if isinstance(s, FlowStep) and s.affine is not None)
        step.affine.fFeatures[4].bias.add_(0.3)  # type: ignore[union-attr]
        changed = net.decode(lr, zs, cond=cond)
        assert torch.allclose(changed, net.decode(lr, zs), atol=1e-6) and not torch.allclose(changed, first)


@pytest.mark.parametrize("h, w, f", [(1, 1, 2), (3, 5, 2), (6, 4, 2), (1, 1, 4), (3, 2, 4),
                                     pytest.param(2, 3, 8, marks=pytest.mark.slow)])
def test_factored_map_convolution_is_the_full_convolution(h: int, w: int, f: int) -> None:
    # [dense, up_f(low)] convolved with the upsampled part at the small size: values and every gradient
    import torch.nn.functional as F

    from restorekit_srflow.layers import Conv2dActNorm, UpMap, map_conv

    torch.manual_seed(0)
    dense = torch.randn(2, 4, f * h, f * w, dtype=torch.float64)
    low = torch.randn(2, 6, h, w, dtype=torch.float64)
    u = UpMap(dense, F.pad(low, (1, 1, 1, 1)), f)
    full = u.full()
    assert torch.equal(full[:, 4:], low.repeat_interleave(f, -2).repeat_interleave(f, -1))
    weight = torch.randn(3, 10, 3, 3, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(2, 3, f * h, f * w, dtype=torch.float64)
    for no_grad in (True, False):
        with torch.set_grad_enabled(not no_grad):
            assert torch.allclose(map_conv(u, weight), F.conv2d(full, weight, padding=1), atol=1e-12)
    got = torch.autograd.grad((map_conv(u, weight) * grad).sum(), weight)[0]
    want = torch.autograd.grad((F.conv2d(full, weight, padding=1) * grad).sum(), weight)[0]
    assert torch.allclose(got, want, atol=1e-12)
    # one item: the batch is independent and a numerical Jacobian costs two convolutions per input element
    torch.autograd.gradcheck(lambda d, lo: map_conv(UpMap(d, F.pad(lo, (1, 1, 1, 1)), f), weight.detach()),
                             (dense[:1].clone().requires_grad_(), low[:1].clone().requires_grad_()))
    # the folded training convolution of a frozen map (its own backward) and the unfolded one
    conv = Conv2dActNorm(10, 3, 3).double()
    conv.actnorm.logs.data.normal_()
    conv.actnorm.bias.data.normal_()
    conv.actnorm.initialized = True
    ref = torch.autograd.grad((conv(full) * grad).sum(), list(conv.parameters()))
    for fold in (True, False):
        conv.fold_actnorm = fold
        out = conv(u)
        assert torch.allclose(out, conv(full), atol=1e-12)
        for g, r in zip(torch.autograd.grad((out * grad).sum(), list(conv.parameters())), ref):
            assert torch.allclose(g, r, atol=1e-11)


def test_factored_convolution_trains_after_inference_made_its_constants() -> None:
    # validation (inference mode) before a training step: the cached tap matrices must be saveable for backward
    import torch.nn.functional as F

    from restorekit_srflow.layers import _TAPS, UpMap, map_conv

    _TAPS.clear()
    u = UpMap(torch.randn(1, 2, 4, 4), F.pad(torch.randn(1, 3, 2, 2), (1, 1, 1, 1)))
    w = torch.randn(2, 5, 3, 3, requires_grad=True)
    with torch.inference_mode():
        map_conv(u, w.detach())
    map_conv(u, w).sum().backward()
    assert w.grad is not None and float(w.grad.abs().sum()) > 0


@pytest.mark.parametrize(("geometry", "factors"), [
    ({}, [2, None, None]),                                      # 4x: 2·LR, LR, LR/2
    ({"scale": 8, "L": 4, "stack_blocks": [0, 1]}, [4, 2, None, None]),  # 8x: 4·LR, 2·LR, LR, LR/2
])
def test_factored_conditional_map_gives_the_same_flow(geometry: dict, factors: list) -> None:
    from restorekit_srflow.layers import UpMap

    # factor_cond (restorekit's fast paths): the levels above LR read UpMaps; encode/decode equal the plain network
    net = tiny(**geometry)
    scale = net.scale
    lr = torch.rand(2, 3, 4, 6)
    hr = torch.rand(2, 3, 4 * scale, 6 * scale)
    zs = [torch.randn(2, *s) for s in net.latent_shapes(lr.shape)]
    with torch.no_grad():
        plain_sr, plain_nll = net.decode(lr, zs), net.encode(hr, lr).nll
        net.factor_cond = True
        cond = net.conditional_features(lr)
        # only the levels above LR are upsampled; maps gives the same full maps as the plain network's
        assert [u.factor if isinstance(u, UpMap) else None for u in cond.levels] == factors
        net.factor_cond = False
        assert all(torch.equal(a, b) for a, b in zip(cond.maps, net.conditional_features(lr).maps))
        net.factor_cond = True
        # float32 rounding, relative to the output (the 8x network's values reach ~25; in float64 they agree to 1e-14)
        sr, nll = net.decode(lr, zs, cond=cond), net.encode(hr, lr).nll
        assert float((sr - plain_sr).abs().max()) <= 1e-5 * max(1.0, float(plain_sr.abs().max()))
        assert float((nll - plain_nll).abs().max()) <= 1e-5 * max(1.0, float(plain_nll.abs().max()))


def test_one_lr_conditions_a_batch_of_latents(net: SRFlowNet) -> None:
    lr = torch.rand(1, 3, 4, 6)
    zs = [torch.randn(3, *s) for s in net.latent_shapes(lr.shape)]
    with torch.no_grad():
        batch = net.decode(lr, zs)
        single = torch.cat([net.decode(lr, [z[i : i + 1] for z in zs]) for i in range(3)])
        enc = net.encode(batch, lr)
    assert torch.allclose(batch, single, atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(enc.latents, zs))


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    grads = []
    for ckpt in (False, True):
        net = tiny(K=1, L=2, scale=2, stack_blocks=[1]).train()
        net.gradient_checkpointing = ckpt
        assert net.RRDB.gradient_checkpointing is ckpt
        torch.manual_seed(0)
        lr, hr = torch.rand(2, 3, 4, 4), torch.rand(2, 3, 8, 8)
        net.encode(hr, lr).nll.mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


def test_rrdb_forward_is_the_rrdbs_own_image(net: SRFlowNet) -> None:
    lr = torch.rand(1, 3, 4, 4)
    with torch.no_grad():
        out = net.rrdb_forward(lr)
        assert out.shape == (1, 3, 16, 16) and torch.equal(out, net.RRDB(lr))
    assert net.RRDB.variant == "srflow"


def test_fresh_network_initialises_its_actnorms_in_training_only() -> None:
    torch.manual_seed(0)
    net = SRFlowNet(scale=4, nf=8, nb=1, gc=4, K=1, L=3, stack_blocks=[0], hidden_channels=8)
    lr, hr = torch.rand(4, 3, 4, 4), torch.rand(4, 3, 16, 16) * 3 + 1
    with torch.no_grad():
        net.eval().encode(hr, lr)
    first = net.flowUpsamplerNet.layers[1].actnorm
    assert not first.initialized and torch.count_nonzero(first.bias) == 0
    net.train().encode(hr, lr)
    assert all(m.initialized for m in net.modules() if isinstance(m, ActNorm))
    y, _ = first(torch.nn.functional.pixel_unshuffle(hr, 2))
    assert y.mean(dim=(0, 2, 3)).abs().max() < 1e-4 and (y.std(dim=(0, 2, 3), unbiased=False) - 1).abs().max() < 1e-3


def test_loaded_actnorms_count_as_initialised() -> None:
    source = tiny()
    loaded = SRFlowNet(**source.arch_params)
    assert not any(m.initialized for m in loaded.modules() if isinstance(m, ActNorm))
    loaded.load_state_dict(source.state_dict())
    assert all(m.initialized for m in loaded.modules() if isinstance(m, ActNorm))
    with torch.no_grad():  # even an all-zero bias stays as loaded (explicit state, not the official zero test)
        loaded.flowUpsamplerNet.layers[1].actnorm.bias.zero_()
    before = {k: v.clone() for k, v in loaded.state_dict().items()}
    loaded.train().encode(torch.rand(2, 3, 16, 16), torch.rand(2, 3, 4, 4))
    assert all(torch.equal(before[k], v) for k, v in loaded.state_dict().items())


# ----------------------------------------------------------------------------------------------------
# params, presets, checkpoint formats


@pytest.mark.parametrize(
    "preset, count, entries",
    [("srflow-df2k-4x", 39_541_811, 1733), ("srflow-df2k-8x", 50_821_891, 2080), ("srflow-celeba-8x", 40_030_531, 1630)],
)
def test_official_presets_have_the_published_parameter_counts(preset: str, count: int, entries: int) -> None:
    with torch.device("meta"):
        net = build_srflow(SRFlowParams(preset=preset))
    assert sum(p.numel() for p in net.parameters()) == count
    assert net.stack_blocks == PRESETS[preset]["stack_blocks"]
    sd = net.state_dict()
    assert len(sd) == entries and detect(sd)
    inferred = params_from_state_dict(sd)
    for key, value in PRESETS[preset].items():
        assert inferred[key] == value, key  # the official block indices come back from the count


def test_params_validation_and_presets() -> None:
    assert SRFlowParams(preset="srflow-df2k-8x", K=4).K == 4  # explicit values override the preset
    assert SRFlowParams(preset="srflow-celeba-8x").nb == 8
    with pytest.raises(ValueError, match="unknown preset"):
        SRFlowParams(preset="srflow-x3")
    with pytest.raises(ValueError, match=r"stack_blocks \[5\] outside"):
        SRFlowParams(nb=4, stack_blocks=[0, 5])
    with pytest.raises(ValueError, match="needs fea_up_minus1"):
        SRFlowParams(scale=4, L=4, stack_blocks=[1])
    with pytest.raises(ValueError, match="too deep"):
        SRFlowParams(scale=2, L=5, fea_up_minus1=True, stack_blocks=[1])
    with pytest.raises(ValueError):
        SRFlowParams(scale=3)
    with pytest.raises(ValueError, match="split_consume_ratio 0.01 factors out 0 of the 12 channels"):
        SRFlowParams(split_consume_ratio=0.01)
    params = SRFlowParams(**SMALL, gradient_checkpointing=True)
    net = build_srflow(params)
    assert net.gradient_checkpointing and net.RRDB.gradient_checkpointing
    assert net.arch_params == {**params.arch_kwargs()}


def test_dl_art_school_names_load_identically() -> None:
    net = tiny(K=2)
    sd = net.state_dict()
    renamed = {}
    for k, v in sd.items():
        k2 = (k.replace("RRDB.RRDB_trunk.", "RRDB.body.").replace(".RDB", ".rdb").replace("RRDB.trunk_conv", "RRDB.conv_body")
              .replace("RRDB.upconv", "RRDB.conv_up").replace("RRDB.HRconv", "RRDB.conv_hr"))
        renamed[k2] = v
    assert "RRDB.body.1.rdb3.conv5.bias" in renamed and "RRDB.conv_hr.weight" in renamed
    inferred = params_from_state_dict(renamed)
    assert {k: inferred[k] for k in ("scale", "nf", "nb", "gc", "K", "L", "hidden_channels", "stack_blocks")} == {
        "scale": 4, "nf": 8, "nb": 2, "gc": 4, "K": 2, "L": 3, "hidden_channels": 8, "stack_blocks": [0, 1]
    }
    params = SRFlowParams(**inferred)
    converted = convert_state_dict(renamed, params)
    assert converted.keys() == sd.keys() and all(torch.equal(converted[k], sd[k]) for k in sd)
    with pytest.raises(UserError, match="^K: checkpoint has 2 steps per level, params say 1$"):
        convert_state_dict(renamed, SRFlowParams(**{**inferred, "K": 1}))
    with pytest.raises(UserError, match="^split_correct_levels: checkpoint splits at 1 levels, params say 2"):
        convert_state_dict(renamed, SRFlowParams(**{**inferred, "split_correct_levels": True}))
    with pytest.raises(UserError, match="^split_consume_ratio: checkpoint factors out 6 of 12 channels"):
        convert_state_dict(renamed, SRFlowParams(**{**inferred, "split_consume_ratio": 0.25}))


# ----------------------------------------------------------------------------------------------------
# the Gaussian-distance validator


class _StandardNormalFlow(torch.nn.Module):
    """A stand-in flow whose latents are exact N(0, 1) draws."""

    scale, size_multiple = 2, 1

    def encode(self, hr: torch.Tensor, lr: torch.Tensor, add_noise: bool = False) -> EncodeResult:
        g = torch.Generator().manual_seed(0)
        z = [torch.randn(hr.shape[0], 6, 64, 64, generator=g), torch.randn(hr.shape[0], 24, 32, 32, generator=g)]
        return EncodeResult(z, torch.full((hr.shape[0],), 2.0), torch.zeros(hr.shape[0]))


def test_gaussian_distance_of_standard_normal_latents_is_the_ideal_value() -> None:
    samples = [Sample("a.png", torch.rand(1, 3, 8, 8), torch.rand(1, 3, 16, 16))]
    res = GaussianDistance()(_StandardNormalFlow(), samples, ValidationContext(torch.device("cpu"), 2))
    assert IDEAL == pytest.approx(0.5 * (1 + math.log(2 * math.pi))) and IDEAL == pytest.approx(1.4189, abs=1e-4)
    assert res.metrics["gaussian_distance"] == pytest.approx(IDEAL, abs=0.01)
    assert res.metrics["latent_mean_0"] == pytest.approx(0.0, abs=0.02)
    assert res.metrics["latent_std_1"] == pytest.approx(1.0, abs=0.02)
    assert res.metrics["nll"] == 2.0


def test_gaussian_distance_on_srflow_matches_direct_computation_and_writes_heatmaps(tmp_path: Path) -> None:
    net = tiny().train()  # the validator evaluates in eval mode and restores the mode
    data = [Sample(f"img{i}.png", torch.rand(1, 3, 4, 6), torch.rand(1, 3, 16, 24)) for i in range(2)]
    params = GaussianDistanceParams(heatmaps=1)
    res = GaussianDistance(params)(net, data, ValidationContext(torch.device("cpu"), 4, step=3, output_dir=tmp_path))
    assert net.training
    with torch.no_grad():
        encs = [net.eval().encode(s.hq, s.lq) for s in data]
    flat = torch.cat([z.flatten() for e in encs for z in e.latents])
    direct = (0.5 * (flat**2 + math.log(2 * math.pi))).mean().item()
    assert res.metrics["gaussian_distance"] == pytest.approx(direct, rel=1e-5)
    assert res.metrics["nll"] == pytest.approx(torch.cat([e.nll for e in encs]).mean().item(), rel=1e-5)
    top = torch.cat([e.latents[-1].flatten() for e in encs])
    assert res.metrics["latent_mean_1"] == pytest.approx(top.mean().item(), abs=1e-5)
    assert res.metrics["latent_std_1"] == pytest.approx(top.std(unbiased=False).item(), rel=1e-4)
    assert [r["name"] for r in res.per_image] == ["img0.png", "img1.png"]
    written = sorted(p.name for p in (tmp_path / "gaussian_distance").iterdir())
    assert written == ["img0_step3_level0.png", "img0_step3_level1.png"]
    import imageio.v3 as iio

    assert iio.imread(tmp_path / "gaussian_distance" / "img0_step3_level0.png").shape == (8, 12, 3)


def test_gaussian_distance_rejects_a_network_that_is_not_a_flow() -> None:
    samples = [Sample("a.png", torch.rand(1, 3, 4, 4), torch.rand(1, 3, 8, 8))]
    with pytest.raises(UserError, match="^gaussian_distance: .*not a flow"):
        GaussianDistance()(torch.nn.Conv2d(3, 3, 1), samples, ValidationContext(torch.device("cpu"), 2))
