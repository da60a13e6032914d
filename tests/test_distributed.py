"""DDP on CPU (gloo): ``torchrun --nproc_per_node 2 restore-run p.toml`` matches one process with the same
global batch, through gradient accumulation and a mid-run unfreeze (DDP re-wrap)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import skimage.data
import torch

from restorekit.checkpoint import read_state_dict

PIPELINE = """
[run]
mode = "train"
device = "cpu"
seed = 3
output_dir = "out"

[networks.generator]
component = "rrdb"
params = { nf = 8, nb = 1, gc = 4, scale = 2 }
trainable_only = ["conv_first", "RRDB_trunk"]
unfreeze = { after_steps = 1 }

[data.train]
hq = "train"
target_size = 16
batch_size = 4
flip = true
rot90 = true

[steps.sr]
networks = ["generator"]
optimizer = { lr = 1e-3 }
[steps.sr.injectors.fwd]
component = "generator"
[steps.sr.losses.l1]
component = "pixel"

[train]
steps = 2
accumulate = 2
log_every = 1
clip_grad = 10.0
tensorboard = false
save_generator = ["generator"]
"""


def restore_run() -> str:
    exe = Path(sys.executable).with_name("restore-run")
    found = str(exe) if exe.is_file() else shutil.which("restore-run")
    if found is None:
        pytest.skip("restore-run is not installed")
    return found


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "train").mkdir()
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        img = getattr(skimage.data, name)()[70:110, 100:140, :3]
        iio.imwrite(tmp_path / "train" / f"{name}.png", np.ascontiguousarray(img))
    (tmp_path / "p.toml").write_text(PIPELINE)
    return tmp_path


def env() -> dict[str, str]:
    e = {**os.environ, "OMP_NUM_THREADS": "1", "RESTOREKIT_LOAD_PLUGINS": "builtins,rrdb"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        e.pop(k, None)
    return e


def train_records(out: Path) -> list[dict[str, float]]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == "train"]


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process_with_the_same_global_batch(project: Path) -> None:
    cli = restore_run()
    ddp = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", cli,
         str(project / "p.toml"), "--set", "data.train.batch_size=2", "--set", 'run.output_dir="ddp"'],
        cwd=project, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    single = subprocess.run(
        [cli, str(project / "p.toml"), "--set", 'run.output_dir="single"'],
        cwd=project, env=env(), capture_output=True, text=True, timeout=120,
    )
    out, err = ddp.communicate(timeout=120)
    assert single.returncode == 0, single.stderr[-2000:]
    assert ddp.returncode == 0, err[-3000:]

    a = read_state_dict(project / "single" / "generator.safetensors")
    b = read_state_dict(project / "ddp" / "generator.safetensors")
    first = read_state_dict(project / "single" / "checkpoints" / "step_2" / "generator.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6), (k, (a[k] - b[k]).abs().max())
        assert torch.equal(a[k], first[k])
    ra, rb = train_records(project / "single"), train_records(project / "ddp")
    assert [r["step"] for r in rb] == [1, 2]  # rank 0 alone writes the log
    for x, y in zip(ra, rb):
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-5)
        assert y["grad_norm/generator"] == pytest.approx(x["grad_norm/generator"], rel=1e-4)
        assert y["images_per_s"] > 0
    events = [json.loads(x) for x in (project / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e.get("event") == "unfreeze"] == [1]
    assert out.count("training done") == 1
