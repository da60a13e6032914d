"""HCFlow parity with the official outputs stored in tests/fixtures/hcflow_x4 and hcflow_x8 (see hcflow_README.md),
and strict loading of the full-size published key layouts (tests/fixtures/hcflow_keys).

The network is loaded the way a user's file is: ``restorekit.load`` (detection among the installed generators,
params read off the tensors, strict ``load_state_dict``), with ``fast=False``: the layout probe (six full-size
decodes, 7 CPU-seconds for x8) keeps channels_last only where its output equals NCHW's (test_perf.py). Tolerances: 1e-5 absolute for images and latents, 1e-5
relative for log-dets, the NLL and the objective (whose LR term is about 1e7).
"""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import restorekit
from restorekit import UserError, sample_latents
from restorekit.checkpoint import read_state_dict

hc = pytest.importorskip("restorekit_hcflow", reason="restorekit-hcflow is not installed (pip install -e plugins/hcflow)")

ATOL = 1e-5
RTOL = 1e-5


def _dir(name: str) -> Path:
    from conftest import fixtures_dir

    return fixtures_dir() / name


def _close(got: torch.Tensor, want: torch.Tensor, *, rel: bool = False) -> None:
    assert got.shape == want.shape, (got.shape, want.shape)
    err = (got.double() - want.double()).abs().max().item()
    scale = want.double().abs().max().item() if rel else 1.0
    assert err <= (RTOL if rel else ATOL) * scale, f"max |diff| {err:.3e} (scale {scale:.3e})"


@pytest.fixture(scope="module", params=["hcflow_x4", "hcflow_x8"])
def fx(request: pytest.FixtureRequest) -> dict[str, Any]:
    from safetensors.torch import load_file

    d = _dir(request.param)
    cfg = tomllib.loads((d / "config.toml").read_text())
    net = restorekit.load(d / "official.pth", fast=False)
    exp = load_file(str(d / "expected.safetensors"))
    hr, lr = exp["input.hr"], exp["input.lr"]
    with torch.no_grad():
        full = net.encode_full(hr, lr, noise=exp["forward.dequant_noise"])
        enc = net.encode(hr, lr, noise=exp["forward.dequant_noise"])
        consistent = net.encode_full(hr, exp["forward_lr_consistent.lr_target"], noise=exp["forward.dequant_noise"])
    return {"name": request.param, "cfg": cfg, "net": net, "exp": exp, "full": full, "enc": enc,
            "consistent": consistent, "levels": cfg["model"]["num_levels"]}


def test_loads_strictly_with_params_read_off_the_tensors(fx: dict[str, Any]) -> None:
    net, model = fx["net"], fx["cfg"]["model"]
    assert isinstance(net, hc.HCFlowNet) and isinstance(net, restorekit.FlowModel)
    arch = net.arch_params
    assert arch["scale"] == model["scale"] and arch["quant"] == model["quant"]
    assert arch["steps_per_level"] == [model["steps_per_level"]] * model["num_levels"]
    assert arch["cond_steps_per_level"] == model["cond_steps_per_level"]
    for key in ("main_coupling_hidden", "cond_coupling_hidden", "cond_rrdb_blocks", "cond_features", "cond_growth"):
        assert arch[key] == model[key], key
    assert sum(p.numel() for p in net.parameters()) == fx["cfg"]["fixture"]["num_parameters"]
    sd = read_state_dict(_dir(fx["name"]) / "official.pth")
    assert list(net.state_dict()) == list(sd)  # the official key order, nothing missing or extra
    derived = fx["cfg"]["derived"]
    assert hc.cond_input_channels(fx["levels"], model["cond_features"]) == derived["cond_input_channels"]
    assert hc.level_channels(fx["levels"])[2] == derived["level_latent_channels"]


def test_forward_lr_estimate_latents_and_priors(fx: dict[str, Any]) -> None:
    full, exp = fx["full"], fx["exp"]
    _close(full.flow_lr, exp["forward.lr_raw"])
    assert torch.equal(full.lr_quantized, exp["forward.lr_quantized"])
    for level in range(fx["levels"]):
        _close(full.z[level], exp[f"forward.latent_level{level}"])
        _close(full.prior_means[level], exp[f"forward.prior_mean_level{level}"])
        _close(full.prior_logs[level], exp[f"forward.prior_logs_level{level}"])
        logp = hc.gaussian_logp(full.z[level], full.prior_means[level], full.prior_logs[level])
        _close(logp, exp[f"forward.latent_logp_level{level}"], rel=True)


def test_forward_logdet_objective_and_nll(fx: dict[str, Any]) -> None:
    full, enc, exp = fx["full"], fx["enc"], fx["exp"]
    _close(full.logdet, exp["forward.logdet_flow"], rel=True)
    _close(full.lr_logp, exp["forward.lr_logp"], rel=True)
    _close(full.logdet + full.lr_logp, exp["forward.objective"], rel=True)
    # restorekit's nll is per sample (B,); the official second output is its batch mean, in bits per *pixel*
    assert enc.nll.shape == (2,)
    _close(enc.nll.mean(), exp["forward.nll_bits"], rel=True)
    pixels = exp["input.hr"].shape[-2] * exp["input.hr"].shape[-1]
    per_dim = -(full.logdet + full.lr_logp) / (math.log(2) * 3 * pixels)
    assert torch.allclose(per_dim, full.nll_per_dim, rtol=1e-6) and torch.allclose(per_dim * 3, enc.nll, rtol=1e-6)
    # LR := the flow's own quantised LR: the LR term is a constant, so the NLL tests the flow's log-det alone
    consistent = fx["consistent"]
    _close(consistent.nll.mean(), exp["forward_lr_consistent.nll_bits"], rel=True)
    _close(consistent.logdet + consistent.lr_logp, exp["forward_lr_consistent.objective"], rel=True)
    assert 100 * consistent.nll.mean() < enc.nll.mean()


def test_encode_result_is_restorekits(fx: dict[str, Any]) -> None:
    full, enc = fx["full"], fx["enc"]
    assert isinstance(enc, restorekit.EncodeResult)
    assert enc.flow_lr is not None and torch.equal(enc.flow_lr, full.flow_lr)
    shapes = fx["net"].latent_shapes(fx["exp"]["input.lr"].shape)
    assert [tuple(z.shape[1:]) for z in enc.latents] == shapes
    for level, eps in enumerate(enc.latents):  # standardised: (z - mean) / sigma
        want = (full.z[level] - full.prior_means[level]) * torch.exp(-full.prior_logs[level])
        assert torch.allclose(eps, want)


@torch.no_grad()
def test_reverse_at_temperature_zero(fx: dict[str, Any]) -> None:
    net, exp = fx["net"], fx["exp"]
    _close(net.decode(exp["input.lr"], temperature=0.0), exp["reverse_t0.sr"])
    _close(net(exp["input.lr"]), exp["reverse_t0.sr"])


@torch.no_grad()
def test_reverse_with_stored_latents_and_with_the_official_seed(fx: dict[str, Any]) -> None:
    net, exp = fx["net"], fx["exp"]
    lr, t = exp["input.lr"], float(exp["reverse_sample.temperature"])
    eps = [exp[f"reverse_sample.eps_level{level}"] for level in range(fx["levels"])]
    _close(net.decode(lr, eps), exp["reverse_sample.sr"])
    # restorekit's sampler draws the coarsest level first, as the official one: seed 2024 gives its noise
    drawn = sample_latents(net.latent_shapes(lr.shape), t, torch.Generator().manual_seed(2024), batch=lr.shape[0])
    for level in range(fx["levels"]):
        _close(drawn[level], eps[level])
    _close(net.decode(lr, temperature=t, generator=torch.Generator().manual_seed(2024)), exp["reverse_sample.sr"])


@torch.no_grad()
def test_round_trip(fx: dict[str, Any]) -> None:
    net, enc, exp = fx["net"], fx["enc"], fx["exp"]
    back = net.decode(enc.flow_lr, enc.latents)
    _close(back, exp["roundtrip.sr"])
    assert (back - exp["forward.hr_dequantized"].clamp(0, 1)).abs().max() < 1e-5


def test_conditional_features_are_reused(fx: dict[str, Any]) -> None:
    net, exp = fx["net"], fx["exp"]
    lr = exp["input.lr"][:1]
    with torch.no_grad():
        cond = net.conditional_features(lr)
        zs = sample_latents(net.latent_shapes(lr.shape), 0.7, torch.Generator().manual_seed(3), batch=3)
        _close(net.decode(lr, zs, cond=cond), net.decode(lr, zs))


# ----------------------------------------------------------------------------------------------------
# full-size published layouts


def _keys(name: str) -> tuple[dict[str, torch.Tensor], int]:
    text = (_dir("hcflow_keys") / name).read_text()
    count = int(re.search(r"(\d+) parameters", text).group(1))  # type: ignore[union-attr]
    sd: dict[str, torch.Tensor] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, shape, _dtype = line.split("\t")
            sd[key] = torch.empty([int(d) for d in shape.strip("[]").split(",") if d.strip()], device="meta")
    return sd, count


@pytest.mark.parametrize(
    ("keys", "preset", "parameters"),
    [
        ("keys_SR_DF2K_X4_HCFlow_fullsize.txt", "hcflow-df2k-4x", 23_232_539),
        ("keys_SR_CelebA_X8_HCFlow_fullsize.txt", "hcflow-celeba-8x", 27_017_723),
    ],
)
def test_full_size_layouts_load_strictly(keys: str, preset: str, parameters: int) -> None:
    sd, count = _keys(keys)
    assert count == parameters == sum(t.numel() for t in sd.values())
    assert hc.detect(sd)
    params = hc.HCFlowParams(preset=preset)
    read = hc.params_from_state_dict(sd)
    want = params.arch_kwargs()
    assert {k: want[k] for k in read} == read
    with torch.device("meta"):
        net = hc.build_hcflow(hc.HCFlowParams(**read))
    own = net.state_dict()
    assert list(own) == list(sd)
    assert {k: tuple(v.shape) for k, v in own.items()} == {k: tuple(v.shape) for k, v in sd.items()}
    net.load_state_dict(hc.convert_state_dict(sd, params), strict=True, assign=True)
    assert sum(p.numel() for p in net.parameters()) == parameters
    missing = dict(sd)
    missing.pop(next(iter(sd)))
    with pytest.raises(RuntimeError, match="Missing key"):
        net.load_state_dict(missing, strict=True, assign=True)


def test_a_checkpoint_that_does_not_fit_the_params_is_one_line(tmp_path: Path) -> None:
    path = _dir("hcflow_x4") / "official.pth"
    with pytest.raises(UserError, match="cond_features: checkpoint has 16, params say 32"):
        restorekit.load(path, cond_features=32)
    with pytest.raises(UserError, match=r"official.pth: params: steps_per_level: scale 8 needs 3 positive values"):
        restorekit.load(path, scale=8, cond_steps_per_level=[2, 3, 2])
    with pytest.raises(UserError, match=r"cond_steps_per_level: checkpoint has \[2, 3\], params say \[1, 3\]"):
        restorekit.load(path, cond_steps_per_level=[1, 3])
    # a truncated file (the conditional flow's first convolution gone): one line naming the tensor
    sd = torch.load(path, map_location="cpu", weights_only=True)
    sd.pop("flow.level0_condFlow.conv_first.weight")
    torch.save(sd, tmp_path / "truncated.pth")
    with pytest.raises(UserError, match=r"flow.level0_condFlow.conv_first.weight is missing \(a truncated file"):
        restorekit.load(tmp_path / "truncated.pth", component="hcflow")


def test_wrong_sizes_are_one_line_errors() -> None:
    net = restorekit.load(_dir("hcflow_x4") / "official.pth", fast=False)
    with pytest.raises(UserError, match="not 4x the LR"):
        net.encode(torch.rand(1, 3, 20, 20), torch.rand(1, 3, 4, 4))
    with pytest.raises(UserError, match="latent 0 has shape"):
        net.decode(torch.rand(1, 3, 4, 4), [torch.zeros(1, 6, 4, 4), torch.zeros(1, 21, 4, 4)])


def test_a_fresh_network_has_the_reference_initialisation() -> None:
    """hcflow-architecture.md §8 on the layers shared with SRFlow and RRDB: 1×1 rotations from numpy's generator (a
    run's seed fixes them), Xavier-normal × 0.1 dense-block and coupling convolutions (RRDB's own are Kaiming), zero
    convolutions at zero; the flow steps' ActNorms initialise from a training-mode encode, never from a decode."""
    params = hc.HCFlowParams(steps_per_level=2, cond_steps_per_level=[1, 1], main_coupling_hidden=32,
                             cond_coupling_hidden=32, cond_rrdb_blocks=[1, 1], cond_features=32, cond_growth=32)
    nets = []
    for seed in (0, 0):
        np.random.seed(seed)
        nets.append(hc.build_hcflow(params))
    net = nets[0]
    for name, w in net.named_parameters():
        if name.endswith("permute.weight"):
            assert torch.equal(w, nets[1].get_parameter(name))
            assert torch.allclose(w @ w.T, torch.eye(len(w)), atol=1e-5)
    zero_convs = [m for m in net.modules() if type(m).__name__ == "ZeroConv2d"]
    assert zero_convs and not any(p.any() for m in zero_convs for p in m.parameters())
    for kind in ("RDB1.conv1", "RDB3.conv5", "affine.f.conv1", "affine.f.conv2"):
        ws = [m.weight.detach() for n, m in net.named_modules() if n.endswith(kind)]  # each / its Xavier std × 0.1
        unit = torch.cat([(w / (0.1 * math.sqrt(2.0 / ((w.shape[0] + w.shape[1]) * w[0, 0].numel())))).flatten()
                          for w in ws])
        assert unit.std().item() == pytest.approx(1.0, rel=0.1), kind
    steps = [m for m in net.modules() if isinstance(m, hc.ActNorm)]
    lr = torch.rand(1, 3, 4, 4)
    net.train()
    with torch.no_grad():
        net.decode(lr, temperature=0.5, generator=torch.Generator().manual_seed(0))
        assert steps and not any(m.initialized for m in steps)
        net.encode(torch.rand(1, 3, 16, 16), lr)
    assert all(m.initialized for m in steps)
