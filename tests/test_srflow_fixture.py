"""SRFlow parity with the official outputs stored in tests/fixtures/srflow_x4 (tolerances of its README).

The network is loaded the way a user's file is: ``read_state_dict`` (fp16 → fp32), params read off the tensors
(with the stacked blocks [0, 1, 2, 3] given explicitly), key conversion, strict ``load_state_dict``. Every output is
computed once per module and compared tensor by tensor.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import pytest
import torch

import restorekit
from restorekit import Switches
from restorekit.perf import fast_inference
from restorekit.checkpoint import read_state_dict
from restorekit.errors import UserError
from restorekit_srflow import SRFlowNet, SRFlowParams, build_srflow, convert_state_dict, detect, params_from_state_dict

TENSORS = [
    "cond_fea_up2", "cond_fea_up1", "cond_fea_up0", "rrdb_out", "eps_0", "eps_1",
    "recon", "sr_t0", "sample_sr",
]
SCALARS = [
    "nll", "logdet", "nll_noiseterm", "logdet_noiseterm", "recon_logdet", "sr_t0_logdet", "sample_logdet",
]


def _fixture_dir() -> Path:
    from conftest import fixtures_dir

    return fixtures_dir() / "srflow_x4"


@pytest.fixture(scope="module", params=[False, True], ids=["as-built", "fast-inference"])
def fx(request: pytest.FixtureRequest) -> dict[str, Any]:
    # as built, and with SRFlow's opt-in switch (the factored 2·LR map)
    d = _fixture_dir()
    from safetensors.torch import load_file

    sd = read_state_dict(d / "official.pth")
    inferred = params_from_state_dict(sd)
    params = SRFlowParams(**{**inferred, "stack_blocks": [0, 1, 2, 3]})
    net = build_srflow(params)
    net.load_state_dict(convert_state_dict(sd, params), strict=True)
    net.eval()
    assert fast_inference(net, Switches(inference=("factor_cond",)), enabled=request.param) == 1
    exp = load_file(str(d / "expected.safetensors"))
    lr, gt = exp["lr"], exp["gt"]
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        cond = net.conditional_features(lr)
        out["cond_fea_up2"], out["cond_fea_up1"], out["cond_fea_up0"] = cond.maps
        out["rrdb_out"] = net.rrdb_forward(lr)
        enc = net.encode(gt, lr, cond=cond)
        out["eps_0"], out["eps_1"] = enc.latents
        out["nll"], out["logdet"] = enc.nll, enc.logdet
        noisy = net.encode(gt, lr, add_noise=True, noise=torch.full_like(gt, 0.5), cond=cond)
        out["nll_noiseterm"], out["logdet_noiseterm"] = noisy.nll, noisy.logdet
        out["recon"], out["recon_logdet"] = net.decode(lr, [exp["eps_0"], exp["eps_1"]], cond=cond, return_logdet=True)
        out["sr_t0"], out["sr_t0_logdet"] = net.decode(lr, temperature=0.0, cond=cond, return_logdet=True)
        out["sample_sr"], out["sample_logdet"] = net.decode(
            lr, [exp["sample_eps_0"], exp["sample_eps_1"]], cond=cond, return_logdet=True
        )
        out["roundtrip"] = net.decode(lr, enc.latents, cond=cond)
        out["forward"] = net(lr)
    return {"dir": d, "sd": sd, "inferred": inferred, "params": params, "net": net, "exp": exp, "out": out,
            "cfg": tomllib.loads((d / "config.toml").read_text())}


def _tensor_ratio(actual: torch.Tensor, expected: torch.Tensor) -> float:
    assert actual.shape == expected.shape, f"shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    return (actual - expected).abs().max().item() / (1e-4 * max(1.0, expected.abs().max().item()))


def _scalar_ratio(actual: torch.Tensor, expected: torch.Tensor) -> float:
    assert actual.shape == expected.shape, f"shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    return max(abs(a - e) / (1e-5 * max(1.0, abs(e))) for a, e in zip(actual.tolist(), expected.tolist()))


@pytest.mark.parametrize("name", TENSORS)
def test_tensor_matches_official(fx: dict[str, Any], name: str) -> None:
    """max|actual − expected| ≤ 1e-4 · max(1, max|expected|)."""
    ratio = _tensor_ratio(fx["out"][name], fx["exp"][name])
    assert ratio <= 1.0, f"{name}: error is {ratio:.3f} x the tolerance"


@pytest.mark.parametrize("name", SCALARS)
def test_per_sample_scalar_matches_official(fx: dict[str, Any], name: str) -> None:
    """|actual − expected| ≤ 1e-5 · max(1, |expected|) per sample."""
    ratio = _scalar_ratio(fx["out"][name], fx["exp"][name])
    assert ratio <= 1.0, f"{name}: error is {ratio:.3f} x the tolerance"


def test_round_trip_and_dequantisation_term(fx: dict[str, Any]) -> None:
    out, exp = fx["out"], fx["exp"]
    assert (out["roundtrip"] - exp["gt"]).abs().max().item() <= 1e-4
    assert torch.allclose(out["nll_noiseterm"] - out["nll"], torch.full((2,), 5.0), atol=1e-4)  # log2(32)
    assert torch.allclose(out["recon_logdet"], -out["logdet"], rtol=1e-5, atol=1e-2)


def test_model_call_is_the_temperature_zero_decode(fx: dict[str, Any]) -> None:
    assert torch.equal(fx["out"]["forward"], fx["out"]["sr_t0"])


def test_architecture_read_from_the_file(fx: dict[str, Any]) -> None:
    cfg, net = fx["cfg"], fx["net"]
    arch, derived = cfg["architecture"], cfg["derived"]
    assert detect(fx["sd"])
    for key in ("scale", "nf", "nb", "gc", "K", "L", "hidden_channels", "additional_flow_no_affine"):
        assert fx["inferred"][key] == arch[key], key
    assert fx["inferred"]["stack_blocks"] == arch["stack_blocks"]  # every block stacked: 0..nb-1
    assert fx["inferred"]["split_correct_levels"] is False
    assert net.arch_params["stack_blocks"] == [0, 1, 2, 3]
    assert sum(p.numel() for p in net.parameters()) == derived["parameters"]
    assert len(net.flowUpsamplerNet.layers) == derived["flow_layers"]
    assert net.cond_channels == derived["cond_channels"]
    assert net.size_multiple == derived["lr_divisible_by"]
    assert len(net.state_dict()) == 281
    assert net.latent_shapes(fx["exp"]["lr"].shape) == [(6, 40, 40), (derived["top_z_channels"], 10, 10)]


def test_dl_art_school_names_give_the_same_tensors(fx: dict[str, Any]) -> None:
    """DL-Art-School names the RRDB like BasicSR (body.N.rdbK, conv_body, conv_upM, conv_hr); the flow keys match."""
    renamed = {}
    for k, v in fx["sd"].items():
        k2 = (k.replace("RRDB.RRDB_trunk.", "RRDB.body.").replace(".RDB", ".rdb").replace("RRDB.trunk_conv", "RRDB.conv_body")
              .replace("RRDB.upconv", "RRDB.conv_up").replace("RRDB.HRconv", "RRDB.conv_hr"))
        renamed[k2] = v
    assert "RRDB.body.3.rdb2.conv5.weight" in renamed and "RRDB.conv_up2.weight" in renamed
    assert detect(renamed)
    assert params_from_state_dict(renamed) == fx["inferred"]
    a, b = convert_state_dict(renamed, fx["params"]), convert_state_dict(fx["sd"], fx["params"])
    assert a.keys() == b.keys() == fx["net"].state_dict().keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_unused_f_convolution_does_not_affect_outputs(fx: dict[str, Any]) -> None:
    net, exp = fx["net"], fx["exp"]
    conv = net.flowUpsamplerNet.f[0]
    assert tuple(conv.weight.shape) == (96, 320, 3, 3)
    saved = conv.weight.detach().clone()
    try:
        with torch.no_grad():
            conv.weight.normal_()
            cond = net.conditional_features(exp["lr"])
            assert torch.equal(net.decode(exp["lr"], temperature=0.0, cond=cond), fx["out"]["sr_t0"])
    finally:
        with torch.no_grad():
            conv.weight.copy_(saved)


def test_mismatching_params_name_the_parameter(fx: dict[str, Any]) -> None:
    sd, inferred = fx["sd"], fx["inferred"]
    cases = {
        "K": (3, "K: checkpoint has 2 steps per level, params say 3"),
        "L": (4, "L: checkpoint has 3 levels, params say 4"),
        "nb": (5, "nb: checkpoint has 4 RRDB blocks, params say 5"),
        "hidden_channels": (32, "hidden_channels: checkpoint has coupling width 64, params say 32"),
    }
    for key, (value, message) in cases.items():
        params = SRFlowParams(**{**inferred, key: value, "fea_up_minus1": key == "L"})
        with pytest.raises(UserError) as info:
            convert_state_dict(sd, params)
        assert str(info.value) == message
    with pytest.raises(UserError, match="stack_blocks: checkpoint stacks 4 RRDB blocks, params list 2"):
        convert_state_dict(sd, SRFlowParams(**{**inferred, "stack_blocks": [0, 1]}))
    # through the public loader the message also names the file
    with pytest.raises(UserError) as info:
        restorekit.load(fx["dir"] / "official.pth", K=3)
    assert str(info.value).endswith("official.pth: K: checkpoint has 2 steps per level, params say 3")
    assert "\n" not in str(info.value)


def test_restorekit_checkpoint_round_trip(fx: dict[str, Any], tmp_path: Path) -> None:
    net: SRFlowNet = fx["net"]
    path = tmp_path / "srflow.safetensors"
    restorekit.save_generator(path, net, "srflow", net.arch_params)
    again = restorekit.load(path, fast=False)  # the file is what is compared: no layout probe (six full-size decodes)
    assert isinstance(again, SRFlowNet) and again.arch_params == net.arch_params
    a, b = again.state_dict(), net.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not again.training
