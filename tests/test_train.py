"""The trainer: steps, logging, validation, checkpoints, stage switching, non-finite losses; evaluation."""

from __future__ import annotations

import json
import math
import sys
import types
from pathlib import Path
from typing import Any, Iterable

import imageio.v3 as iio
import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import restorekit
import restorekit.builtins
from restorekit.train.validation import HEADER_LINE
from restorekit.checkpoint import read_state_dict
from restorekit.components import (
    EncodeResult,
    GeneratorComponent,
    LossComponent,
    Params,
    Sample,
    ValidationContext,
    ValidationResult,
    ValidatorComponent,
)
from restorekit.errors import UserError
from restorekit.evaluate import evaluate
from restorekit.hookspecs import hookimpl
from restorekit.plan import make_plan
from restorekit.registry import PluginRegistry
from restorekit.spec import ScheduleSpec, spec_from_dict
from restorekit.train import checkpoint_dirs, lr_factor, newest_checkpoint, train

# ----------------------------------------------------------------------------------------------------
# small fakes registered for these tests


class TinyFlow(nn.Module):
    """A 'conditional flow' small enough for tests: ``cond`` plays SRFlow's RRDB, ``flow`` the flow."""

    scale = 2
    size_multiple = 1

    def __init__(self) -> None:
        super().__init__()
        self.cond = nn.Conv2d(3, 3, 3, padding=1)
        self.flow = nn.Conv2d(3, 3, 3, padding=1)
        self.arch_params: dict[str, Any] = {}

    def _mean(self, lr: Tensor) -> Tensor:
        up = F.interpolate(lr + self.cond(lr), scale_factor=2, mode="nearest")
        return up + self.flow(up)

    def encode(self, hr: Tensor, lr: Tensor, add_noise: bool = False) -> EncodeResult:
        z = hr - self._mean(lr)
        nll = 0.5 * z.pow(2).flatten(1).mean(1)
        return EncodeResult([z], nll, torch.zeros(hr.shape[0]))

    def decode(self, lr: Tensor, latents: Any = None, temperature: float | Tensor = 0.0,
               generator: torch.Generator | None = None, *, cond: Any = None) -> Tensor:
        mean = self._mean(lr)
        z = latents[0] if latents else temperature * torch.randn(mean.shape, generator=generator)
        return mean + z

    def rrdb_forward(self, lr: Tensor) -> Tensor:
        return F.interpolate(lr + self.cond(lr), scale_factor=2, mode="nearest")

    def conditional_features(self, lr: Tensor) -> None:
        return None

    def forward(self, lr: Tensor) -> Tensor:
        return self.decode(lr)

    def latent_shapes(self, lr_shape: Any) -> list[tuple[int, ...]]:
        return [(3, lr_shape[-2] * 2, lr_shape[-1] * 2)]


class NaNLossParams(Params):
    at: list[int] = []
    start: int | None = None


class NaNLoss:
    """l1(sr, hq), but NaN at the given (1-based) calls, or from call ``start`` on."""

    def __init__(self, params: NaNLossParams) -> None:
        self.params = params
        self.calls = 0

    def __call__(self, state: dict[str, Any]) -> Tensor:
        self.calls += 1
        loss = (state["sr"] - state["hq"]).abs().mean()
        p = self.params
        if self.calls in p.at or (p.start is not None and self.calls >= p.start):
            return loss * float("nan")
        return loss


class ConstValidator:
    """Reports the same number every time: a plateau."""

    def __init__(self, params: Params) -> None:
        pass

    def __call__(self, model: Any, samples: Iterable[Sample], ctx: ValidationContext) -> ValidationResult:
        n = len(list(samples))
        return ValidationResult({"value": 1.0, "count": float(n)}, [])


class Fakes:
    @hookimpl
    def restorekit_generators(self) -> list[GeneratorComponent[Any]]:
        return [GeneratorComponent(name="tinyflow", params=Params, build=lambda p: TinyFlow())]

    @hookimpl
    def restorekit_losses(self) -> list[LossComponent[Any]]:
        return [LossComponent(name="nan_l1", params=NaNLossParams, build=NaNLoss)]

    @hookimpl
    def restorekit_validators(self) -> list[ValidatorComponent[Any]]:
        from restorekit_validators.fidelity import PSNR, PSNRParams

        return [
            ValidatorComponent(name="const", params=Params, build=ConstValidator),
            ValidatorComponent(name="psnr", params=PSNRParams, build=PSNR),
        ]


@pytest.fixture
def reg() -> PluginRegistry:
    import restorekit_rrdb.plugin

    r = PluginRegistry()
    r.register(restorekit.builtins, "builtins")
    r.register(restorekit_rrdb.plugin, "rrdb")
    r.register(Fakes(), "fakes")
    return r


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """train/ (4 crops 48..64 px) and val/ (1 crop 32 px) from scikit-image samples."""
    for i, name in enumerate(("astronaut", "chelsea", "coffee", "rocket")):
        img = getattr(skimage.data, name)()[50 : 98 + 4 * i, 80 : 128 + 4 * i, :3]
        (tmp_path / "train").mkdir(exist_ok=True)
        iio.imwrite(tmp_path / "train" / f"{name}.png", np.ascontiguousarray(img))
    (tmp_path / "val").mkdir()
    iio.imwrite(tmp_path / "val" / "cat.png", np.ascontiguousarray(skimage.data.chelsea()[100:132, 200:232]))
    return tmp_path


RRDB = {"component": "rrdb", "params": {"nf": 8, "nb": 1, "gc": 4, "scale": 2}}


def pipeline(root: Path, *, network: dict[str, Any] | None = None, steps: dict[str, Any] | None = None,
             train_: dict[str, Any] | None = None, validators: dict[str, Any] | None = None,
             val: bool = True, run: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "run": {"mode": "train", "device": "cpu", "output_dir": "out", "seed": 1, **(run or {})},
        "networks": {"generator": network or RRDB},
        "data": {"train": {"hq": "train", "target_size": 16, "batch_size": 2}},
        "steps": steps or {"sr": {"networks": ["generator"], "injectors": {"fwd": {"component": "generator"}},
                                  "losses": {"l1": {"component": "pixel"}}}},
        "train": {"steps": 4, "log_every": 1, "tensorboard": False, **(train_ or {})},
        **extra,
    }
    if val:
        data["data"]["val"] = {"hq": "val"}
        data["validators"] = validators or {"psnr": {"component": "psnr"}}
    return data


def run_train(root: Path, reg: PluginRegistry, data: dict[str, Any]) -> Any:
    plan = make_plan(spec_from_dict(data, source="p.toml", base_dir=root), reg, source="p.toml")
    return train(plan)


def records(root: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (root / "out" / "metrics.jsonl").read_text().splitlines()]


def weights(root: Path, step: int, net: str = "generator") -> dict[str, Tensor]:
    return read_state_dict(root / "out" / "checkpoints" / f"step_{step}" / f"{net}.safetensors")


def moved(a: dict[str, Tensor], b: dict[str, Tensor], prefix: str) -> list[bool]:
    """For every tensor whose name starts with ``prefix``: whether it differs between ``a`` and ``b``."""
    keys = [k for k in a if k.startswith(prefix)]
    assert keys, prefix
    return [not torch.equal(a[k], b[k]) for k in keys]


def all_changed(a: dict[str, Tensor], b: dict[str, Tensor], prefix: str) -> bool:
    return all(moved(a, b, prefix))


def none_changed(a: dict[str, Tensor], b: dict[str, Tensor], prefix: str) -> bool:
    return not any(moved(a, b, prefix))


# ----------------------------------------------------------------------------------------------------
# schedules


def test_lr_schedules() -> None:
    const = ScheduleSpec(warmup=4)
    assert [lr_factor(s, const, 10, 1e-3) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    multi = ScheduleSpec(kind="multistep", milestones=[0.5, 8], gamma=0.1)
    assert [round(lr_factor(s, multi, 10, 1e-3), 6) for s in (0, 4, 5, 7, 8, 9)] == [1, 1, 0.1, 0.1, 0.01, 0.01]
    cos = ScheduleSpec(kind="cosine", min_lr=1e-4)
    assert lr_factor(0, cos, 10, 1e-3) == pytest.approx(1.0)
    assert lr_factor(5, cos, 10, 1e-3) == pytest.approx(0.55)
    assert lr_factor(10, cos, 10, 1e-3) == pytest.approx(0.1)


# ----------------------------------------------------------------------------------------------------
# a full small run


def test_rrdb_run_logs_validates_checkpoints_and_saves(images: Path, reg: PluginRegistry) -> None:
    data = pipeline(images, train_={
        "steps": 6, "val_every": 2, "image_every": 3, "checkpoint_every": 1, "keep_last": 2,
        "best_metric": "psnr.psnr", "best_mode": "max", "tensorboard": True, "save_generator": ["generator"],
        "clip_grad": 1.0, "accumulate": 2, "schedule": {"kind": "cosine", "warmup": 2},
    })
    result = run_train(images, reg, data)
    out = images / "out"
    assert result.exit_code == 0
    assert "psnr.psnr" in result.metrics and math.isfinite(result.metrics["loss"])

    recs = records(images)
    train_recs = [r for r in recs if r["kind"] == "train"]
    assert [r["step"] for r in train_recs] == [1, 2, 3, 4, 5, 6]
    assert {"loss", "loss/l1", "lr/generator", "grad_norm/generator", "images_per_s", "time"} <= set(train_recs[0])
    assert train_recs[0]["lr/generator"] == pytest.approx(0.5e-4)  # warmup step 1 of 2
    vals = [r for r in recs if r["kind"] == "val"]
    assert [v["step"] for v in vals] == [2, 4, 6] and all("psnr.psnr" in v for v in vals)

    events = list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert events
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(events[0]))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/lr/generator", "train/grad_norm/generator", "val/psnr.psnr"} <= tags
    assert "images/lr_sr_hr" in acc.Tags()["images"]
    grids = sorted((out / "images").glob("*.png"))
    assert [g.name for g in grids] == ["step_0000003.png", "step_0000006.png"]
    assert iio.imread(grids[0]).shape == (HEADER + 32, 3 * 32 + 2 * 2, 3)  # header over bicubic | SR | HR

    best = json.loads((out / "checkpoints" / "best.json").read_text())
    steps = [s for s, _ in checkpoint_dirs(out / "checkpoints")]
    assert steps == sorted({5, 6, best["step"]})  # keep_last 2, plus the best
    assert best["value"] == max(v["psnr.psnr"] for v in vals)
    model = restorekit.load(out / "generator.safetensors", registry=reg)
    assert model(torch.rand(1, 3, 8, 8)).shape == (1, 3, 16, 16)
    assert torch.equal(model.state_dict()["conv_first.weight"], result.networks["generator"].state_dict()["conv_first.weight"])


def test_bf16_autocast_gradient_checkpointing_and_ema(images: Path, reg: PluginRegistry) -> None:
    data = pipeline(images, val=False, run={"precision": "bf16"},
                    train_={"steps": 3, "ema": 0.5, "gradient_checkpointing": True})
    result = run_train(images, reg, data)
    assert result.exit_code == 0
    net = result.networks["generator"]  # the EMA copy
    assert net.gradient_checkpointing is True
    folder = newest_checkpoint(images / "out")
    assert folder is not None and (folder / "generator.ema.safetensors").is_file()
    raw, ema = weights(images, 3), read_state_dict(folder / "generator.ema.safetensors")
    assert not torch.equal(raw["conv_first.weight"], ema["conv_first.weight"])
    assert torch.equal(ema["conv_first.weight"], net.state_dict()["conv_first.weight"])


# ----------------------------------------------------------------------------------------------------
# stage switching


HEADER = 2 * HEADER_LINE + 2  # the grid's header: the step, the column labels


FLOW_STEPS = {"flow": {
    "networks": ["generator"],
    "optimizer": {"lr": 1e-2},
    "injectors": {"enc": {"component": "generator", "params": {"mode": "encode"}}},
    "losses": {"nll": {"component": "direct", "params": {"key": "nll"}}},
}}


def test_trainable_only_then_unfreeze_after_steps(images: Path, reg: PluginRegistry) -> None:
    net = {"component": "tinyflow", "trainable_only": ["flow"], "unfreeze": {"after_steps": 2}}
    data = pipeline(images, network=net, steps=FLOW_STEPS, val=False,
                    train_={"steps": 4, "checkpoint_every": 1, "keep_last": 10, "image_every": 4,
                            "image_temperatures": [0.0, 0.5, 1.0]})
    assert run_train(images, reg, data).exit_code == 0
    w = {s: weights(images, s) for s in (1, 2, 3, 4)}
    assert all_changed(w[1], w[2], "flow") and none_changed(w[1], w[2], "cond")
    assert all_changed(w[2], w[3], "cond") and all_changed(w[3], w[4], "flow")
    events = [r for r in records(images) if r.get("event") == "unfreeze"]
    assert [(e["step"], e["network"]) for e in events] == [(2, "generator")]
    assert "after_steps = 2" in events[0]["message"]
    state = torch.load(images / "out" / "checkpoints" / "step_4" / "state.pt", weights_only=True)
    freeze = state["parts"]["freeze.generator"]
    assert freeze["mode"] == "full" and freeze["unfrozen_at"] == 2
    grid = iio.imread(images / "out" / "images" / "step_0000004.png")
    assert grid.shape == (HEADER + 16, 5 * 16 + 4 * 2, 3)  # bicubic | three temperatures | HR (a training crop)


def test_frozen_network_unfreezes_after_fraction(images: Path, reg: PluginRegistry) -> None:
    net = {"component": "tinyflow", "trainable": False, "unfreeze": {"after_fraction": 0.5}}
    data = pipeline(images, network=net, steps=FLOW_STEPS, val=False,
                    train_={"steps": 4, "checkpoint_every": 1, "keep_last": 10})
    assert run_train(images, reg, data).exit_code == 0
    w = {s: weights(images, s) for s in (1, 2, 3)}
    assert none_changed(w[1], w[2], "flow") and none_changed(w[1], w[2], "cond")
    assert all_changed(w[2], w[3], "flow") and all_changed(w[2], w[3], "cond")


def test_unfreeze_on_metric_plateau(images: Path, reg: PluginRegistry) -> None:
    net = {"component": "tinyflow", "trainable_only": ["flow"],
           "unfreeze": {"metric": "const.value", "patience": 2}}
    data = pipeline(images, network=net, steps=FLOW_STEPS, validators={"const": {"component": "const"}},
                    train_={"steps": 5, "val_every": 1, "checkpoint_every": 1, "keep_last": 10})
    assert run_train(images, reg, data).exit_code == 0
    events = [r for r in records(images) if r.get("event") == "unfreeze"]
    assert [e["step"] for e in events] == [3]  # best at 1, no improvement at 2 and 3
    assert "did not improve for 2 validations (best 1)" in events[0]["message"]
    w = {s: weights(images, s) for s in (2, 3, 4)}
    assert none_changed(w[2], w[3], "cond") and all_changed(w[3], w[4], "cond")
    vals = [r for r in records(images) if r["kind"] == "val"]
    assert vals[0]["const.count"] == 1.0


def test_bad_trainable_only_prefix_and_other_spec_mistakes(images: Path, reg: PluginRegistry) -> None:
    net = {"component": "tinyflow", "trainable_only": ["flowUpsamplerNet"]}
    with pytest.raises(UserError, match=r"networks.generator.trainable_only: no parameter name starts with "
                                        r"'flowUpsamplerNet' \(top-level modules: cond, flow\)"):
        run_train(images, reg, pipeline(images, network=net, steps=FLOW_STEPS, val=False))
    with pytest.raises(UserError, match="run.precision: fp16 needs a CUDA device"):
        run_train(images, reg, pipeline(images, val=False, run={"precision": "fp16"}))
    with pytest.raises(UserError, match="train.save_generator: unknown network 'gen'"):
        run_train(images, reg, pipeline(images, val=False, train_={"save_generator": ["gen"]}))
    with pytest.raises(UserError, match="train.best_metric needs"):
        run_train(images, reg, pipeline(images, val=False, train_={"best_metric": "psnr.psnr"}))
    with pytest.raises(UserError, match="train.resume: .*not a complete checkpoint folder"):
        run_train(images, reg, pipeline(images, val=False, train_={"resume": "nowhere"}))
    with pytest.raises(UserError, match=r"train.best_metric: 'psnr.ssim' is not a validation metric \(available: psnr.psnr\)"):
        run_train(images, reg, pipeline(images, train_={"best_metric": "psnr.ssim", "steps": 1}))
    with pytest.raises(UserError, match="^p.toml: data.train.hq: .*empty: no images found"):
        (images / "empty").mkdir()
        data = pipeline(images, val=False)
        data["data"]["train"]["hq"] = "empty"
        run_train(images, reg, data)


# ----------------------------------------------------------------------------------------------------
# non-finite losses


NAN_STEPS = {"sr": {"networks": ["generator"], "injectors": {"fwd": {"component": "generator"}},
                    "losses": {"l1": {"component": "nan_l1", "params": {"at": [2]}}}}}


def test_nonfinite_loss_skips_the_update(images: Path, reg: PluginRegistry) -> None:
    data = pipeline(images, steps=NAN_STEPS, val=False, train_={"steps": 3, "checkpoint_every": 1, "keep_last": 5})
    result = run_train(images, reg, data)
    assert result.exit_code == 0
    # no checkpoint while the streak lasts; Adam made 2 updates in 3 steps
    assert [s for s, _ in checkpoint_dirs(images / "out" / "checkpoints")] == [1, 3]
    state = torch.load(images / "out" / "checkpoints" / "step_3" / "state.pt", weights_only=True)
    assert state["state"]["nonfinite"] == 0
    adam = state["parts"]["optimizers.sr.generator"]["state"]
    assert {float(v["step"]) for v in adam.values()} == {2.0}
    events = [r for r in records(images) if r.get("event") == "nonfinite"]
    assert [e["step"] for e in events] == [2] and "update skipped" in events[0]["message"]


def test_too_many_nonfinite_losses_stop_the_run(images: Path, reg: PluginRegistry, capsys: pytest.CaptureFixture[str]) -> None:
    steps = {"sr": {**NAN_STEPS["sr"], "losses": {"l1": {"component": "nan_l1", "params": {"start": 3}}}}}
    data = pipeline(images, steps=steps, val=False,
                    train_={"steps": 10, "checkpoint_every": 1, "keep_last": 3, "max_nonfinite": 2,
                            "save_generator": ["generator"]})
    with pytest.warns(UserWarning, match="training stopped at step 4: 2 non-finite losses in a row.*step_2"):
        result = run_train(images, reg, data)  # restore-run shows the warning as one line
    assert result.exit_code == 1
    assert [s for s, _ in checkpoint_dirs(images / "out" / "checkpoints")] == [1, 2]
    assert all(torch.isfinite(t).all() for t in weights(images, 2).values())
    assert not (images / "out" / "generator.safetensors").exists()
    assert [r["event"] for r in records(images) if r["kind"] == "event" and r["event"] not in ("checkpoint", "stage")] == [
        "nonfinite", "nonfinite", "stop"]


# ----------------------------------------------------------------------------------------------------
# runner and evaluation


def test_runner_runs_infer_after_training(images: Path, reg: PluginRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    from restorekit.runner import execute

    seen: dict[str, Any] = {}

    def fake_infer(plan: Any, networks: Any = None, shard: bool = True) -> Any:
        seen["shard"] = shard
        seen["networks"] = networks
        return types.SimpleNamespace(exit_code=0)

    module = types.ModuleType("restorekit.infer")
    module.infer = fake_infer  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "restorekit.infer", module)
    monkeypatch.setattr(restorekit, "infer", module, raising=False)
    data = pipeline(images, val=False, train_={"steps": 1}, infer={"inputs": ["val"]})
    plan = make_plan(spec_from_dict(data, source="p.toml", base_dir=images), reg, source="p.toml")
    assert execute(plan) == 0
    assert isinstance(seen["networks"]["generator"], nn.Module)
    assert seen["shard"] is False  # after training, rank 0 runs the whole inference


def test_evaluate_writes_a_table_and_eval_json(images: Path, reg: PluginRegistry, capsys: pytest.CaptureFixture[str]) -> None:
    run_train(images, reg, pipeline(images, val=False, train_={"steps": 1, "save_generator": ["generator"]}))
    data = {
        "run": {"mode": "eval", "device": "cpu", "output_dir": "evalout"},
        "networks": {"generator": {"component": "rrdb", "checkpoint": "out/generator.safetensors"}},
        "data": {"val": {"hq": "val"}},
        "validators": {"psnr": {"component": "psnr"}, "psnr_y": {"component": "psnr", "params": {"channel": "y"}}},
    }
    plan = make_plan(spec_from_dict(data, source="e.toml", base_dir=images), reg, source="e.toml")
    result = evaluate(plan)
    assert result.exit_code == 0 and set(result.metrics) == {"psnr.psnr", "psnr_y.psnr_y"}
    report = json.loads((images / "evalout" / "eval.json").read_text())
    assert report["metrics"] == result.metrics and report["per_image"]["psnr"][0]["name"] == "cat.png"
    assert "psnr_y.psnr_y" in capsys.readouterr().out


def test_step_schedules_and_only_prefixes(images: Path, reg: PluginRegistry) -> None:
    """SRFlow's stages as two steps of one run: the conditional net on L1, then the flow on NLL."""
    steps = {
        "cond": {"networks": ["generator"], "only": ["cond"], "before": 2, "optimizer": {"lr": 1e-2},
                 "injectors": {"rrdb": {"component": "generator", "params": {"mode": "rrdb"}}},
                 "losses": {"l1": {"component": "pixel"}}},
        "flow": {**FLOW_STEPS["flow"], "only": ["flow"], "after": 2},
    }
    data = pipeline(images, network={"component": "tinyflow"}, steps=steps, val=False,
                    train_={"steps": 4, "checkpoint_every": 1, "keep_last": 10})
    assert run_train(images, reg, data).exit_code == 0
    w = {s: weights(images, s) for s in (1, 2, 3, 4)}
    assert all_changed(w[1], w[2], "cond") and none_changed(w[1], w[2], "flow")
    assert all_changed(w[2], w[3], "flow") and none_changed(w[2], w[3], "cond")
    recs = [r for r in records(images) if r["kind"] == "train"]
    assert "loss/cond.l1" in recs[0] and "loss/cond" in recs[0] and "loss/flow" not in recs[0]
    assert "loss/flow.nll" in recs[3] and "nll" in recs[3] and recs[3]["loss"] == pytest.approx(recs[3]["loss/flow"])
    bad = {**steps, "cond": {**steps["cond"], "only": ["RRDB."]}}
    with pytest.raises(UserError, match=r"steps.cond.only: no parameter name starts with 'RRDB.'"):
        run_train(images, reg, pipeline(images, network={"component": "tinyflow"}, steps=bad, val=False))


def test_example_train_rrdb_runs(tmp_path: Path, reg: PluginRegistry) -> None:
    """examples/train_rrdb.toml, shortened: the shipped example stays runnable."""
    from restorekit.spec import load_spec

    example = Path(__file__).resolve().parents[1] / "examples" / "train_rrdb.toml"
    spec = load_spec(example, [
        "train.steps=2", "train.val_every=1", "train.image_every=2", "train.checkpoint_every=1",
        "train.tensorboard=false", f'run.output_dir="{tmp_path / "run"}"', 'run.device="cpu"',
        "data.train.target_size=32", "data.train.batch_size=2",
    ])
    result = train(make_plan(spec, reg, source=str(example)))
    assert result.exit_code == 0 and "psnr.psnr_y" in result.metrics
    assert (tmp_path / "run" / "generator.safetensors").is_file()
    assert (tmp_path / "run" / "images" / "step_0000002.png").is_file()


def test_component_errors_name_the_field(images: Path, reg: PluginRegistry) -> None:
    steps = {"sr": {"networks": ["generator"],
                    "injectors": {"fwd": {"component": "generator", "params": {"network": "gen"}}},
                    "losses": {"l1": {"component": "pixel"}}}}
    with pytest.raises(UserError, match=r"^p.toml: steps.sr.injectors.fwd.params.network: unknown network 'gen' "
                                        r"\(available: generator\)$"):  # at plan time: --dry-run reports it
        run_train(images, reg, pipeline(images, steps=steps, val=False))
    steps = {"sr": {"networks": ["generator"], "injectors": {"fwd": {"component": "generator"}},
                    "losses": {"l1": {"component": "pixel", "params": {"pred": "srr"}}}}}
    with pytest.raises(UserError, match=r"^p.toml: steps.sr.losses.l1: loss 'l1' \(pixel\) reads state key 'srr', which "
                                        r"no injector before it writes \(state keys at this point: hq, lq, sr\)$"):
        run_train(images, reg, pipeline(images, steps=steps, val=False))


# ----------------------------------------------------------------------------------------------------
# the real SRFlow plugin (skipped until it is installed)


def srflow_params(reg: PluginRegistry) -> dict[str, Any]:
    fields = reg.get("generator", "srflow").component.params.model_fields
    wanted = {"scale": 4, "nf": 8, "nb": 1, "gc": 4, "K": 1, "L": 3, "stack_blocks": [0]}
    params = {k: v for k, v in wanted.items() if k in fields}
    for hidden in ("hidden_channels", "hidden"):
        if hidden in fields:
            params[hidden] = 8
            break
    return params


def test_srflow_stage_two_then_three(images: Path, reg: PluginRegistry) -> None:
    import restorekit_srflow.plugin as plugin

    reg.register(plugin, "srflow")
    net = {"component": "srflow", "params": srflow_params(reg), "trainable_only": ["flowUpsamplerNet"],
           "unfreeze": {"after_steps": 1}}
    data = pipeline(images, network=net, steps=FLOW_STEPS, val=False,
                    train_={"steps": 2, "checkpoint_every": 1, "keep_last": 5, "image_every": 2,
                            "image_temperatures": [0.0, 0.8]})
    data["data"]["train"]["target_size"] = 32
    result = run_train(images, reg, data)
    assert result.exit_code == 0
    comp = reg.get("generator", "srflow").component
    torch.manual_seed(1)  # the run's seed: the trainer builds its networks right after seeding
    w0 = {k: v.float() for k, v in comp.build(comp.params.model_validate(net["params"])).state_dict().items()}
    w1, w2 = weights(images, 1), weights(images, 2)
    rrdb = [k for k in w0 if not k.startswith("flowUpsamplerNet") and w0[k].is_floating_point()]
    flow = [k for k in w0 if k.startswith("flowUpsamplerNet") and w0[k].is_floating_point()]
    assert rrdb and flow
    # stage 2 (step 1): the RRDB is frozen; in the flow the optimiser moved every invertible 1x1 convolution and
    # every coupling's output layer (not only the ActNorms, which initialise from the first batch)
    assert all(torch.equal(w0[k], w1[k]) for k in rrdb)
    stepped = [k for k in flow if k.endswith(("invconv.weight", "fAffine.4.weight", "fFeatures.4.weight"))]
    assert len(stepped) >= 3 * 3 and all(not torch.equal(w0[k], w1[k]) for k in stepped)  # L = 3 levels
    # stage 3 (step 2): everything trains; every tensor the forward pass reads moved, the others did not: the unused
    # flowUpsamplerNet.f.0 and the RRDB's image head (the flow reads the RRDB's features, not its image)
    unused = ("flowUpsamplerNet.f.0.", "RRDB.upconv2.", "RRDB.HRconv.", "RRDB.conv_last.")
    assert {k for k in rrdb + flow if not torch.equal(w1[k], w2[k])} == {k for k in rrdb + flow if not k.startswith(unused)}
    nll = [r["nll"] for r in records(images) if r["kind"] == "train"]
    assert len(nll) == 2 and all(math.isfinite(v) for v in nll)
    assert (images / "out" / "images" / "step_0000002.png").is_file()


def test_example_train_srflow_runs(tmp_path: Path, reg: PluginRegistry) -> None:
    """examples/train_srflow.toml, shortened, with the real srflow and validators plugins."""
    import restorekit_srflow.plugin as srflow
    import restorekit_validators.plugin as validators
    from restorekit.spec import load_spec

    r = PluginRegistry()
    r.register(restorekit.builtins, "builtins")
    r.register(srflow, "srflow")
    r.register(validators, "validators")
    example = Path(__file__).resolve().parents[1] / "examples" / "train_srflow.toml"
    spec = load_spec(example, [
        "train.steps=3", "train.val_every=1", "train.image_every=3", "train.tensorboard=false",
        f'run.output_dir="{tmp_path / "run"}"', 'run.device="cpu"', "data.train.target_size=32",
        "data.train.batch_size=2", "networks.generator.unfreeze.min_delta=1000.0",
    ])
    result = train(make_plan(spec, r, source=str(example)))
    assert result.exit_code == 0 and "gaussian.nll" in result.metrics
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines if '"unfreeze"' in x] == [2]  # patience 1: 2nd validation


def test_a_fresh_run_refuses_an_output_dir_with_checkpoints(images: Path, reg: PluginRegistry) -> None:
    assert run_train(images, reg, pipeline(images, val=False, train_={"steps": 1})).exit_code == 0
    with pytest.raises(UserError, match=r"run.output_dir: .*out already holds checkpoints of an earlier run "
                                        r"\(newest step_1\); continue it with --resume"):
        run_train(images, reg, pipeline(images, val=False, train_={"steps": 2}))
    assert run_train(images, reg, pipeline(images, val=False, train_={"steps": 2, "resume": "auto"})).exit_code == 0


def test_stages_and_schedule_freezes_are_one_line_and_one_event_each(images: Path, reg: PluginRegistry,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """The demo's recipe in miniature: cond alone, then the flow alone (cond frozen), then both."""
    enc = {"enc": {"component": "generator", "params": {"mode": "encode"}}}
    nll = {"nll": {"component": "direct", "params": {"key": "nll"}}}
    steps = {
        "cond": {"networks": ["generator"], "only": ["cond"], "before": 2, "optimizer": {"lr": 1e-2},
                 "injectors": enc, "losses": nll},
        "flow": {"networks": ["generator"], "only": ["flow"], "after": 2, "before": 4, "optimizer": {"lr": 1e-2},
                 "injectors": enc, "losses": nll},
        "joint": {"networks": ["generator"], "after": 4, "optimizer": {"lr": 1e-2}, "injectors": enc, "losses": nll},
    }
    data = pipeline(images, network={"component": "tinyflow"}, steps=steps, val=False,
                    train_={"steps": 6, "image_every": 2, "image_temperatures": [0.0, 0.8]})
    assert run_train(images, reg, data).exit_code == 0
    events = [(r["step"], r["event"], r["message"]) for r in records(images)
              if r.get("event") in ("stage", "freeze", "unfreeze")]
    assert events == [
        (0, "stage", "stage: steps.cond (networks.generator trains cond (84))"),
        (2, "stage", "stage: steps.flow (networks.generator trains flow (84))"),
        (2, "freeze", "networks.generator: cond (84) frozen"),
        (2, "unfreeze", "networks.generator: flow (84) trains from now"),
        (4, "stage", "stage: steps.joint (networks.generator trains cond (84), flow (84))"),
        (4, "unfreeze", "networks.generator: cond (84) trains from now"),
    ]
    out = capsys.readouterr().out
    for step, _, message in events:
        assert out.count(f"[step {step}] {message}\n") == 1
    # the grids: labelled columns and step; the one drawn before the flow trained is marked
    g2, g4 = (iio.imread(images / "out" / "images" / f"step_000000{s}.png") for s in (2, 4))
    assert g2.shape == (3 * HEADER_LINE + 2 + 16, 4 * 16 + 3 * 2, 3) and g4.shape == (HEADER + 16, 4 * 16 + 3 * 2, 3)
    red = (g2[..., 0] > 150) & (g2[..., 1] < 80) & (g2[..., 2] < 80)
    assert red[2 * HEADER_LINE:3 * HEADER_LINE].any() and not red[:2 * HEADER_LINE].any()  # "untrained" in red


def test_grid_header_names_the_columns_and_the_step() -> None:
    from restorekit.train.stages import Stages
    from restorekit.train.validation import image_grid

    torch.manual_seed(0)
    net = TinyFlow()
    lq, hq = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 16, 16)
    plain = image_grid(net, lq, hq, [0.0, 0.8], seed=1, step=150)
    marked = image_grid(net, lq, hq, [0.0, 0.8], seed=1, step=150, untrained=["flow"])
    assert plain.shape == (3, HEADER + 16, 4 * 16 + 3 * 2) and marked.shape[-2] == HEADER + HEADER_LINE + 16
    assert torch.equal(plain[:, HEADER:], marked[:, HEADER + HEADER_LINE:])  # the images are the same
    assert (plain[:, 2:HEADER] < 0.5).any() and Stages([], {"g": net}).untrained("g", 10) == []
