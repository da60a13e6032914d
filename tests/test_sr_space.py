"""SR-space evaluation (NTIRE 2021 protocol): lr_psnr, lpips, diversity, nll, the [eval] sweep and
``restore-run evaluate`` on folders.

Expected values are computed here by an independent numpy re-statement of the reference steps (the scoring
script's per-dimension uint8 ``imresize``, skimage-style PSNR, LPIPS written with torch.nn.functional ops). LPIPS
weights are generated into a temporary torch hub cache: the numbers only check the formula, never quality.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import restorekit.cli as cli
from fakes import FakeFlow, make_registry, save, srflow_tiny, write_lpips_weights
from restorekit import SRSamples, ValidationContext, draw_outputs, imresize_uint8
from restorekit.quick import to_toml

# ----------------------------------------------------------------------------------------------------
# an independent restatement of MATLAB imresize (per-tap loops, as the scoring script's port)


def np_cubic(x: np.ndarray) -> np.ndarray:
    a = np.abs(x)
    return ((1.5 * a**3 - 2.5 * a**2 + 1) * (a <= 1)
            + (-0.5 * a**3 + 2.5 * a**2 - 4 * a + 2) * ((a > 1) & (a <= 2)))


def np_resize_dim(img: np.ndarray, axis: int, scale: float) -> np.ndarray:
    n = img.shape[axis]
    m = int(math.ceil(n * scale))
    width = 4.0 / scale
    out = np.zeros(img.shape[:axis] + (m,) + img.shape[axis + 1:])
    for j in range(m):
        u = (j + 1) / scale + 0.5 * (1 - 1 / scale)
        left = math.floor(u - width / 2)
        taps = [left + k for k in range(int(math.ceil(width)) + 2)]
        w = np.array([scale * np_cubic(np.array(scale * (u - t))) for t in taps], dtype=np.float64)
        w = w / w.sum()
        acc = 0.0
        for t, wt in zip(taps, w):
            i = t - 1
            while i < 0 or i >= n:  # symmetric padding
                i = -i - 1 if i < 0 else 2 * n - i - 1
            acc = acc + wt * np.take(img, i, axis=axis).astype(np.float64)
        idx = [slice(None)] * img.ndim
        idx[axis] = j
        out[tuple(idx)] = acc
    return np.around(np.clip(out, 0, 255)).astype(np.uint8)


def np_imresize(img_hwc: np.ndarray, scale: float) -> np.ndarray:
    return np_resize_dim(np_resize_dim(img_hwc, 0, scale), 1, scale)


def np_psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


def rand_u8(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    base = rng.random((h // 4 + 1, w // 4 + 1, 3))
    smooth = np.kron(base, np.ones((4, 4, 1)))[:h, :w]
    return np.clip(smooth * 230 + rng.random((h, w, 3)) * 25, 0, 255).astype(np.uint8)


def as_float(u8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(u8).permute(2, 0, 1)[None].float() / 255.0


def validator(name: str, **params: Any) -> Any:
    comp = make_registry().get("validator", name).component
    return comp.build(comp.params.model_validate(params))


CTX = ValidationContext(device=torch.device("cpu"), scale=4)


# ----------------------------------------------------------------------------------------------------
# lr_psnr


def test_imresize_uint8_rounds_per_dimension_as_the_scoring_script() -> None:
    img = rand_u8(np.random.default_rng(0), 24, 40)
    ours = imresize_uint8(torch.from_numpy(img).permute(2, 0, 1).contiguous(), 0.25).permute(1, 2, 0).numpy()
    assert ours.shape == (6, 10, 3)
    np.testing.assert_array_equal(ours, np_imresize(img, 0.25))


def test_lr_psnr_crops_to_eight_rounds_and_compares_with_the_downscaled_gt() -> None:
    rng = np.random.default_rng(1)
    gt = rand_u8(rng, 37, 45)  # cropped to 32x40
    srs = [np.clip(gt.astype(int) + rng.integers(-12, 13, gt.shape), 0, 255).astype(np.uint8) for _ in range(3)]
    item = SRSamples("x.png", as_float(gt[::4, ::4]), as_float(gt), [as_float(s) for s in srs])
    got = validator("lr_psnr").score(item, CTX)
    ref = np_imresize(gt[:32, :40], 0.25)
    want = [np_psnr(np_imresize(s[:32, :40], 0.25), ref) for s in srs]
    assert got["lr_psnr"] == pytest.approx(np.mean(want), rel=1e-9)
    assert got["lr_psnr_min"] == pytest.approx(min(want), rel=1e-9)
    # the SRFlow test script's variant: against the LR input
    lr = np_imresize(gt[:32, :40], 0.25)
    item = item._replace(lq=as_float(lr))
    lrc = validator("lr_psnr", reference="lr").score(item, CTX)
    assert lrc["lrc_psnr"] == pytest.approx(got["lr_psnr"], rel=1e-9)


# ----------------------------------------------------------------------------------------------------
# lpips

@pytest.fixture
def lpips_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, dict[str, torch.Tensor]]:
    """Generated AlexNet (torchvision's keys) in a temporary torch hub cache, and generated linear layers."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    hub = tmp_path / "torch_home" / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    return write_lpips_weights(hub, tmp_path / "alex.pth")


def hand_lpips(a: torch.Tensor, b: torch.Tensor, w: dict[str, dict[str, torch.Tensor]]) -> torch.Tensor:
    """Spatial LPIPS written out step by step (inputs (1,3,H,W) in [0,1])."""
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)

    def feats(x: torch.Tensor) -> list[torch.Tensor]:
        t = w["trunk"]
        x = ((2 * x - 1) - shift) / scale
        x1 = F.relu(F.conv2d(x, t["features.0.weight"], t["features.0.bias"], stride=4, padding=2))
        x2 = F.relu(F.conv2d(F.max_pool2d(x1, 3, 2), t["features.3.weight"], t["features.3.bias"], padding=2))
        x3 = F.relu(F.conv2d(F.max_pool2d(x2, 3, 2), t["features.6.weight"], t["features.6.bias"], padding=1))
        x4 = F.relu(F.conv2d(x3, t["features.8.weight"], t["features.8.bias"], padding=1))
        x5 = F.relu(F.conv2d(x4, t["features.10.weight"], t["features.10.bias"], padding=1))
        return [x1, x2, x3, x4, x5]

    total = torch.zeros(1, 1, *a.shape[-2:])
    for i, (fa, fb) in enumerate(zip(feats(a), feats(b))):
        na = fa / (torch.sqrt((fa**2).sum(1, keepdim=True)) + 1e-10)
        nb = fb / (torch.sqrt((fb**2).sum(1, keepdim=True)) + 1e-10)
        d = ((na - nb) ** 2 * w["lin"][f"lin{i}.model.1.weight"]).sum(1, keepdim=True)
        up = torch.nn.Upsample(scale_factor=(a.shape[-2] / d.shape[-2], a.shape[-1] / d.shape[-1]), mode="bilinear",
                               align_corners=False)
        total = total + up(d)
    return total[0, 0]


def test_lpips_is_the_mean_of_the_spatial_map(lpips_weights: Any, tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    gt = rand_u8(rng, 68, 76)  # cropped to 64x72
    srs = [rand_u8(rng, 68, 76) for _ in range(2)]
    item = SRSamples("x.png", as_float(gt[::4, ::4]), as_float(gt), [as_float(s) for s in srs])
    lp = validator("lpips", linear=tmp_path / "alex.pth")
    assert lp.net is validator("diversity", linear=tmp_path / "alex.pth").lpips  # the weights read once, shared
    got = lp.score(item, CTX)
    maps = [hand_lpips(as_float(s[:64, :72]), as_float(gt[:64, :72]), lpips_weights) for s in srs]
    assert got["lpips"] == pytest.approx(float(np.mean([float(m.double().mean()) for m in maps])), rel=1e-5)
    div = validator("diversity", linear=tmp_path / "alex.pth").score(item, CTX)
    stack = torch.stack(maps).double()
    g, loc = float(stack.flatten(1).mean(1).min()), float(stack.min(0).values.mean())
    assert div["diversity_lpips"] == pytest.approx(100 * (g - loc) / g, rel=1e-4)


def test_missing_lpips_weights_are_one_line_naming_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from restorekit import UserError

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    with pytest.raises(UserError) as exc:
        validator("lpips")
    text = str(exc.value)
    assert "\n" not in text and "alexnet-owt-7be5be79.pth" in text and str(tmp_path / "empty" / "hub" / "checkpoints") in text


# ----------------------------------------------------------------------------------------------------
# diversity


def test_diversity_score_of_constructed_samples() -> None:
    """GT black; sample A errs 0.2 on the left half and 0.6 on the right, sample B the other way round: each has a
    mean error of 0.4 (G), the per-pixel best is 0.2 everywhere (L): score 100 (0.4 - 0.2) / 0.4 = 50."""
    gt = np.zeros((16, 16, 3), np.uint8)
    a, b = gt.copy(), gt.copy()
    a[:, :8], a[:, 8:], b[:, :8], b[:, 8:] = 51, 153, 153, 51
    item = SRSamples("x.png", as_float(gt[::4, ::4]), as_float(gt), [as_float(a), as_float(b)])
    div = validator("diversity", distance="l1")
    assert div.score(item, CTX) == {"diversity_l1": pytest.approx(50.0, rel=1e-12)}
    same = item._replace(srs=[as_float(a), as_float(a)])
    assert div.score(same, CTX)["diversity_l1"] == 0.0


# ----------------------------------------------------------------------------------------------------
# nll


def test_nll_is_bits_per_dimension_of_the_flow() -> None:
    """nll = -log2 p(x | lr) / (C·H·W) + 8 for x the HR image dequantised with one 8-bit step of seeded uniform
    noise (docs/evaluation.md); without noise, the flow's own NLL per dimension plus 8."""
    from restorekit import Sample, UserError

    model = srflow_tiny()
    hq = as_float(rand_u8(np.random.default_rng(4), 32, 32))
    lq = F.avg_pool2d(hq, 4)
    with torch.no_grad():
        exact = float(model.encode(hq, lq).nll[0]) / 3 + 8
        u = torch.rand(hq.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64).float()
        noisy = float(model.encode(hq + (u - 0.5) / 256, lq).nll[0]) / 3 + 8
    plain = validator("nll", add_noise=False)(model, [Sample("x.png", lq, hq)], CTX)
    assert plain.metrics["nll"] == pytest.approx(exact, rel=1e-6) and math.isfinite(exact)
    two = validator("nll")(model, [Sample("y.png", lq, hq), Sample("x.png", lq, hq)], CTX)
    assert [r["nll"] for r in two.per_image] == pytest.approx([noisy, noisy], rel=1e-6)  # the same noise per image
    assert noisy != pytest.approx(exact, rel=1e-9)
    with pytest.raises(UserError, match="nll: .* is not a flow"):
        validator("nll")(torch.nn.Identity(), [Sample("x.png", lq, hq)], CTX)


def test_nll_of_a_uniform_density_is_eight_bits() -> None:
    """The anchor of the convention: a flow that finds every image on [0, 1] equally likely (density 1, NLL 0)
    costs exactly the 8 bits per sub-pixel of the raw bytes; with bits = 0 the continuous density's 0."""
    from restorekit import EncodeResult, Sample

    class Uniform(FakeFlow):
        def encode(self, hr: torch.Tensor, lr: torch.Tensor, add_noise: bool = False) -> EncodeResult:
            return EncodeResult([hr], torch.zeros(hr.shape[0]), torch.zeros(hr.shape[0]))

    hq = torch.rand(1, 3, 16, 16)
    sample = [Sample("x.png", F.avg_pool2d(hq, 2), hq)]
    assert validator("nll")(Uniform(), sample, CTX).metrics["nll"] == 8.0
    assert validator("nll", bits=0)(Uniform(), sample, CTX).metrics["nll"] == 0.0


# ----------------------------------------------------------------------------------------------------
# eval mode


def write_val(folder: Path, n: int = 2, size: int = 32) -> Path:
    rng = np.random.default_rng(5)
    for i in range(n):
        save(folder / "val" / f"img{i}.png", rand_u8(rng, size, size) / 255.0)
    return folder / "val"


def test_eval_sweep_writes_tables_json_csv_md_and_plots(tmp_path: Path, lpips_weights: Any,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from restorekit import save_generator

    write_val(tmp_path)
    torch.manual_seed(1)
    save_generator(tmp_path / "flow.safetensors", FakeFlow(), "fakeflow", {})
    data = {
        "run": {"mode": "eval", "device": "cpu", "seed": 0, "output_dir": "out"},
        "networks": {"generator": {"component": "fakeflow", "checkpoint": "flow.safetensors"}},
        "data": {"val": {"hq": "val", "scale": 2}},
        "validators": {"psnr": {"component": "psnr"}, "lr": {"component": "lr_psnr"},
                       "div": {"component": "diversity", "params": {"distance": "l1"}}, "nll": {"component": "nll"},
                       "lp": {"component": "lpips", "params": {"linear": str(tmp_path / "alex.pth")}}},
        "eval": {"temperatures": [0.0, 0.8], "samples": 3, "seed": 7},
    }
    (tmp_path / "e.toml").write_text(to_toml(data))
    code = cli.main([str(tmp_path / "e.toml")], registry=make_registry())
    out = capsys.readouterr().out
    assert code == 0 and "temperature 0\n" in out and "temperature 0.8\n" in out
    report = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert [(r["temperature"], r["generator"]) for r in report["results"]] == [(0.0, "generator"), (0.8, "generator")]
    t0, t8 = (r["metrics"] for r in report["results"])
    assert t0["div.diversity_l1"] == 0.0 and t8["div.diversity_l1"] > 1.0  # one image at t=0, three distinct at 0.8
    assert t0["psnr.psnr"] > t8["psnr.psnr"] and t0["nll.nll"] == t8["nll.nll"]
    assert report["metrics"]["div.diversity_l1@t0.8"] == t8["div.diversity_l1"]
    per_image = (tmp_path / "out" / "eval_per_image.csv").read_text().splitlines()
    assert per_image[0].startswith("generator,temperature,image,psnr.psnr") and len(per_image) == 1 + 2 * 2
    assert "| generator | 0.8 |" in (tmp_path / "out" / "eval.md").read_text()
    assert iio.imread(tmp_path / "out" / "eval.png").shape[-1] in (3, 4)
    assert iio.imread(tmp_path / "out" / "perception_distortion.png").shape[-1] in (3, 4)
    assert (tmp_path / "out" / "eval_mean.csv").read_text().count("\n") == 3


def flow_training(validators: dict[str, Any], seed: int = 0, **train: Any) -> dict[str, Any]:
    """A 2-step training pipeline of the fake flow on ``val`` (its NLL), validated at step 2, saving the generator."""
    return {
        "run": {"mode": "train", "device": "cpu", "seed": seed, "output_dir": "out"},
        "networks": {"generator": {"component": "fakeflow"}},
        "data": {"train": {"hq": "val", "target_size": 16, "batch_size": 2}, "val": {"hq": "val", "scale": 2}},
        "steps": {"flow": {"networks": ["generator"],
                           "injectors": {"enc": {"component": "generator", "params": {"mode": "encode"}}},
                           "losses": {"nll": {"component": "direct", "params": {"key": "nll"}}}}},
        "train": {"steps": 2, "val_every": 2, "tensorboard": False, "save_generator": ["generator"], **train},
        "validators": validators,
    }


def test_train_mode_runs_the_eval_sweep_on_the_trained_network(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """[eval] in train mode: after training, its validators (and only they: not in training validation) judge the
    trained network at every temperature; the numbers are those of an eval run on the saved generator."""
    write_val(tmp_path, n=2, size=32)
    validators = {"psnr": {"component": "psnr"}, "lr": {"component": "lr_psnr"},
                  "div": {"component": "diversity", "params": {"distance": "l1"}}}
    sweep = {"validators": ["lr", "div"], "temperatures": [0.0, 0.8], "samples": 3, "seed": 7}
    data = {**flow_training(validators, log_every=1), "eval": sweep}
    (tmp_path / "t.toml").write_text(to_toml(data))
    assert cli.main([str(tmp_path / "t.toml"), "--dry-run"], registry=make_registry()) == 0
    plan_text = capsys.readouterr().out
    assert "validator psnr: psnr on generator (training validation)" in plan_text
    assert "validator lr: lr_psnr on generator (evaluation)" in plan_text
    assert "eval (after training): networks=generator temperatures=[0.0, 0.8] samples=3 seed=7 validators=lr,div" in plan_text
    assert not (tmp_path / "out").exists()

    assert cli.main([str(tmp_path / "t.toml")], registry=make_registry()) == 0
    out = capsys.readouterr().out
    assert "temperature 0\n" in out and "temperature 0.8\n" in out
    validation = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    seen = {k for r in validation for k in r}
    assert "psnr.psnr" in seen and not any(k.startswith(("lr.", "div.")) for k in seen)
    report = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert [r["temperature"] for r in report["results"]] == [0.0, 0.8]
    assert set(report["results"][0]["metrics"]) == {"lr.lr_psnr", "lr.lr_psnr_min", "div.diversity_l1"}
    t0, t8 = (r["metrics"] for r in report["results"])
    assert t0["div.diversity_l1"] == 0.0 and t8["div.diversity_l1"] > 1.0 and t0["lr.lr_psnr"] > t8["lr.lr_psnr"]
    assert iio.imread(tmp_path / "out" / "eval.png").shape[-1] in (3, 4)
    assert (tmp_path / "out" / "eval.md").is_file() and (tmp_path / "out" / "eval_mean.csv").is_file()

    # the same sweep as an eval run of the saved (trained) generator gives the same numbers
    data = {"run": {"mode": "eval", "device": "cpu", "seed": 0, "output_dir": "again"},
            "networks": {"generator": {"component": "fakeflow", "checkpoint": "out/generator.safetensors"}},
            "data": {"val": {"hq": "val", "scale": 2}}, "validators": validators, "eval": sweep}
    (tmp_path / "e.toml").write_text(to_toml(data))
    assert cli.main([str(tmp_path / "e.toml")], registry=make_registry()) == 0
    again = json.loads((tmp_path / "again" / "eval.json").read_text())["metrics"]
    assert again.keys() == report["metrics"].keys()
    assert all(again[k] == pytest.approx(v, rel=1e-9) for k, v in report["metrics"].items())


def test_training_validation_and_the_eval_sweep_judge_alike(tmp_path: Path) -> None:
    """One path feeds validators: training validation at val_temperature with val_samples draws gives the numbers an
    eval sweep of the saved network gives at that temperature (scorers and a plain validator alike)."""
    write_val(tmp_path, n=2, size=32)
    validators = {"psnr": {"component": "psnr"}, "lr": {"component": "lr_psnr"}, "nll": {"component": "nll"},
                  "div": {"component": "diversity", "params": {"distance": "l1"}}}
    train = flow_training(validators, seed=3, val_temperature=0.8, val_samples=3)
    (tmp_path / "t.toml").write_text(to_toml(train))
    assert cli.main([str(tmp_path / "t.toml")], registry=make_registry()) == 0
    val = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    last = {k: v for k, v in [r for r in val if r.get("kind") == "val"][-1].items() if k not in ("step", "kind")}
    sweep = {"run": {"mode": "eval", "device": "cpu", "seed": 3, "output_dir": "again"},
             "networks": {"generator": {"component": "fakeflow", "checkpoint": "out/generator.safetensors"}},
             "data": {"val": {"hq": "val", "scale": 2}}, "validators": validators,
             "eval": {"temperatures": [0.0, 0.8], "samples": 3}}
    (tmp_path / "e.toml").write_text(to_toml(sweep))
    assert cli.main([str(tmp_path / "e.toml")], registry=make_registry()) == 0
    results = json.loads((tmp_path / "again" / "eval.json").read_text())["results"]
    at = {r["temperature"]: r["metrics"] for r in results}[0.8]
    assert set(at) == set(last) and "div.diversity_l1" in at
    assert all(at[k] == pytest.approx(v, rel=1e-9) for k, v in last.items()), (at, last)


def test_eval_validators_are_checked_in_the_spec(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_val(tmp_path, n=1)
    base = {"run": {"mode": "eval", "device": "cpu", "output_dir": "out"},
            "networks": {"generator": {"component": "fakeflow"}},
            "data": {"val": {"hq": "val", "scale": 2}}, "validators": {"lr": {"component": "lr_psnr"}}}
    cases = [
        ({"validators": ["lr", "lpips"]}, "e.toml: eval.validators: unknown validator 'lpips' (available: lr)"),
        ({"validators": ["lr", "lr"]}, "duplicate validators ['lr']"),
        ({"validators": []}, "eval.validators"),
    ]
    for ev, expected in cases:
        (tmp_path / "e.toml").write_text(to_toml({**base, "eval": ev}))
        assert cli.main([str(tmp_path / "e.toml"), "--dry-run"], registry=make_registry()) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and expected in err, err
    train = {**base, "run": {"mode": "train", "device": "cpu", "output_dir": "out"},
             "data": {"train": {"hq": "val"}},
             "steps": {"s": {"networks": ["generator"], "injectors": {"f": {"component": "generator"}},
                             "losses": {"l1": {"component": "pixel"}}}},
             "train": {"steps": 1}, "eval": {"temperatures": [0.0]}}
    (tmp_path / "t.toml").write_text(to_toml(train))
    assert cli.main([str(tmp_path / "t.toml"), "--dry-run"], registry=make_registry()) == 2
    assert "needs [data.val] and at least one [validators.<name>]" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_eval_draws_the_samples_restore_run_draws(tmp_path: Path) -> None:
    """restore-run's sample mode with seed 7 writes the images draw_outputs gives for seed 7 (8-bit rounding)."""
    from restorekit import save_generator

    torch.manual_seed(1)
    net = FakeFlow().eval()
    save_generator(tmp_path / "flow.safetensors", net, "fakeflow", {})
    lr = rand_u8(np.random.default_rng(6), 12, 16)
    save(tmp_path / "in" / "a.png", lr / 255.0)
    data = {"run": {"mode": "infer", "device": "cpu", "seed": 7, "output_dir": "runs"},
            "networks": {"generator": {"component": "fakeflow", "checkpoint": "flow.safetensors"}},
            "infer": {"mode": "sample", "inputs": "in", "temperatures": [0.7], "samples": 2, "output_dir": "sr"}}
    (tmp_path / "i.toml").write_text(to_toml(data))
    assert cli.main([str(tmp_path / "i.toml")], registry=make_registry()) == 0
    with torch.no_grad():
        ours = draw_outputs(net, as_float(lr), temperature=0.7, samples=2, seed=7)
    for s, sr in enumerate(ours):
        written = iio.imread(tmp_path / "sr" / f"a_t0.7_s{s}_seed{7 + s}.png").astype(int)
        mine = (sr[0].permute(1, 2, 0).numpy() * 255).round().astype(int)
        assert np.abs(written - mine).max() <= 1
    assert float((ours[0] - ours[1]).abs().max()) > 0.05


def test_a_sweep_draws_what_draw_outputs_draws_with_the_features_computed_once() -> None:
    from restorekit.scoring import draw_sweep

    torch.manual_seed(1)
    net = FakeFlow().eval()
    lr = as_float(rand_u8(np.random.default_rng(6), 12, 16))
    with torch.no_grad():
        alone = [draw_outputs(net, lr, temperature=t, samples=3, seed=7) for t in (0.0, 0.5, 0.9)]
        net.cond_calls = 0
        swept = list(draw_sweep(net, lr, temperatures=[0.0, 0.5, 0.9], samples=3, seed=7))
    assert net.cond_calls == 1 and [len(o) for o in swept] == [1, 3, 3]
    for a, b in zip(alone, swept):
        assert all(torch.equal(x, y) for x, y in zip(a, b))


# ----------------------------------------------------------------------------------------------------
# restore-run evaluate (folders)


def evaluate(args: list[Any], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(["evaluate", *[str(a) for a in args]], registry=make_registry())
    out, err = capsys.readouterr()
    return code, out, err


def ntire_folders(tmp_path: Path, samples: int = 3) -> tuple[Path, Path, list[np.ndarray], list[list[np.ndarray]]]:
    rng = np.random.default_rng(8)
    gts, srs = [], []
    for i, name in enumerate(["0802.png", "0801.png"]):  # sorted order: 0801 is index 0
        gt = rand_u8(rng, 36, 44)
        save(tmp_path / "gt" / name, gt / 255.0)
        gts.append(gt)
    gts = gts[::-1]
    for i in range(2):
        srs.append([])
        for s in range(samples):
            sr = np.clip(gts[i].astype(int) + rng.integers(-20, 21, gts[i].shape), 0, 255).astype(np.uint8)
            save(tmp_path / "sr" / f"{i:06d}_sample{s:05d}.png", sr / 255.0)
            srs[-1].append(sr)
    return tmp_path / "gt", tmp_path / "sr", gts, srs


def test_evaluate_folders_with_ntire_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no_weights"))
    gt, sr, gts, srs = ntire_folders(tmp_path)
    code, out, err = evaluate(["--gt", gt, "--sr", sr, "--scale", 4, "--samples", 3, "--json", tmp_path / "r.json"],
                              capsys)
    assert code == 0, err
    assert err.count("\n") == 1 and "LPIPS skipped" in err and "alexnet-owt-7be5be79.pth" in err
    report = json.loads((tmp_path / "r.json").read_text())
    assert set(report["mean"]) == {"lr_psnr", "lr_psnr_min", "diversity_l1", "psnr", "ssim"}
    assert [r["name"] for r in report["per_image"]] == ["0801.png", "0802.png"]
    want = []
    for g, ss in zip(gts, srs):
        ref = np_imresize(g[:32, :40], 0.25)
        want.append(np.mean([np_psnr(np_imresize(s[:32, :40], 0.25), ref) for s in ss]))
    assert report["mean"]["lr_psnr"] == pytest.approx(np.mean(want), rel=1e-9)
    assert 0 < report["mean"]["diversity_l1"] < 100


def test_evaluate_folders_with_lpips_weights(tmp_path: Path, lpips_weights: Any,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    gt, sr, _, _ = ntire_folders(tmp_path, samples=2)
    code, out, err = evaluate(["--gt", gt, "--sr", sr, "--scale", 4, "--samples", 2, "--json", tmp_path / "r.json",
                               "--lpips-linear", tmp_path / "alex.pth"], capsys)
    assert code == 0 and err == ""
    mean = json.loads((tmp_path / "r.json").read_text())["mean"]
    assert {"lpips", "diversity_lpips", "diversity_l1", "lr_psnr"} <= set(mean)


def test_evaluate_folders_reads_restorekit_names_and_says_what_is_wrong(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    gt, sr, gts, srs = ntire_folders(tmp_path)
    own = tmp_path / "own"
    for g, ss, stem in zip(gts, srs, ["0801", "0802"]):
        for s, img in enumerate(ss):
            save(own / f"{stem}_t0.9_s{s}_seed{s}.png", img / 255.0)
    code, _, err = evaluate(["--gt", gt, "--sr", own, "--scale", 4, "--samples", 3, "--json", tmp_path / "a.json"],
                            capsys)
    assert code == 0, err
    code, _, _ = evaluate(["--gt", gt, "--sr", sr, "--scale", 4, "--samples", 3, "--json", tmp_path / "b.json"], capsys)
    a, b = (json.loads((tmp_path / f"{x}.json").read_text())["mean"] for x in "ab")
    assert a == b
    # two temperatures in one folder: pick one
    save(own / "0801_t0_s0_seed0.png", gts[0] / 255.0)
    save(own / "0802_t0_s0_seed0.png", gts[1] / 255.0)
    code, _, err = evaluate(["--gt", gt, "--sr", own, "--scale", 4, "--samples", 3], capsys)
    assert code == 2 and "outputs of '0801' at temperatures 0, 0.9: pick one with --temperature" in err
    code, _, err = evaluate(["--gt", gt, "--sr", own, "--scale", 4, "--samples", 3, "--temperature", 0,
                             "--json", tmp_path / "c.json"], capsys)
    c = json.loads((tmp_path / "c.json").read_text())
    assert code == 0 and c["per_image"][0]["samples"] == 1 and math.isinf(c["mean"]["lr_psnr"])
    # a missing sample
    (sr / "000001_sample00002.png").unlink()
    code, _, err = evaluate(["--gt", gt, "--sr", sr, "--scale", 4, "--samples", 3], capsys)
    assert code == 2 and err.strip().count("\n") == 0 and "000001_sample00002.png is missing" in err
    # a size mismatch
    save(sr / "000001_sample00002.png", np.zeros((20, 20, 3)))
    code, _, err = evaluate(["--gt", gt, "--sr", sr, "--scale", 4, "--samples", 3], capsys)
    assert code == 2 and "000001_sample00002.png: size 20x20 does not match the ground truth 0802.png" in err
    # a wrong scale
    code, _, err = evaluate(["--gt", gt, "--sr", sr, "--scale", 3, "--samples", 3], capsys)
    assert code == 2 and "0801.png: cropped to 32x40" in err and "--scale 3" in err
    # folders listed by the one walker: a missing or empty one is one line naming it
    (tmp_path / "empty").mkdir()
    for flags, says in ((["--gt", gt, "--sr", tmp_path / "nowhere"], "--sr: " + str(tmp_path / "nowhere")),
                        (["--gt", tmp_path / "empty", "--sr", sr], "--gt: " + str(tmp_path / "empty"))):
        code, _, err = evaluate([*flags, "--scale", 4, "--samples", 3], capsys)
        assert code == 2 and err.strip().count("\n") == 0 and says in err, err
    # restorekit names below the folder: a GT in a sub-folder is matched by its relative name
    nested_gt, nested = tmp_path / "nested_gt", tmp_path / "nested"
    for src, dst in ((gt / "0801.png", nested_gt / "0801.png"), (gt / "0802.png", nested_gt / "sub" / "0802.png")):
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dst)
    for f in own.glob("*_t0.9_*.png"):
        dst = nested / ("sub" if f.name.startswith("0802") else "") / f.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, dst)
    (nested / ".0802_t0.9_s0_seed0.png").write_bytes(b"")  # hidden: not listed, not matched
    code, _, err = evaluate(["--gt", nested_gt, "--sr", nested, "--scale", 4, "--samples", 3,
                             "--json", tmp_path / "d.json"], capsys)
    assert code == 0, err
    d = json.loads((tmp_path / "d.json").read_text())
    assert [r["name"] for r in d["per_image"]] == ["0801.png", "sub/0802.png"] and d["mean"] == a
    # flags checked before any scoring, each one line: a bad device, a --json that is a folder, a named LPIPS file
    for extra, says in ((["--device", "bogus"], "--device: 'bogus' is not a device"),
                        (["--json", tmp_path], "is a folder; give a file name"),
                        (["--lpips-trunk", tmp_path / "nope.pth"], "nope.pth")):
        code, _, err = evaluate(["--gt", gt, "--sr", own, "--scale", 4, "--samples", 3, "--temperature", 0, *extra],
                                capsys)
        assert code == 2 and err.strip().count("\n") == 0 and says in err, err


def test_draws_equal_the_api_decode_with_the_same_seed() -> None:
    model = srflow_tiny()
    lr = torch.rand(1, 3, 8, 12)
    with torch.no_grad():
        ours = draw_outputs(model, lr, temperature=0.8, samples=2, seed=3)
        api = model.decode(lr, temperature=0.8, generator=torch.Generator().manual_seed(4)).clamp(0, 1)
    assert torch.equal(ours[1], api) and not torch.equal(ours[0], ours[1])


def test_a_validator_called_in_training_sees_ctx_samples() -> None:
    """Training validation calls validator(model, samples, ctx): diversity draws ctx.samples outputs."""
    from restorekit import Sample

    torch.manual_seed(1)
    model = FakeFlow().eval()
    hq = as_float(rand_u8(np.random.default_rng(9), 16, 16))
    samples = [Sample("x.png", F.avg_pool2d(hq, 2), hq)]
    div = validator("diversity", distance="l1")
    one = div(model, samples, ValidationContext(device=torch.device("cpu"), scale=2, temperature=0.8))
    three = div(model, samples, ValidationContext(device=torch.device("cpu"), scale=2, temperature=0.8, samples=3))
    assert one.metrics["diversity_l1"] == 0.0 and three.metrics["diversity_l1"] > 1.0


def test_several_generators_give_one_comparison_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from restorekit import save_generator

    write_val(tmp_path, n=1)
    torch.manual_seed(1)
    save_generator(tmp_path / "a.safetensors", FakeFlow(), "fakeflow", {})
    save_generator(tmp_path / "b.safetensors", FakeFlow(hidden=6), "fakeflow", {"hidden": 6})
    data = {
        "run": {"mode": "eval", "device": "cpu", "output_dir": "out"},
        "networks": {"generator": {"component": "fakeflow", "checkpoint": "a.safetensors"},
                     "plain": {"component": "bicubic"}},
        "data": {"val": {"hq": "val", "scale": 2}},
        "validators": {"lr": {"component": "lr_psnr"}, "nll": {"component": "nll"}},
        "eval": {"temperatures": [0.5], "samples": 2, "generators": ["generator", "b.safetensors", "plain"]},
    }
    (tmp_path / "e.toml").write_text(to_toml(data))
    assert cli.main([str(tmp_path / "e.toml")], registry=make_registry()) == 0
    out, err = capsys.readouterr()
    assert out.count("temperature 0.5") == 1 and "generator " in out and "b.safetensors" in out and "plain" in out
    assert err.strip().splitlines() == ["restore-run: warning: evaluation: nll skipped on plain: nll: the validated network "
                                        "(Bicubic) is not a flow (no encode/decode)"]
    report = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert len(report["results"]) == 3 and {"generator/lr.lr_psnr", "b.safetensors/nll.nll", "plain/lr.lr_psnr",
                                            "plain/lr.lr_psnr_min"} <= set(report["metrics"])
    assert "plain/nll.nll" not in report["metrics"]
    md = (tmp_path / "out" / "eval.md").read_text()
    assert md.count("| 0.5 |") == 3
