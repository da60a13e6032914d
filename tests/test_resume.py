"""Checkpoints are atomic and complete; a run killed with SIGKILL and resumed ends bit-identical."""

from __future__ import annotations

import json
import os
import signal
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import skimage.data
import torch

from restorekit.checkpoint import read_state_dict
from restorekit.components import InjectorComponent, Params
from restorekit.errors import UserError
from restorekit.hookspecs import hookimpl
from restorekit.plan import make_plan
from restorekit.registry import PluginRegistry
from restorekit.spec import load_spec
from restorekit.train import checkpoint_dirs, newest_checkpoint, prune_checkpoints, train, write_checkpoint_dir

SCRIPT = textwrap.dedent(
    """
    import sys, time
    import torch
    from restorekit.components import InjectorComponent, Params
    from restorekit.errors import UserError
    from restorekit.hookspecs import hookimpl
    from restorekit.plan import make_plan
    from restorekit.registry import PluginRegistry
    from restorekit.runner import execute
    from restorekit.spec import load_spec

    torch.set_num_threads(1)

    class SleepParams(Params):
        seconds: float = 0.0

    class Sleep:
        def __init__(self, params, networks):
            self.seconds = params.seconds
        def __call__(self, state, step):
            time.sleep(self.seconds)
            return {}

    class Slow:
        @hookimpl
        def restorekit_injectors(self):
            return [InjectorComponent(name="sleep", params=SleepParams, build=Sleep)]

    reg = PluginRegistry.load(only=["builtins", "rrdb"])
    reg.register(Slow(), "slow")
    try:
        spec = load_spec(sys.argv[1], sys.argv[2:])
        sys.exit(execute(make_plan(spec, reg, source=sys.argv[1])))
    except UserError as exc:
        print(exc, file=sys.stderr)
        sys.exit(2)
    """
)

PIPELINE = """
[run]
mode = "train"
device = "cpu"
seed = 7
output_dir = "out"

[networks.generator]
component = "rrdb"
params = { nf = 8, nb = 1, gc = 4, scale = 2 }

[data.train]
hq = "train"
target_size = 16
batch_size = 2
corrupt = { noise = { p = 0.5, low = 0.0, high = 0.05 } }

[steps.sr]
networks = ["generator"]
optimizer = { kind = "adamw", lr = 2e-3, weight_decay = 1e-4 }
[steps.sr.injectors.fwd]
component = "generator"
[steps.sr.injectors.zz]
component = "sleep"
[steps.sr.losses.l1]
component = "pixel"

[train]
steps = 10
log_every = 1
checkpoint_every = 2
keep_last = 2
ema = 0.9
accumulate = 2
schedule = { kind = "multistep", milestones = [0.5], gamma = 0.5, warmup = 2 }
save_generator = ["generator"]
tensorboard = false
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "train").mkdir()
    for name in ("astronaut", "chelsea", "coffee"):
        img = getattr(skimage.data, name)()[60:100, 90:130, :3]
        iio.imwrite(tmp_path / "train" / f"{name}.png", np.ascontiguousarray(img))
    (tmp_path / "p.toml").write_text(PIPELINE)
    (tmp_path / "run.py").write_text(SCRIPT)
    return tmp_path


def launch(project: Path, *overrides: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    return subprocess.Popen(
        [sys.executable, str(project / "run.py"), str(project / "p.toml"), *overrides],
        cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def finish(proc: subprocess.Popen[str]) -> None:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]


@pytest.mark.slow
def test_sigkill_then_resume_matches_an_uninterrupted_run(project: Path) -> None:
    reference = launch(project, 'run.output_dir="ref"')
    victim = launch(project, 'run.output_dir="killed"', "steps.sr.injectors.zz.params.seconds=0.25")
    ckpts = project / "killed" / "checkpoints"
    deadline = time.time() + 90
    while newest_checkpoint(project / "killed") is None or checkpoint_dirs(ckpts)[-1][0] < 4:
        assert victim.poll() is None and time.time() < deadline, "the run ended before it could be killed"
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    finish(reference)
    assert not (project / "killed" / "generator.safetensors").exists()  # it really died mid-run
    killed_at = checkpoint_dirs(ckpts)[-1][0]
    assert 4 <= killed_at < 10

    finish(launch(project, 'run.output_dir="killed"', 'train.resume="auto"'))
    a = read_state_dict(project / "ref" / "generator.safetensors")
    b = read_state_dict(project / "killed" / "generator.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    raw_a = read_state_dict(project / "ref" / "checkpoints" / "step_10" / "generator.safetensors")
    raw_b = read_state_dict(project / "killed" / "checkpoints" / "step_10" / "generator.safetensors")
    assert all(torch.equal(raw_a[k], raw_b[k]) for k in raw_a)

    lines = [json.loads(x) for x in (project / "killed" / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in lines if r["kind"] == "train"]
    assert steps == list(range(1, 11))  # lines written after the checkpoint by the killed run were dropped
    resumed = [r for r in lines if r.get("event") == "resume"]
    assert len(resumed) == 1 and resumed[0]["step"] == killed_at
    ref_loss = [r["loss"] for r in map(json.loads, (project / "ref" / "metrics.jsonl").read_text().splitlines())
                if r["kind"] == "train"]
    assert [r["loss"] for r in lines if r["kind"] == "train"] == ref_loss
    assert [s for s, _ in checkpoint_dirs(ckpts)] == [8, 10]


class SleepParams(Params):
    seconds: float = 0.0


class Sleep:
    """The subprocess's slow-down injector, for in-process runs of the same pipeline (does nothing)."""

    def __init__(self, params: SleepParams, networks: object) -> None:
        pass

    def __call__(self, state: dict[str, object], step: int) -> dict[str, object]:
        return {}


class SleepPlugin:
    @hookimpl
    def restorekit_injectors(self) -> list[InjectorComponent[SleepParams]]:
        return [InjectorComponent(name="sleep", params=SleepParams, build=Sleep)]


def run_here(project: Path, *overrides: str) -> int:
    import restorekit.builtins
    import restorekit_rrdb.plugin

    reg = PluginRegistry()
    reg.register(restorekit.builtins, "builtins")
    reg.register(restorekit_rrdb.plugin, "rrdb")
    reg.register(SleepPlugin(), "slow")
    spec = load_spec(project / "p.toml", list(overrides))
    return train(make_plan(spec, reg, source="p.toml")).exit_code


def test_resume_from_a_given_folder(project: Path) -> None:
    assert run_here(project, "train.steps=4") == 0
    folder = project / "out" / "checkpoints" / "step_2"
    assert run_here(project, "train.steps=4", f'train.resume="{folder}"', f'run.output_dir="{project / "out2"}"') == 0
    assert [s for s, _ in checkpoint_dirs(project / "out2" / "checkpoints")] == [4]
    four_a = read_state_dict(project / "out" / "checkpoints" / "step_4" / "generator.safetensors")
    four_b = read_state_dict(project / "out2" / "checkpoints" / "step_4" / "generator.safetensors")
    assert all(torch.equal(four_a[k], four_b[k]) for k in four_a)
    with pytest.raises(UserError, match="train.resume: .*train: not a complete checkpoint folder"):
        run_here(project, f'train.resume="{project / "train"}"')
    # a training state of another restorekit version: one line saying so, not "not a training state"
    old = project / "old_step_2"
    shutil.copytree(folder, old)
    state = torch.load(old / "state.pt", weights_only=False)
    torch.save({**state, "version": 1}, old / "state.pt")
    with pytest.raises(UserError, match=r"training state version 1, this one reads \d+\); start a new run"):
        run_here(project, "train.steps=4", f'train.resume="{old}"', f'run.output_dir="{project / "out4"}"')
    # 'auto' without a checkpoint starts fresh
    assert run_here(project, "train.steps=1", 'train.resume="auto"', f'run.output_dir="{project / "out3"}"') == 0


def test_newest_complete_checkpoint_ignores_partial_folders(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"

    def good(step: int) -> None:
        def write(d: Path) -> None:
            (d / "state.pt").write_bytes(b"x")
            (d / "meta.json").write_text("{}")

        write_checkpoint_dir(root, step, write)

    good(2)
    good(4)
    (root / "step_6").mkdir()  # no state / meta: incomplete
    (root / ".tmp-step_8-123").mkdir()

    def crash(d: Path) -> None:
        (d / "state.pt").write_bytes(b"x")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_checkpoint_dir(root, 10, crash)
    assert not (root / "step_10").exists() and not list(root.glob(".tmp-step_10-*"))
    assert newest_checkpoint(tmp_path) == root / "step_4"
    good(4)  # re-saving a step replaces it
    good(5)
    assert prune_checkpoints(root, keep_last=1, keep={2}) == [root / "step_4"]
    assert [s for s, _ in checkpoint_dirs(root)] == [2, 5]
