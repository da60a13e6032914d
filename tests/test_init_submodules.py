"""networks.<n>.init_submodules: a standalone stage-1 RRDB file initialises SRFlow's conditional RRDB."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import restorekit
from restorekit.errors import UserError
from restorekit.plan import build_network, make_plan
from restorekit.spec import spec_from_dict
from restorekit_rrdb import RRDBNet

SRFLOW = {"scale": 4, "nf": 8, "nb": 2, "gc": 4, "K": 1, "L": 3, "hidden_channels": 8, "stack_blocks": [0, 1]}


def spec(tmp_path: Path, parts: dict) -> dict:
    return {
        "run": {"mode": "infer", "device": "cpu"},
        "networks": {"generator": {"component": "srflow", "params": SRFLOW, "init_submodules": parts}},
        "infer": {"inputs": "in"},
    }


def test_standalone_rrdb_file_loads_into_srflow_rrdb(tmp_path: Path, registry) -> None:
    torch.manual_seed(0)
    rrdb = RRDBNet(nf=8, nb=2, gc=4, scale=4, variant="srflow")
    restorekit.save_generator(tmp_path / "rrdb.safetensors", rrdb, "rrdb", rrdb.arch_params)
    torch.save(rrdb.state_dict(), tmp_path / "rrdb.pth")  # no metadata: detected from the key names
    for name in ("rrdb.safetensors", "rrdb.pth"):
        plan = make_plan(spec_from_dict(spec(tmp_path, {"RRDB": name}), base_dir=tmp_path), registry)
        net = build_network(plan.networks["generator"])
        for key, value in rrdb.state_dict().items():
            assert torch.equal(net.RRDB.state_dict()[key], value), key
        lr = torch.rand(1, 3, 6, 6)
        with torch.no_grad():
            assert torch.allclose(net.rrdb_forward(lr), rrdb(lr), atol=1e-6)
        # the outputs' provenance names the sub-module file by its sha256
        from restorekit.provenance import file_sha256, weights_identity

        assert weights_identity(plan.networks["generator"])["submodules"] == {"RRDB": file_sha256(tmp_path / name)}


def test_mismatching_rrdb_file_is_one_line(tmp_path: Path, registry) -> None:
    torch.save(RRDBNet(nf=8, nb=3, gc=4, scale=4).state_dict(), tmp_path / "rrdb.pth")
    plan = make_plan(spec_from_dict(spec(tmp_path, {"RRDB": "rrdb.pth"}), base_dir=tmp_path), registry)
    with pytest.raises(UserError) as info:
        build_network(plan.networks["generator"])
    assert "rrdb.pth" in str(info.value) and "\n" not in str(info.value)
    plan = make_plan(spec_from_dict(spec(tmp_path, {"flow": "rrdb.pth"}), base_dir=tmp_path), registry)
    with pytest.raises(UserError, match="'srflow' has no sub-module 'flow'"):
        build_network(plan.networks["generator"])
    with pytest.raises(UserError, match="init_submodules.RRDB: .*missing.pth: file not found"):
        make_plan(spec_from_dict(spec(tmp_path, {"RRDB": "missing.pth"}), base_dir=tmp_path), registry)
