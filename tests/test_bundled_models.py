"""The bundled pretrained models, the bundled images and the demo: quality against bicubic on held-out images,
the opt-in skips that the bundled models use, and the example specs that build them."""

from __future__ import annotations

import json
import functools
import importlib.util
import math
import re
from pathlib import Path
from types import ModuleType

import pytest
import torch
import torch.nn.functional as F

import restorekit
from restorekit.checkpoint import restorekit_metadata
from restorekit.cli import main as cli_main
from restorekit.data.io import read_image

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
MODELS = ROOT / "core" / "models"
NAMES = ("bundled-rrdb-x4", "bundled-srflow-x4")


def _evaluation() -> ModuleType:
    spec = importlib.util.spec_from_file_location("evaluate_bundled", EXAMPLES / "evaluate_bundled.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def evaluation() -> ModuleType:
    return _evaluation()


@functools.cache
def _bundled(name: str) -> torch.nn.Module:
    return restorekit.load(name)


# ----------------------------------------------------------------------------------------------------
# the bundled models


def test_bundled_files_are_small_and_load_by_name_offline() -> None:
    for name in NAMES:
        model = _bundled(name)
        path = MODELS / f"{name}.safetensors"
        assert path.stat().st_size <= 10 * 1024 * 1024
        component, params = restorekit_metadata(path)
        assert component == ("rrdb" if "rrdb" in name else "srflow")
        assert model.scale == 4 and not model.training
        # the opt-in skips round-trip through the file's metadata
        assert params.get("bicubic_skip") is True or params.get("skip") == "rrdb"
        assert model.arch_params.get("bicubic_skip") is True or model.arch_params.get("skip") == "rrdb"


@pytest.mark.parametrize("name", NAMES)
def test_bundled_model_beats_bicubic_on_held_out_natural_images(name: str, evaluation: ModuleType) -> None:
    """At least 0.5 dB PSNR-Y over bicubic on average (SRFlow at temperature 0), 4x bicubic-downsampled LR."""
    rows = evaluation.measure(_bundled(name), evaluation.eval_pairs(evaluation.GROUPS["natural"]), with_ssim=False)
    assert len(rows) >= 3
    gain = evaluation.mean(rows, "model", "psnr_y") - evaluation.mean(rows, "bicubic", "psnr_y")
    assert gain >= 0.5, f"{name}: {gain:+.2f} dB PSNR-Y over bicubic"


@pytest.mark.parametrize("name", NAMES)
def test_bundled_model_keeps_smooth_saturated_colours(name: str, evaluation: ModuleType) -> None:
    """Gradients, a colour wheel, flat patches: PSNR-RGB at most 0.5 dB below bicubic on every image, or above
    50 dB (an RMS error under 0.8 grey levels) where bicubic is nearly exact: an NLL-trained flow's temperature-0
    image keeps a fraction of a grey level of texture there (docs/models.md)."""
    rows = evaluation.measure(_bundled(name), evaluation.eval_pairs(evaluation.GROUPS["smooth"]), with_ssim=False)
    assert len(rows) >= 3
    for r in rows:
        loss = r["bicubic"]["psnr_rgb"] - r["model"]["psnr_rgb"]
        ok = loss <= 0.5 or r["model"]["psnr_rgb"] >= 50.0
        assert ok, f"{name} on {r['image']}: {loss:.2f} dB below bicubic (PSNR-RGB {r['model']['psnr_rgb']:.2f})"


def test_bundled_srflow_samples_differ_and_stay_close_to_the_mean() -> None:
    model = _bundled("bundled-srflow-x4")
    lr = F.avg_pool2d(read_image(EXAMPLES / "images" / "val" / "chelsea.png").rgb[None, :, :64, :64], 4)
    with torch.no_grad():
        mean = model(lr)
        a = model(lr, temperature=0.8, generator=torch.Generator().manual_seed(0))
        b = model(lr, temperature=0.8, generator=torch.Generator().manual_seed(1))
    assert torch.isfinite(a).all() and (a - b).abs().mean() > 1e-3
    assert (a - mean).abs().mean() < 0.1


# ----------------------------------------------------------------------------------------------------
# the bundled SRFlow as a flow: SR-space targets on the held-out natural images (docs/models.md, "SR space")

RECOMMENDED_T = 0.7  # the temperature docs/models.md recommends for bundled-srflow-x4


@pytest.fixture(scope="module")
def natural(evaluation: ModuleType) -> list:
    return evaluation.eval_pairs(evaluation.GROUPS["natural"])


def test_bundled_srflow_mean_image_is_lr_consistent(evaluation: ModuleType, natural: list) -> None:
    """Temperature 0: LR-PSNR (NTIRE'21: both downscaled 4x, uint8, RGB) at least 45 dB on every image."""
    for r in evaluation.sr_space(_bundled("bundled-srflow-x4"), natural, 0.0):
        assert r["lr_psnr_min"] >= 45.0, r


@pytest.mark.slow  # 3 full-size draws per held-out image
def test_bundled_srflow_samples_are_lr_consistent_and_diverse(evaluation: ModuleType, natural: list) -> None:
    """At the recommended temperature: every one of 3 draws per image has LR-PSNR >= 45 dB, and the draws differ
    where it matters (NTIRE'21 diversity with a per-pixel L1 distance clearly above 0)."""
    for r in evaluation.sr_space(_bundled("bundled-srflow-x4"), natural, RECOMMENDED_T, samples=3):
        assert r["nonfinite"] == 0 and r["lr_psnr_min"] >= 45.0, r
        assert r["diversity_l1"] >= 10.0, r


@pytest.mark.slow  # 100 draws per held-out image
def test_bundled_srflow_never_gives_nan_up_to_temperature_0_9(evaluation: ModuleType, natural: list) -> None:
    """100 raw draws (no NaN ladder) per held-out image at T = 0.9, on a 16 x 16 LR crop of each (the full
    images: docs/models.md)."""
    model = _bundled("bundled-srflow-x4")
    for name, _, lr in natural:
        assert evaluation.nonfinite_draws(model, lr[:, :16, :16], 0.9, draws=100, batch=50) == 0, name


def test_bundled_srflow_held_out_likelihood(evaluation: ModuleType, natural: list) -> None:
    """Held-out NLL in bits per dimension (the nll validator's 8-bit convention, docs/evaluation.md): lower than the
    3.130 of the SRFlow bundled before issue #16 (docs/models.md)."""
    nll = evaluation.nll_bits_per_dim(_bundled("bundled-srflow-x4"), natural)
    assert sum(nll) / len(nll) < 3.130


# ----------------------------------------------------------------------------------------------------
# the latent tools on the bundled SRFlow (examples/srflow_latents.toml, images/reference.png)


def _crops(natural: list, size: int = 128) -> list:
    """Top-left ``size`` px HR crops of the held-out images and their LR (small, so the tests stay fast)."""
    from restorekit.data.resize import downsample

    return [(n, hr[:, :size, :size], downsample(hr[None, :, :size, :size], 4, "bicubic")[0]) for n, hr, _ in natural]


def test_latent_transfer_carries_the_reference_texture_without_fallback(evaluation: ModuleType, natural: list) -> None:
    """The reference's latents at scale 1, decoded with each held-out image's LR: finite (no NaN ladder needed), with
    more high frequencies than the temperature-0 image, and those high frequencies follow the reference's."""
    reference = read_image(EXAMPLES / "images" / "reference.png").rgb
    for r in evaluation.latent_transfer(_bundled("bundled-srflow-x4"), _crops(natural), reference):
        assert r["finite"] and r["hf_gain"] >= 1.2 and r["hf_corr"] >= 0.25, r


@pytest.mark.slow  # 16 decodes per held-out image
def test_interpolation_changes_smoothly_frame_to_frame(evaluation: ModuleType, natural: list) -> None:
    """examples/srflow_latents.toml's interpolation (linear, from the reference's latents to each image's own, 8
    frames): every frame finite with no NaN ladder, and no jump (the largest frame-to-frame change at most 5x the
    smallest). From zero latents every frame is finite too."""
    reference = read_image(EXAMPLES / "images" / "reference.png").rgb
    model = _bundled("bundled-srflow-x4")
    assert restorekit.load_spec(EXAMPLES / "srflow_latents.toml").infer.interpolation == "linear"
    for name, hr, lr in _crops(natural, 96):
        steps = evaluation.interpolation_steps(model, hr, lr, reference, mode="linear")
        assert all(math.isfinite(d) for d in steps) and max(steps) <= 5.0 * min(steps), (name, steps)
        assert all(math.isfinite(d) for d in evaluation.interpolation_steps(model, hr, lr, None, mode="linear")), name


@pytest.mark.slow  # two restore-run runs of the bundled SRFlow
def test_latent_example_runs_as_shipped_on_the_bundled_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """examples/srflow_latents.toml: the bundled SRFlow and images/reference.png; transfer and interpolation write
    every output without a NaN fallback (on a crop of a held-out image, to stay fast)."""
    import json

    import imageio.v3 as iio

    inputs = tmp_path / "in"
    inputs.mkdir()
    iio.imwrite(inputs / "chelsea.png", iio.imread(EXAMPLES / "images" / "val" / "chelsea.png")[:96, :128])
    for mode in ("latent_transfer", "interpolate"):
        out = tmp_path / mode
        code = cli_main([str(EXAMPLES / "srflow_latents.toml"), "--set", f'infer.mode="{mode}"',
                         "--set", f"infer.inputs=['{inputs}']", "--set", f"run.output_dir='{out}'"])
        assert code == 0, capsys.readouterr()
        summary = json.loads(next(out.rglob("summary.json")).read_text())
        assert summary["counts"]["fallbacks"] == 0 and summary["counts"]["written"] >= 1, summary["counts"]


# ----------------------------------------------------------------------------------------------------
# the skips (opt-in arch params, default off)


def test_rrdb_bicubic_skip_starts_as_bicubic_and_default_is_unchanged() -> None:
    from restorekit_rrdb import RRDBNet, RRDBParams

    torch.manual_seed(0)
    lr = torch.rand(1, 3, 8, 10)
    net = RRDBNet(nf=8, nb=1, gc=4, scale=4, bicubic_skip=True)
    bicubic = F.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False)
    assert torch.equal(net(lr), bicubic)
    plain = RRDBNet(nf=8, nb=1, gc=4, scale=4)
    assert "bicubic_skip" not in plain.arch_params and not torch.allclose(plain(lr), bicubic, atol=1e-2)
    assert RRDBParams().bicubic_skip is False
    with pytest.raises(ValueError, match="in_nc == out_nc"):
        RRDBNet(in_nc=1, out_nc=3, nf=8, nb=1, gc=4, bicubic_skip=True)


@pytest.mark.parametrize("skip", ["bicubic", "rrdb"])
def test_srflow_skip_is_an_exact_shift(skip: str, tmp_path: Path) -> None:
    """encode subtracts the skip image, decode adds it back: round trip exact, NLL of HR equals the plain flow's NLL
    of the residual (zero log-determinant), and params round-trip through restorekit's file."""
    from restorekit_srflow import SRFlowNet, SRFlowParams

    kw = dict(scale=4, nf=8, nb=2, gc=4, K=2, L=3, hidden_channels=8, stack_blocks=[0, 1])
    torch.manual_seed(0)
    net = SRFlowNet(**kw, skip=skip).eval()
    plain = SRFlowNet(**kw).eval()
    plain.load_state_dict(net.state_dict())
    lr, hr = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        enc = net.encode(hr, lr)
        assert torch.allclose(net.decode(lr, enc.latents), hr, atol=1e-5)
        shift = F.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False) if skip == "bicubic" else net.RRDB(lr)
        ref = plain.encode(hr - shift, lr)
        assert torch.allclose(enc.nll, ref.nll, atol=1e-5) and torch.allclose(enc.logdet, ref.logdet, atol=1e-4)
        assert torch.allclose(net(lr), plain(lr) + shift, atol=1e-5)
    params = SRFlowParams(**kw, skip=skip)
    restorekit.save_generator(tmp_path / "g.safetensors", net, "srflow", params.model_dump(mode="json"))
    again = restorekit.load(tmp_path / "g.safetensors")
    assert again.skip == skip and again.arch_params["skip"] == skip
    assert SRFlowParams().skip == "none" and plain.arch_params["skip"] == "none"


# ----------------------------------------------------------------------------------------------------
# the images and the specs


def test_evaluation_images_are_held_out_and_every_image_has_a_source() -> None:
    images = EXAMPLES / "images"
    sources = (images / "SOURCES.md").read_text()
    train = {p.name for p in (images / "train").glob("*.png")}
    held_out = {p.name for sub in ("val", "smooth") for p in (images / sub).glob("*.png")}
    assert len(train) >= 20 and len(held_out) >= 7
    stems = {re.sub(r"_\d+$", "", Path(n).stem) for n in train}
    assert not {Path(n).stem for n in held_out} & stems
    for name in train | held_out:
        assert name in sources or re.sub(r"_\d+\.png$", "_00.png", name) in sources, name


BUNDLED_SRFLOW = Path(restorekit.__file__).parent / "models" / "bundled-srflow-x4.safetensors"


@pytest.mark.parametrize("spec, extra", [
    ("bundled_rrdb_x4.toml", []), ("bundled_srflow_x4.toml", []), ("demo.toml", []),
    # the continuation starts from the first SRFlow run's output (here: the bundled file that run led to)
    ("bundled_srflow_x4_longer.toml", ["--set", f"networks.generator.checkpoint='{BUNDLED_SRFLOW.as_posix()}'"]),
])
def test_bundled_training_specs_and_demo_validate(spec: str, extra: list[str],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    code = cli_main([str(EXAMPLES / spec), "--dry-run", *extra])
    out = capsys.readouterr().out
    assert code == 0
    assert "mode: train" in out and "generator:" in out


def test_demo_trains_on_train_images_and_shows_the_bundled_model_on_held_out_ones() -> None:
    spec = restorekit.load_spec(EXAMPLES / "demo.toml")
    assert spec.infer is not None and spec.data.train is not None and spec.data.val is not None
    assert spec.networks[spec.infer.network].model == "bundled-srflow-x4"
    assert spec.infer.input_is_hr and 0.0 in spec.infer.temperatures and spec.infer.samples >= 2
    train_dirs = {Path(p).resolve() for p in spec.data.train.hq}
    for p in [*spec.infer.inputs, *spec.data.val.hq]:
        assert not any(Path(p).resolve().is_relative_to(t) for t in train_dirs)
    # the recipe: RRDB alone, then the flow with the RRDB frozen, then everything
    rrdb, flow, joint = (spec.steps[n] for n in ("rrdb", "flow", "joint"))
    assert rrdb.only == ["RRDB."] and flow.only == ["flowUpsamplerNet."] and joint.only is None
    assert rrdb.before == flow.after and flow.before == joint.after


@pytest.mark.slow  # six training steps and the sweep, twice (.ci/run also runs the real demo twice)
def test_the_demo_runs_twice_in_a_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """README's first command, twice: the second run resumes the finished run (train.resume = "auto" in
    demo.toml: nothing trained again) and writes the inference report again. The demo, shrunk: 6 steps, one image."""
    val = tmp_path / "val"
    val.mkdir()
    import imageio.v3 as iio

    iio.imwrite(val / "coffee.png", iio.imread(EXAMPLES / "images" / "val" / "coffee.png")[:64, :64, :3])
    sets = {"run.output_dir": str(tmp_path / "demo"), "train.steps": 6, "steps.rrdb.before": 2, "steps.flow.after": 2,
            "steps.flow.before": 4, "steps.joint.after": 4, "train.val_every": 3, "train.image_every": 3,
            "train.checkpoint_every": 3, "train.log_every": 3, "data.train.batch_size": 2, "data.val.hq": [str(val)],
            "infer.inputs": [str(val)], "infer.temperatures": [0.0], "infer.samples": 1, "train.tensorboard": False,
            "eval.temperatures": [0.0, 0.8], "eval.samples": 2, "run.device": "cpu"}
    argv = [str(EXAMPLES / "demo.toml")] + [a for k, v in sets.items() for a in ("--set", f"{k}={json.dumps(v)}")]
    assert cli_main(argv) == 0, capsys.readouterr().err
    first = capsys.readouterr().out
    report = tmp_path / "demo" / "infer" / "metrics.md"
    assert "training done: 6 steps" in first and report.is_file()
    assert "temperature 0.8\n" in first and "lr.lr_psnr" in first  # the sweep of the bundled model, after inference
    sweep = json.loads((tmp_path / "demo" / "eval.json").read_text())
    assert sweep["generators"] == ["bundled"] and [r["temperature"] for r in sweep["results"]] == [0.0, 0.8]
    assert (tmp_path / "demo" / "eval.png").is_file()
    report.write_text("stale")
    code = cli_main(argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "resumed from" in out and "training done: 6 steps" in out and "1 written" in out
    assert "PSNR" in report.read_text()  # the report written again
    assert "temperature 0.8\n" in out  # and the sweep run again
    events = [json.loads(line) for line in (tmp_path / "demo" / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e.get("event") == "resume"] == [6]


@pytest.mark.slow  # a float64 copy of the bundled SRFlow
def test_the_bundled_flow_inverts_exactly_in_float64_and_to_rounding_on_most_float32_pixels() -> None:
    """docs/srflow.md's round-trip numbers, on a held-out crop: float64 exact, float32 within 1e-6 on camera.png."""
    from restorekit.data.io import read_image
    from restorekit.data.resize import downsample

    model = restorekit.load("bundled-srflow-x4")
    hr = read_image(EXAMPLES / "images" / "val" / "camera.png").rgb[None, :, :96, :96].float()
    lr = downsample(hr, 4, "bicubic")
    with torch.no_grad():
        err32 = (model.decode(lr, model.encode(hr, lr).latents) - hr).abs().max().item()
        m64 = model.double()
        err64 = (m64.decode(lr.double(), m64.encode(hr.double(), lr.double()).latents) - hr.double()).abs().max().item()
    assert err32 < 1e-6 and err64 < 1e-8


def test_demo_ends_with_an_sr_space_sweep_of_the_bundled_model() -> None:
    """The demo's [eval]: the bundled SRFlow at several temperatures (0 among them), several samples, a fixed seed,
    judged by PSNR-Y, LR-PSNR, L1 diversity and NLL, none of which runs in the tiny network's training validation."""
    spec = restorekit.load_spec(EXAMPLES / "demo.toml")
    assert spec.run.mode == "train" and spec.eval is not None and spec.eval.validators is not None
    ev = spec.eval
    assert 0.0 in ev.temperatures and len(ev.temperatures) >= 3 and ev.samples >= 2 and ev.seed is not None
    judged = {(spec.validators[n].component, spec.validators[n].params.get("channel"),
               spec.validators[n].params.get("distance")) for n in ev.validators}
    assert judged == {("psnr", "y", None), ("lr_psnr", None, None), ("diversity", None, "l1"), ("nll", None, None)}
    assert {spec.networks[spec.validators[n].network].model for n in ev.validators} == {"bundled-srflow-x4"}
    assert not set(ev.validators) & set(spec.train_validators) and spec.train_validators
