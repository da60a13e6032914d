"""Training HCFlow with a spec: examples/train_hcflow.toml (the paper's NLL, LR term included), shortened, and a
resumed run that continues bit-exactly (the ActNorms' data initialisation is not redone after loading)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import restorekit
from restorekit.checkpoint import read_state_dict
from restorekit.plan import make_plan
from restorekit.spec import load_spec
from restorekit.train import checkpoint_dirs, train

hc = pytest.importorskip("restorekit_hcflow", reason="restorekit-hcflow is not installed (pip install -e plugins/hcflow)")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train_hcflow.toml"


def run_example(out: Path, *overrides: str) -> int:
    spec = load_spec(EXAMPLE, [
        "train.steps=4", "train.checkpoint_every=2", "train.keep_last=5", "train.val_every=4", "train.image_every=4",
        "train.tensorboard=false", "train.log_every=1", 'run.device="cpu"', f'run.output_dir="{out}"', 'train.schedule={kind="constant"}',
        *overrides,
    ])
    return train(make_plan(spec, restorekit.PluginRegistry.load(), source=str(EXAMPLE))).exit_code


@pytest.mark.slow
def test_example_trains_on_the_nll_with_its_lr_term_and_resumes_exactly(tmp_path: Path) -> None:
    assert run_example(tmp_path / "a") == 0
    records = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss/nll"] for r in records if r["kind"] == "train"]
    assert len(losses) == 4 and all(math.isfinite(v) for v in losses)
    # a fresh flow's LR estimate is far from the LR: the LR term dominates (thousands of bits per pixel)
    assert losses[0] > 100
    val = [r for r in records if r["kind"] == "val"][-1]
    assert math.isfinite(val["gaussian.nll"]) and "psnr.psnr_y" in val
    net = restorekit.load(tmp_path / "a" / "generator.safetensors")
    assert isinstance(net, hc.HCFlowNet) and net.arch_params["cond_steps_per_level"] == [1, 1]
    with torch.no_grad():
        sr = net(torch.rand(1, 3, 6, 6))
    assert sr.shape == (1, 3, 24, 24) and torch.isfinite(sr).all()
    assert (tmp_path / "a" / "images" / "step_0000004.png").is_file()

    folder = tmp_path / "a" / "checkpoints" / "step_2"
    assert run_example(tmp_path / "b", f'train.resume="{folder}"') == 0
    assert [s for s, _ in checkpoint_dirs(tmp_path / "b" / "checkpoints")] == [4]
    a = read_state_dict(tmp_path / "a" / "checkpoints" / "step_4" / "generator.safetensors")
    b = read_state_dict(tmp_path / "b" / "checkpoints" / "step_4" / "generator.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
