"""The RRDB network against the official fixture ``rrdb_x4`` (both long-skip wirings, float16 weights)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from restorekit.api import load
from restorekit.checkpoint import read_state_dict
from restorekit_rrdb import (
    RRDBNet,
    RRDBParams,
    build_rrdb,
    convert_state_dict,
    count_parameters,
    detect,
    detect_layout,
    params_from_state_dict,
)
from restorekit_rrdb import plugin as rrdb_plugin

EXPECTED = {"srflow": "out", "esrgan": "out_esrgan_global_residual"}


@pytest.fixture
def rrdb_dir(fixtures: Path) -> Path:
    d = fixtures / "rrdb_x4"
    if not d.is_dir():
        pytest.skip("fixture rrdb_x4 missing")
    return d


def _close(actual: torch.Tensor, expected: torch.Tensor, rel: float) -> None:
    assert actual.shape == expected.shape
    tol = rel * max(1.0, expected.abs().max().item())
    assert (actual - expected).abs().max().item() <= tol


def _config(d: Path) -> dict:
    with (d / "config.toml").open("rb") as f:
        return tomllib.load(f)


def test_fixture_params_read_off_the_file(rrdb_dir: Path) -> None:
    sd = read_state_dict(rrdb_dir / "official.pth")
    arch = _config(rrdb_dir)["architecture"]
    assert detect(sd) and detect_layout(sd) == "official"
    assert params_from_state_dict(sd) == {
        "in_nc": arch["in_channels"], "out_nc": arch["out_channels"], "nf": arch["nf"], "nb": arch["nb"],
        "gc": arch["gc"], "scale": arch["scale"], "pixel_unshuffle": False,
    }


@pytest.mark.parametrize("variant", ["srflow", "esrgan"])
def test_fixture_parity(rrdb_dir: Path, variant: str) -> None:
    cfg = _config(rrdb_dir)
    sd = read_state_dict(rrdb_dir / "official.pth")
    params = RRDBParams(**params_from_state_dict(sd), variant=variant)
    net = build_rrdb(params).eval()
    net.load_state_dict(convert_state_dict(sd, params), strict=True)
    expected = load_file(str(rrdb_dir / "expected.safetensors"))
    with torch.no_grad():
        out = net(expected["lr"])
    _close(out, expected[EXPECTED[variant]], cfg["tolerance"]["tensor_rel"])


def test_fixture_fp16_file_as_stored(rrdb_dir: Path) -> None:
    """The raw float16 tensors (not cast by read_state_dict) convert and load into the float32 network."""
    raw = torch.load(rrdb_dir / "official.pth", map_location="cpu", weights_only=True)
    assert all(t.dtype == torch.float16 for t in raw.values())
    params = RRDBParams(**params_from_state_dict(raw), variant="srflow")
    net = build_rrdb(params).eval()
    net.load_state_dict(convert_state_dict(raw, params))
    assert all(p.dtype == torch.float32 for p in net.parameters())
    expected = load_file(str(rrdb_dir / "expected.safetensors"))
    with torch.no_grad():
        _close(net(expected["lr"]), expected["out"], 1e-4)


def test_fixture_parameter_count(rrdb_dir: Path) -> None:
    cfg = _config(rrdb_dir)
    net = RRDBNet(nf=32, nb=2, gc=16, scale=4)
    assert count_parameters(net) == cfg["derived"]["parameters"] == 398_755
    sd = read_state_dict(rrdb_dir / "official.pth")
    assert sum(t.numel() for t in sd.values()) == 398_755 and len(sd) == 72


def test_fixture_through_load_with_preset(rrdb_dir: Path, empty_registry) -> None:
    """``restorekit.load`` detects the file, reads nf/nb/gc off it, and the preset supplies the SRFlow wiring."""
    empty_registry.register(rrdb_plugin, "rrdb")
    expected = load_file(str(rrdb_dir / "expected.safetensors"))
    net = load(rrdb_dir / "official.pth", registry=empty_registry, preset="srflow-rrdb")
    assert isinstance(net, RRDBNet) and not net.training
    assert (net.nf, net.nb, net.gc, net.variant) == (32, 2, 16, "srflow")
    assert net.arch_params["variant"] == "srflow"
    with torch.no_grad():
        _close(net(expected["lr"]), expected["out"], 1e-4)
    esrgan = load(rrdb_dir / "official.pth", registry=empty_registry)
    assert esrgan.variant == "esrgan"
    with torch.no_grad():
        _close(esrgan(expected["lr"]), expected["out_esrgan_global_residual"], 1e-4)
