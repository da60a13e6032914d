"""SRFlow parity with the official outputs of ../shared/fixtures/srflow_x4 (README tolerances)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import torch

import restorekit
from restorekit.checkpoint import read_state_dict
from restorekit_srflow import SRFlowNet, SRFlowParams, build_srflow, convert_state_dict, params_from_state_dict


@pytest.fixture(scope="module")
def fx(request) -> dict:
    from conftest import fixtures_dir

    root = fixtures_dir()
    if root is None:
        pytest.skip("official-format fixtures not found")
    from safetensors.torch import load_file

    d = root / "srflow_x4"
    model = restorekit.load(d / "official.pth")
    return {"dir": d, "model": model, "exp": load_file(str(d / "expected.safetensors")),
            "cfg": tomllib.loads((d / "config.toml").read_text())}


def close_tensor(actual: torch.Tensor, expected: torch.Tensor, rel: float = 1e-4) -> None:
    err = (actual - expected).abs().max().item()
    tol = rel * max(1.0, expected.abs().max().item())
    assert actual.shape == expected.shape and err <= tol, f"max error {err:.3g} > {tol:.3g}"


def close_scalars(actual: torch.Tensor, expected: torch.Tensor, rel: float = 1e-5) -> None:
    for a, e in zip(actual.tolist(), expected.tolist()):
        assert abs(a - e) <= rel * max(1.0, abs(e)), f"{a} vs {e}"


def test_architecture_read_from_the_file(fx) -> None:
    cfg = fx["cfg"]["architecture"]
    m: SRFlowNet = fx["model"]
    for key in ("scale", "nf", "nb", "gc", "K", "L", "stack_blocks", "hidden_channels", "additional_flow_no_affine"):
        assert m.arch_params[key] == cfg[key], key
    assert sum(p.numel() for p in m.parameters()) == fx["cfg"]["derived"]["parameters"]
    assert len(m.flowUpsamplerNet.layers) == fx["cfg"]["derived"]["flow_layers"]
    assert m.cond_channels == fx["cfg"]["derived"]["cond_channels"]
    assert not m.training


def test_conditional_features_and_rrdb(fx) -> None:
    m, e = fx["model"], fx["exp"]
    with torch.no_grad():
        cond = m.conditional_features(e["lr"])
        close_tensor(m.rrdb_forward(e["lr"]), e["rrdb_out"])
    for level, name in fx["cfg"]["derived"]["levels_to_features"].items():
        close_tensor(cond.maps[int(level) - 1], e[f"cond_{name}"])


def test_encode_latents_nll_logdet(fx) -> None:
    m, e = fx["model"], fx["exp"]
    with torch.no_grad():
        enc = m.encode(e["gt"], e["lr"])
    assert len(enc.latents) == fx["cfg"]["derived"]["latents"]
    close_tensor(enc.latents[0], e["eps_0"])
    close_tensor(enc.latents[1], e["eps_1"])
    close_scalars(enc.nll, e["nll"])
    close_scalars(enc.logdet, e["logdet"])


def test_dequantisation_term(fx) -> None:
    m, e = fx["model"], fx["exp"]
    with torch.no_grad():
        enc = m.encode(e["gt"], e["lr"], add_noise=True, noise=torch.full_like(e["gt"], 0.5))
    close_scalars(enc.nll, e["nll_noiseterm"])
    close_scalars(enc.logdet, e["logdet_noiseterm"])
    assert torch.allclose(e["nll_noiseterm"] - e["nll"], torch.full((2,), 5.0), atol=1e-4)


def test_decode_reconstruction_t0_and_sample(fx) -> None:
    m, e = fx["model"], fx["exp"]
    with torch.no_grad():
        rec, rec_ld = m.decode(e["lr"], [e["eps_0"], e["eps_1"]], return_logdet=True)
        t0, t0_ld = m.decode(e["lr"], temperature=0.0, return_logdet=True)
        smp, smp_ld = m.decode(e["lr"], [e["sample_eps_0"], e["sample_eps_1"]], return_logdet=True)
    close_tensor(rec, e["recon"])
    close_scalars(rec_ld, e["recon_logdet"])
    assert (rec - e["gt"]).abs().max().item() <= 1e-4
    close_tensor(t0, e["sr_t0"])
    close_scalars(t0_ld, e["sr_t0_logdet"])
    close_tensor(smp, e["sample_sr"])
    close_scalars(smp_ld, e["sample_logdet"])
    with torch.no_grad():
        close_tensor(m(e["lr"]), e["sr_t0"])


def test_dl_art_school_names_load_identically(fx) -> None:
    """DL-Art-School names the RRDB part like BasicSR; the flow part is identical."""
    sd = read_state_dict(fx["dir"] / "official.pth")
    renamed = {}
    for k, v in sd.items():
        k2 = (k.replace("RRDB.RRDB_trunk.", "RRDB.body.").replace(".RDB", ".rdb").replace("RRDB.trunk_conv", "RRDB.conv_body")
              .replace("RRDB.upconv", "RRDB.conv_up").replace("RRDB.HRconv", "RRDB.conv_hr"))
        renamed[k2] = v
    assert "RRDB.body.0.rdb1.conv1.weight" in renamed
    params = SRFlowParams(**params_from_state_dict(renamed))
    net = build_srflow(params)
    net.load_state_dict(convert_state_dict(renamed, params))
    e = fx["exp"]
    with torch.no_grad():
        close_tensor(net.eval().decode(e["lr"], temperature=0.0), e["sr_t0"])


def test_unused_f_convolution_does_not_affect_outputs(fx) -> None:
    m, e = fx["model"], fx["exp"]
    with torch.no_grad():
        saved = m.flowUpsamplerNet.f[0].weight.clone()
        m.flowUpsamplerNet.f[0].weight.normal_()
        try:
            close_tensor(m.decode(e["lr"], temperature=0.0), e["sr_t0"])
        finally:
            m.flowUpsamplerNet.f[0].weight.copy_(saved)


def test_mismatching_params_name_the_parameter(fx) -> None:
    with pytest.raises(restorekit.UserError) as info:
        restorekit.load(fx["dir"] / "official.pth", K=3)
    assert str(info.value).endswith("official.pth: K: checkpoint has 2 steps per level, params say 3")
    with pytest.raises(restorekit.UserError, match="stack_blocks: checkpoint stacks 4 RRDB blocks, params list 2"):
        restorekit.load(fx["dir"] / "official.pth", stack_blocks=[0, 1])


def test_restorekit_checkpoint_round_trip(fx, tmp_path: Path) -> None:
    m, e = fx["model"], fx["exp"]
    path = tmp_path / "srflow.safetensors"
    restorekit.save_generator(path, m, "srflow", m.arch_params)
    again = restorekit.load(path)
    with torch.no_grad():
        assert torch.equal(again.decode(e["lr"], temperature=0.0), m.decode(e["lr"], temperature=0.0))
