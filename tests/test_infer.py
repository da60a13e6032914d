"""restore-run infer, end to end through ``restorekit.cli.main``: every mode, outputs, skipping, failures, the NaN
guard, reports, and the bad-input corpus.

Tiny fake generators (tests/fakes.py, registered directly, no entry points) stand in where a property is easier
to pin with a known model; the real ``rrdb`` and ``srflow`` plugins are used as they are.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from fakes import (
    TINY_SRFLOW,
    Bicubic,
    FakePlugin,
    make_registry,
    pipeline,
    png_header,
    read,
    run,
    sample_image,
    save,
    srflow_tiny,
)

from restorekit.latents import sample_latents

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """A folder of small LR inputs: two RGB images of one size (a batch), one of another size in a subfolder."""
    d = tmp_path / "in"
    save(d / "astronaut.png", sample_image("astronaut", 24, 32))
    save(d / "coffee.png", sample_image("coffee", 24, 32))
    save(d / "sub" / "chelsea.png", sample_image("chelsea", 20, 26))
    return d


# ----------------------------------------------------------------------------------------------------
# sr


def test_sr_folder_rrdb_writes_every_image_with_a_summary(tmp_path: Path, images: Path, capsys) -> None:
    p = pipeline(tmp_path, {"inputs": ["in"], "batch_size": 2}, component="rrdb",
                 params={"nf": 8, "nb": 1, "gc": 4, "scale": 2})
    code, out, err = run([p], capsys)
    assert code == 0, err
    out_dir = tmp_path / "runs" / "infer"
    shapes = {f.relative_to(out_dir).as_posix(): read(f).shape for f in out_dir.rglob("*.png")}
    assert shapes == {"astronaut.png": (48, 64, 3), "coffee.png": (48, 64, 3), "sub/chelsea.png": (40, 52, 3)}
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["counts"] == {"written": 3, "skipped": 0, "failed": 0, "fallbacks": 0} and summary["exit_code"] == 0
    assert "infer: 3 written, 0 skipped, 0 failed" in out
    # a second run skips everything; overwrite=true writes again
    code, out, _ = run([p], capsys)
    assert code == 0 and "0 written, 3 skipped" in out
    code, out, _ = run([p, "--set", "infer.overwrite=true"], capsys)
    assert code == 0 and "3 written, 0 skipped" in out


def test_an_output_with_no_record_is_kept_and_refused_unless_overwrite(tmp_path: Path, fakes: FakePlugin,
                                                                      capsys) -> None:
    save(tmp_path / "in" / "a.png", sample_image("astronaut", 16, 16))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "a.png").write_bytes(b"precious")
    p = pipeline(tmp_path, {"inputs": ["in"], "output_dir": "out"}, component="bicubic")
    code, out, err = run([p], capsys)
    assert code == 2 and (out_dir / "a.png").read_bytes() == b"precious" and "written" not in out
    assert err.count("\n") == 1 and "no samples.json records" in err and "infer.overwrite = true" in err, err
    code, _, _ = run([p, "--set", "infer.overwrite=true"], capsys)
    assert code == 0 and read(out_dir / "a.png").shape == (32, 32, 3)


def test_bit_depth_gray_and_alpha_are_kept(tmp_path: Path, fakes: FakePlugin, capsys) -> None:
    d = tmp_path / "in"
    rgb = sample_image("coffee", 12, 16)
    d.mkdir()
    iio.imwrite(d / "deep.tiff", np.round(rgb * 65535).astype(np.uint16))  # 16-bit RGB
    save(d / "gray16.png", rgb.mean(-1), bits=16)
    save(d / "gray8.png", rgb.mean(-1))
    alpha = np.zeros((12, 16, 1))
    alpha[:, 8:] = 1.0
    save(d / "rgba.png", np.concatenate([rgb, alpha], -1))
    p = pipeline(tmp_path, {"inputs": ["in"], "output_dir": "out"}, component="bicubic")
    code, _, err = run([p], capsys)
    assert code == 0, err
    out = tmp_path / "out"
    assert png_header(out / "deep.png") == (16, 2)  # 16-bit RGB PNG (restorekit's own encoder)
    g16 = read(out / "gray16.png")
    assert g16.dtype == np.uint16 and g16.shape == (24, 32)
    assert png_header(out / "gray8.png") == (8, 0)
    rgba = read(out / "rgba.png")
    assert rgba.shape == (24, 32, 4) and rgba[:, :12, 3].max() == 0 and rgba[:, 20:, 3].min() == 255
    # the 16-bit output holds 16-bit precision, not 8-bit steps
    assert np.unique(g16 % 257).size > 1


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # imageio tries its legacy plugins on unknown bytes
def test_corrupt_image_is_reported_and_the_others_written(tmp_path: Path, fakes: FakePlugin, capsys) -> None:
    d = tmp_path / "in"
    save(d / "good.png", sample_image("chelsea", 16, 16))
    (d / "broken.png").write_bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8).tobytes())
    p = pipeline(tmp_path, {"inputs": ["in"], "output_dir": "out"}, component="bicubic")
    code, out, _ = run([p], capsys)
    assert code == 1
    assert (tmp_path / "out" / "good.png").is_file() and not (tmp_path / "out" / "broken.png").exists()
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["counts"]["failed"] == 1 and summary["failed"][0]["path"].endswith("broken.png")
    assert "unreadable image" in summary["failed"][0]["reason"]
    assert "failed: " in out and "broken.png" in out


def test_globs_and_files_and_format(tmp_path: Path, fakes: FakePlugin, capsys) -> None:
    d = tmp_path / "in"
    save(d / "a.png", sample_image("astronaut", 16, 16))
    save(d / "b.png", sample_image("coffee", 16, 16))
    save(tmp_path / "c.png", sample_image("chelsea", 16, 16))
    save(d / "deep" / "e.png", sample_image("rocket", 16, 16))
    save(d / ".thumbs" / "e.png", sample_image("rocket", 16, 16))  # hidden: skipped, as in training data
    p = pipeline(tmp_path, {"inputs": ["in/a*.png", "c.png", "in/**/e.png"], "output_dir": "out", "format": "jpg"},
                 component="bicubic")
    code, _, err = run([p], capsys)
    assert code == 0, err
    # a glob's images keep their path below its fixed part, as a folder's do; listed in the order given
    written = json.loads((tmp_path / "out" / "summary.json").read_text())["written"]
    assert written == ["a.jpg", "c.jpg", "deep/e.jpg"]


def test_flow_sr_is_the_temperature_zero_decode(tmp_path: Path, fakes: FakePlugin, capsys) -> None:
    save(tmp_path / "in" / "a.png", sample_image("astronaut", 16, 20))
    p = pipeline(tmp_path, {"inputs": ["in"], "output_dir": "out"})
    code, _, err = run([p], capsys)
    assert code == 0, err
    model = fakes.built[0]
    lr = torch.from_numpy(read(tmp_path / "in" / "a.png")).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        expected = model(lr).clamp(0, 1)[0].permute(1, 2, 0).numpy()
    assert np.abs(read(tmp_path / "out" / "a.png") / 255.0 - expected).max() <= 0.5 / 255 + 1e-6


# ----------------------------------------------------------------------------------------------------
# sample / feed_through


def test_sample_names_seeds_and_reproducibility(tmp_path: Path, images: Path, fakes: FakePlugin, capsys) -> None:
    spec = {"inputs": ["in"], "mode": "sample", "temperatures": [0.0, 0.8], "samples": 2, "batch_size": 2,
            "output_dir": "a"}
    p = pipeline(tmp_path, spec, seed=7)
    code, _, err = run([p], capsys)
    assert code == 0, err
    a = tmp_path / "a"
    names = sorted(f.relative_to(a).as_posix() for f in a.rglob("*.png"))
    assert len(names) == 3 * (1 + 2)  # temperature 0 is deterministic: one image, not one per sample
    assert "astronaut_t0.8_s1_seed8.png" in names and "sub/chelsea_t0_s0_seed7.png" in names
    meta = json.loads((a / "samples.json").read_text())["outputs"]
    rec = meta["astronaut_t0.8_s1_seed8.png"]
    assert rec["seed"] == 8 and rec["temperature"] == 0.8 and rec["sample"] == 1 and rec["fallback"] is None
    # samples differ from each other and from the mean; T=0 samples are all the mean image
    t08 = [read(a / f"astronaut_t0.8_s{s}_seed{7 + s}.png").astype(float) for s in (0, 1)]
    assert not (a / "astronaut_t0_s1_seed8.png").exists()
    assert np.abs(t08[0] - t08[1]).mean() > 1
    # same seed, same bytes: again in another folder, batch size 1 (batching does not change results)
    p2 = pipeline(tmp_path, {**spec, "output_dir": "b", "batch_size": 1}, seed=7, name="p2.toml")
    assert run([p2], capsys)[0] == 0
    for n in names:
        assert (tmp_path / "b" / n).read_bytes() == (a / n).read_bytes(), n
    # the seed in the name is the whole story: noise = N(0, 1) drawn from torch.Generator().manual_seed(seed)
    model = fakes.built[0]
    lr = torch.from_numpy(read(images / "coffee.png")).permute(2, 0, 1)[None].float() / 255
    latents = sample_latents(model.latent_shapes(lr.shape), 0.8, torch.Generator().manual_seed(8))
    with torch.no_grad():
        expected = model.decode(lr, latents=latents).clamp(0, 1)[0].permute(1, 2, 0).numpy()
    assert np.abs(read(a / "coffee_t0.8_s1_seed8.png") / 255.0 - expected).max() <= 0.5 / 255 + 1e-6


def test_samples_reuse_the_conditional_features(tmp_path: Path, fakes: FakePlugin, capsys) -> None:
    save(tmp_path / "in" / "a.png", sample_image("astronaut", 16, 16))
    p = pipeline(tmp_path, {"inputs": ["in"], "mode": "sample", "temperatures": [0.5, 0.9], "samples": 3,
                            "output_dir": "out"})
    assert run([p], capsys)[0] == 0
    model = fakes.built[0]
    # six latent sets, decoded one by one or in batches (restorekit.perf.SampleBatcher), one feature computation
    assert 2 <= model.decode_calls <= 6 and model.cond_calls == 1


def test_sample_needs_a_flow(tmp_path: Path, images: Path, capsys) -> None:
    p = pipeline(tmp_path, {"inputs": ["in"], "mode": "sample"}, component="rrdb",
                 params={"nf": 8, "nb": 1, "gc": 4, "scale": 2})
    code, out, err = run([p], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "infer.mode = 'sample' needs a flow network" in err and "networks.generator" in err and "'rrdb'" in err
    assert not (tmp_path / "runs").exists()


def test_feed_through_with_hr_input_writes_comparison_and_metrics(tmp_path: Path, fakes: FakePlugin, capsys) -> None:
    save(tmp_path / "hr" / "cat.png", sample_image("chelsea", 66, 50))  # cropped to multiples of 4: 64 x 48
    p = pipeline(tmp_path, {"inputs": ["hr"], "mode": "feed_through", "temperatures": [0.0, 0.7], "samples": 2,
                            "input_is_hr": True, "downsampler": "area", "output_dir": "out"})
    code, _, err = run([p], capsys)
    assert code == 0, err
    out = tmp_path / "out"
    assert read(out / "cat_t0.7_s1_seed1.png").shape == (64, 48, 3)
    grid = read(out / "comparison.png")
    # bicubic | t=0 s0 | t=0.7 s0 | HR with 4-pixel gaps
    assert grid.shape == (64, 4 * 48 + 3 * 4, 3)
    metrics = json.loads((out / "metrics.json").read_text())
    labels = [r["output"] for r in metrics["rows"]]
    assert labels == ["bicubic", "t=0 s0", "t=0.7 s0", "t=0.7 s1"]
    assert metrics["border"] == 2 and all(r["psnr_rgb"] > 10 and 0 < r["ssim_y"] <= 1 for r in metrics["rows"])
    md = (out / "metrics.md").read_text()
    assert "| cat.png | bicubic |" in md and "PSNR Y" in md
    # the metrics are scikit-image's on the written files, border cropped
    from skimage.metrics import peak_signal_noise_ratio

    hr = read(tmp_path / "hr" / "cat.png")[:64, :48] / 255.0
    sr = read(out / "cat_t0.7_s0_seed0.png") / 255.0
    expected = peak_signal_noise_ratio(hr[2:-2, 2:-2], sr[2:-2, 2:-2], data_range=1.0)
    assert metrics["rows"][2]["psnr_rgb"] == pytest.approx(expected, abs=1e-6)


def test_sr_with_hr_input_compares_against_bicubic(tmp_path: Path, fakes: FakePlugin, capsys) -> None:
    save(tmp_path / "hr" / "a.png", sample_image("astronaut", 32, 32))
    p = pipeline(tmp_path, {"inputs": ["hr"], "input_is_hr": True, "output_dir": "out"}, component="bicubic")
    code, _, err = run([p], capsys)
    assert code == 0, err
    rows = json.loads((tmp_path / "out" / "metrics.json").read_text())["rows"]
    # the "network" is bicubic itself: the same numbers as the baseline
    assert [r["output"] for r in rows] == ["bicubic", "SR"]
    assert rows[0]["psnr_rgb"] == pytest.approx(rows[1]["psnr_rgb"], abs=1e-9)
    # a second run skips the outputs but still writes the reports from the files
    (tmp_path / "out" / "metrics.json").unlink()
    assert run([p], capsys)[0] == 0 and (tmp_path / "out" / "metrics.json").is_file()


def test_temperature_map_scales_the_noise_per_pixel(tmp_path: Path, fakes: FakePlugin, capsys) -> None:
    save(tmp_path / "in" / "a.png", sample_image("coffee", 16, 16))
    tmap = np.zeros((8, 8))
    tmap[:, 4:] = 1.0
    save(tmp_path / "tmap.png", tmap)
    p = pipeline(tmp_path, {"inputs": ["in"], "mode": "sample", "temperatures": [0.0, 0.9],
                            "temperature_map": "tmap.png", "output_dir": "out"})
    code, _, err = run([p], capsys)
    assert code == 0, err
    mean = read(tmp_path / "out" / "a_t0_s0_seed0.png").astype(float)
    hot = read(tmp_path / "out" / "a_t0.9_s0_seed0.png").astype(float)
    diff = np.abs(hot - mean)
    # cold left part equals the mean image (the map is area-resized to HR, then per level)
    assert diff[:, :12].max() == 0 and diff[:, 20:].mean() > 5
    assert json.loads((tmp_path / "out" / "samples.json").read_text())["outputs"]["a_t0.9_s0_seed0.png"]["temperature_map"]


# ----------------------------------------------------------------------------------------------------
# the NaN guard


def test_nan_decode_falls_back_down_the_ladder(tmp_path: Path, fakes: FakePlugin, capsys) -> None:
    save(tmp_path / "in" / "a.png", sample_image("astronaut", 16, 16))
    p = pipeline(tmp_path, {"inputs": ["in"], "mode": "sample", "temperatures": [0.3, 0.8], "output_dir": "out",
                            "nan_ladder": [0.5, 0.0]}, params={"nan_above": 0.6})
    code, out, err = run([p], capsys)
    assert code == 0, err
    o = tmp_path / "out"
    hot = read(o / "a_t0.8_s0_seed0.png").astype(float)
    assert np.isfinite(hot).all() and hot.std() > 10  # a real image, not black
    meta = json.loads((o / "samples.json").read_text())["outputs"]
    assert meta["a_t0.8_s0_seed0.png"]["used_temperature"] == 0.5
    assert meta["a_t0.8_s0_seed0.png"]["fallback"]["reason"].startswith("non-finite decode")
    assert meta["a_t0.3_s0_seed0.png"]["fallback"] is None
    summary = json.loads((o / "summary.json").read_text())
    assert summary["fallbacks"] == [{"input": str(tmp_path / "in" / "a.png"), "output": "a_t0.8_s0_seed0.png",
                                     "requested": 0.8, "used": 0.5, "reason": "non-finite decode"}]
    assert "fallback: a_t0.8_s0_seed0.png: temperature 0.8 -> 0.5" in out
    # the fallback is the same noise at the lower temperature
    p2 = pipeline(tmp_path, {"inputs": ["in"], "mode": "sample", "temperatures": [0.5], "output_dir": "ref"},
                  name="p2.toml")
    assert run([p2], capsys)[0] == 0
    assert np.array_equal(read(tmp_path / "ref" / "a_t0.5_s0_seed0.png"), read(o / "a_t0.8_s0_seed0.png"))


def test_nan_in_one_tile_redoes_the_image_and_names_the_tile(tmp_path: Path, fakes: FakePlugin, capsys) -> None:
    save(tmp_path / "in" / "a.png", sample_image("astronaut", 24, 24))
    p = pipeline(tmp_path, {"inputs": ["in"], "mode": "sample", "temperatures": [0.9], "output_dir": "out",
                            "tile": {"size": 12, "overlap": 4}}, params={"nan_above": 0.6})
    code, _, err = run([p], capsys)
    assert code == 0, err
    fb = json.loads((tmp_path / "out" / "summary.json").read_text())["fallbacks"][0]
    assert fb["used"] == 0.5 and "tile at LR (y=0, x=0)" in fb["reason"]


def test_nan_even_at_zero_fails_the_image_without_writing_it(tmp_path: Path, fakes: FakePlugin, capsys) -> None:
    save(tmp_path / "in" / "a.png", sample_image("astronaut", 16, 16))
    save(tmp_path / "in" / "b.png", sample_image("coffee", 16, 16))
    p = pipeline(tmp_path, {"inputs": ["in"], "output_dir": "out"}, params={"nan_above": -1.0})
    code, out, _ = run([p], capsys)
    assert code == 1 and not list((tmp_path / "out").glob("*.png"))
    failed = json.loads((tmp_path / "out" / "summary.json").read_text())["failed"]
    assert len(failed) == 2 and "still not finite at temperatures 0" in failed[0]["reason"]


# ----------------------------------------------------------------------------------------------------
# restore / latent transfer / interpolate


def test_restore_writes_one_image_per_temperature(tmp_path: Path, fakes: FakePlugin, capsys) -> None:
    noisy = np.clip(sample_image("coffee", 30, 34) + np.random.default_rng(0).normal(0, 0.05, (30, 34, 3)), 0, 1)
    save(tmp_path / "hr" / "noisy.png", noisy)
    p = pipeline(tmp_path, {"inputs": ["hr"], "mode": "restore", "temperatures": [0.0, 0.5], "output_dir": "out"})
    code, _, err = run([p], capsys)
    assert code == 0, err
    o = tmp_path / "out"
    r0, r5 = read(o / "noisy_restored_t0.png"), read(o / "noisy_restored_t0.5.png")
    assert r0.shape == r5.shape == (28, 32, 3)  # cropped to multiples of scale x size_multiple = 4
    assert np.abs(r0.astype(float) - r5).mean() > 0.5
    assert not (o / "comparison.png").exists()  # input_is_hr not set: no reports


def test_restore_with_input_is_hr_reports_metrics(tmp_path: Path, fakes: FakePlugin, capsys) -> None:
    save(tmp_path / "hr" / "a.png", sample_image("astronaut", 32, 32))
    p = pipeline(tmp_path, {"inputs": ["hr"], "mode": "restore", "temperatures": [1.0], "input_is_hr": True,
                            "output_dir": "out"})
    assert run([p], capsys)[0] == 0
    data = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert [r["output"] for r in data["rows"]] == ["bicubic", "restored t=1"] and data["reference"] == "input"
    md = (tmp_path / "out" / "metrics.md").read_text()
    assert "against the input images (restore mode: each degraded input is the reference" in md
    assert "HR images" not in md and "bicubic, the outputs (first sample per temperature), the input." in md


def test_latent_transfer_crops_the_reference(tmp_path: Path, fakes: FakePlugin, capsys) -> None:
    save(tmp_path / "ref.png", sample_image("chelsea", 48, 48))
    save(tmp_path / "in" / "small.png", sample_image("astronaut", 10, 12))  # LR target
    p = pipeline(tmp_path, {"inputs": ["in"], "mode": "latent_transfer", "reference": "ref.png", "output_dir": "out"})
    code, _, err = run([p], capsys)
    assert code == 0, err
    out = read(tmp_path / "out" / "small_transfer_ref.png")
    assert out.shape == (20, 24, 3)
    # the reference's latents are decoded with the target's LR: not the target's mean image
    p0 = pipeline(tmp_path, {"inputs": ["in"], "output_dir": "mean"}, name="p0.toml")
    assert run([p0], capsys)[0] == 0
    assert np.abs(read(tmp_path / "mean" / "small.png").astype(float) - out).mean() > 1


def test_latent_transfer_smaller_reference_is_one_line_error(tmp_path: Path, fakes: FakePlugin, capsys) -> None:
    save(tmp_path / "ref.png", sample_image("chelsea", 16, 16))
    save(tmp_path / "in" / "big.png", sample_image("astronaut", 20, 20))
    p = pipeline(tmp_path, {"inputs": ["in"], "mode": "latent_transfer", "reference": "ref.png", "output_dir": "out"})
    code, out, err = run([p], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert "infer.reference" in err and "is smaller than the target" in err and "big.png" in err
    assert not (tmp_path / "out").exists()


def test_interpolate_frames_and_gif(tmp_path: Path, fakes: FakePlugin, capsys) -> None:
    save(tmp_path / "hr" / "a.png", sample_image("astronaut", 32, 24))
    p = pipeline(tmp_path, {"inputs": ["hr"], "mode": "interpolate", "frames": 5, "interpolation": "linear",
                            "output_dir": "out"})
    code, _, err = run([p], capsys)
    assert code == 0, err
    o = tmp_path / "out"
    frames = [read(o / f"a_f{i:02d}.png") for i in range(5)]
    assert all(f.shape == (32, 24, 3) for f in frames)
    gif = iio.imread(o / "a.gif", index=None)
    assert gif.shape[0] == 5
    # the last frame decodes the image's own latents: the flow reproduces the HR input
    hr = read(tmp_path / "hr" / "a.png").astype(float)
    assert np.abs(frames[-1].astype(float) - hr).max() <= 1
    assert np.abs(frames[0].astype(float) - hr).mean() > np.abs(frames[3].astype(float) - hr).mean()


def test_interpolate_between_two_images(tmp_path: Path, fakes: FakePlugin, capsys) -> None:
    save(tmp_path / "ref.png", sample_image("chelsea", 32, 32))
    save(tmp_path / "hr" / "a.png", sample_image("astronaut", 32, 32))
    p = pipeline(tmp_path, {"inputs": ["hr"], "mode": "interpolate", "frames": 3, "reference": "ref.png",
                            "gif": False, "output_dir": "out"})
    assert run([p], capsys)[0] == 0
    o = tmp_path / "out"
    assert sorted(f.name for f in o.iterdir() if f.suffix in (".png", ".gif")) == ["a_f00.png", "a_f01.png", "a_f02.png"]
    # frame 0 holds the reference's latents (same size: no crop) decoded with a's LR
    assert np.abs(read(o / "a_f00.png").astype(float) - read(tmp_path / "hr" / "a.png")).mean() > 1


# ----------------------------------------------------------------------------------------------------
# sharding


def test_torchrun_ranks_shard_the_inputs(tmp_path: Path, images: Path, fakes: FakePlugin, capsys,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    p = pipeline(tmp_path, {"inputs": ["in"], "output_dir": "out"}, component="bicubic")
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        assert run([p], capsys)[0] == 0
    o = tmp_path / "out"
    r0 = json.loads((o / "summary.rank0.json").read_text())["written"]
    r1 = json.loads((o / "summary.rank1.json").read_text())["written"]
    assert r0 == ["astronaut.png", "sub/chelsea.png"] and r1 == ["coffee.png"]


# ----------------------------------------------------------------------------------------------------
# bad inputs: exit 2, one line on stderr, no traceback, nothing written


BAD = [
    ({"inputs": ["missing"]}, "fakeflow", "infer.inputs: ", "no such file or folder"),
    ({"inputs": ["empty"]}, "fakeflow", "infer.inputs: ", "no images found in this folder"),
    ({"inputs": ["in/*.jpg"]}, "fakeflow", "infer.inputs: ", "no image matches this pattern"),
    ({"inputs": ["in"], "output_dir": "in"}, "bicubic", "infer.output_dir: output", "would overwrite the input"),
    ({"inputs": ["in"], "mode": "latent_transfer"}, "fakeflow", "infer.reference", "needs a reference"),
    ({"inputs": ["in"], "mode": "latent_transfer", "reference": "nope.png"}, "fakeflow", "infer.reference", "not found"),
    ({"inputs": ["in"], "mode": "restore"}, "bicubic", "infer.mode = 'restore'", "'bicubic', which is not one"),
    ({"inputs": ["in"], "temperatures": [-0.5]}, "fakeflow", "infer.temperatures", ">= 0"),
    ({"inputs": ["in"], "temperatures": [0.5, 0.5]}, "fakeflow", "infer.temperatures", "duplicate"),
    ({"inputs": ["in"], "tile": {"size": 8, "overlap": 8}}, "fakeflow", "infer.tile", "larger than overlap"),
    ({"inputs": ["in"], "tile": {"size": 9, "overlap": 8}}, "fakeflow", "infer.tile", "size multiple of 'fakeflow' (2)"),
    ({"inputs": ["in"], "temperature_map": "nope.png"}, "fakeflow", "infer.temperature_map", "not found"),
    ({"inputs": ["in"], "mode": "smaple"}, "fakeflow", "infer.mode", "sample"),
    ({"inputs": ["in"], "samples": 0}, "fakeflow", "infer.samples", "greater than or equal to 1"),
    ({"inputs": ["in"], "tile": {"size": 32, "overlpa": 4}}, "fakeflow", "infer.tile.overlpa", "did you mean 'overlap'"),
]


@pytest.mark.parametrize("infer_table,component,where,what", BAD, ids=[b[3] for b in BAD])
def test_bad_inputs_exit_2_with_one_line(tmp_path: Path, fakes: FakePlugin, capsys, infer_table: dict[str, Any],
                                         component: str, where: str, what: str) -> None:
    save(tmp_path / "in" / "a.png", sample_image("astronaut", 16, 16))
    (tmp_path / "empty").mkdir()
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    p = pipeline(tmp_path, infer_table, component=component)
    code, out, err = run([p], capsys)
    assert code == 2, err
    assert err.startswith("restore-run: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert where in err and what in err, err
    after = sorted(q.relative_to(tmp_path) for q in tmp_path.rglob("*"))
    assert after == sorted(before + [Path("pipeline.toml")]) and out == ""


def test_two_inputs_mapping_to_one_output_is_an_error(tmp_path: Path, fakes: FakePlugin, capsys) -> None:
    save(tmp_path / "x" / "a.png", sample_image("astronaut", 16, 16))
    save(tmp_path / "y" / "a.png", sample_image("coffee", 16, 16))
    p = pipeline(tmp_path, {"inputs": ["x/a.png", "y/a.png"], "output_dir": "out"}, component="bicubic")
    code, _, err = run([p], capsys)
    assert code == 2 and "both map to the output" in err and not (tmp_path / "out").exists()


def test_output_folder_inside_the_input_folder_is_not_read_back(tmp_path: Path, fakes: FakePlugin, capsys) -> None:
    save(tmp_path / "in" / "a.png", sample_image("astronaut", 16, 16))
    p = pipeline(tmp_path, {"inputs": ["in"], "output_dir": "in/sr", "mode": "sample"})
    assert run([p], capsys)[0] == 0
    code, out, _ = run([p], capsys)
    assert code == 0 and "0 written, 1 skipped" in out


# ----------------------------------------------------------------------------------------------------
# after training: the runner hands over trained networks


def test_infer_with_given_networks(tmp_path: Path, fakes: FakePlugin, capsys) -> None:
    from restorekit.infer import infer
    from restorekit.plan import make_plan
    from restorekit.spec import load_spec

    save(tmp_path / "in" / "a.png", sample_image("astronaut", 16, 16))
    p = pipeline(tmp_path, {"inputs": ["in"], "output_dir": "out"})
    plan = make_plan(load_spec(p), make_registry(fakes), source=str(p))
    trained = Bicubic(scale=2)
    summary = infer(plan, networks={"generator": trained})
    assert summary.exit_code == 0 and [x.name for x in summary.written] == ["a.png"] and not fakes.built
    assert read(tmp_path / "out" / "a.png").shape == (32, 32, 3)
    capsys.readouterr()


# ----------------------------------------------------------------------------------------------------
# a saved checkpoint


def test_checkpoint_of_a_tiny_rrdb_is_used(tmp_path: Path, images: Path, capsys) -> None:
    from restorekit import save_generator
    from restorekit_rrdb import RRDBParams, build_rrdb

    params = RRDBParams(nf=8, nb=1, gc=4, scale=2)
    net = build_rrdb(params)
    ckpt = tmp_path / "tiny.safetensors"
    save_generator(ckpt, net, "rrdb", params.model_dump())
    p = pipeline(tmp_path, {"inputs": ["in/astronaut.png"], "output_dir": "out"}, component="rrdb", checkpoint=ckpt)
    code, _, err = run([p], capsys)
    assert code == 0, err
    lr = torch.from_numpy(read(images / "astronaut.png")).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        expected = net.eval()(lr).clamp(0, 1)[0].permute(1, 2, 0).numpy()
    assert np.abs(read(tmp_path / "out" / "astronaut.png") / 255.0 - expected).max() <= 0.5 / 255 + 1e-5


# ----------------------------------------------------------------------------------------------------
# the real SRFlow plugin (tiny: nf 8, nb 1, K 1, L 3, hidden 8, stack_blocks [0], x4; random weights)

@pytest.fixture
def srflow_ckpt(tmp_path: Path) -> Path:
    """The jittered tiny SRFlow saved as a restorekit generator file."""
    from restorekit import save_generator

    path = tmp_path / "srflow.safetensors"
    save_generator(path, srflow_tiny(), "srflow", {**TINY_SRFLOW, "scale": 4})
    return path

SRFLOW_MODES = [
    ("sr", {}, ["a.png"]),
    ("sample", {"temperatures": [0.0, 0.9], "samples": 2},
     ["a_t0.9_s0_seed0.png", "a_t0.9_s1_seed1.png", "a_t0_s0_seed0.png"]),
    ("feed_through", {"temperatures": [0.7], "input_is_hr": True}, ["a_t0.7_s0_seed0.png", "comparison.png"]),
    ("restore", {"temperatures": [0.0, 0.8]}, ["a_restored_t0.8.png", "a_restored_t0.png"]),
    ("latent_transfer", {"reference": "ref.png"}, ["a_transfer_ref.png"]),
    ("interpolate", {"frames": 3}, ["a.gif", "a_f00.png", "a_f01.png", "a_f02.png"]),
]


@pytest.mark.parametrize("mode,extra,names", SRFLOW_MODES, ids=[m[0] for m in SRFLOW_MODES])
def test_srflow_modes_write_real_images(tmp_path: Path, fakes: FakePlugin, capsys, srflow_ckpt: Path, mode: str,
                                        extra: dict[str, Any], names: list[str]) -> None:
    hr_input = mode in ("feed_through", "restore", "interpolate")
    h, w = (48, 64) if hr_input else (12, 16)
    save(tmp_path / "in" / "a.png", sample_image("astronaut", h, w))
    save(tmp_path / "ref.png", sample_image("chelsea", 64, 64))
    p = pipeline(tmp_path, {"inputs": ["in"], "mode": mode, "output_dir": "out", **extra}, component="srflow",
                 checkpoint=srflow_ckpt)
    code, _, err = run([p], capsys)
    assert code == 0, err
    out = tmp_path / "out"
    assert sorted(f.name for f in out.iterdir() if f.suffix in (".png", ".gif")) == names
    for name in names:
        if name.startswith("a_") or name == "a.png":
            img = read(out / name)
            assert img.shape == (48, 64, 3) and img.std() > 1  # a real picture, not a constant
    if mode == "interpolate":  # the last frame decodes the image's own latents: the input comes back
        assert np.abs(read(out / "a_f02.png").astype(float) - read(tmp_path / "in" / "a.png")).max() <= 1
        assert iio.imread(out / "a.gif", index=None).shape[0] == 3


def test_srflow_sr_equals_the_models_own_forward(tmp_path: Path, fakes: FakePlugin, capsys,
                                                 srflow_ckpt: Path) -> None:
    """sr of a flow at T=0 through infer (own padding, given zero latents) equals ``model(lr)``, odd sizes too."""
    model = srflow_tiny()
    ckpt = srflow_ckpt
    save(tmp_path / "in" / "odd.png", sample_image("coffee", 13, 17))
    p = pipeline(tmp_path, {"inputs": ["in"], "output_dir": "out"}, component="srflow", checkpoint=ckpt)
    code, _, err = run([p], capsys)
    assert code == 0, err
    lr = torch.from_numpy(read(tmp_path / "in" / "odd.png")).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        expected = model(lr).clamp(0, 1)[0].permute(1, 2, 0).numpy()
    assert np.abs(read(tmp_path / "out" / "odd.png") / 255.0 - expected).max() <= 0.5 / 255 + 1e-4


def test_srflow_sample_is_the_models_own_decode_with_the_same_seed(tmp_path: Path, fakes: FakePlugin, capsys,
                                                                   srflow_ckpt: Path) -> None:
    """One sampler: ``<stem>_t0.8_s0_seed7.png`` is ``decode(lr, temperature=0.8, generator=seed 7)`` of the model
    ``restorekit.load`` gives (official order: top z first, then the splits deepest first)."""
    from restorekit import load

    save(tmp_path / "in" / "a.png", sample_image("astronaut", 12, 16))
    p = pipeline(tmp_path, {"inputs": ["in"], "mode": "sample", "temperatures": [0.8], "samples": 1,
                            "output_dir": "out"}, component="srflow", checkpoint=srflow_ckpt, seed=7)
    code, _, err = run([p], capsys)
    assert code == 0, err
    got = read(tmp_path / "out" / "a_t0.8_s0_seed7.png") / 255.0
    model = load(srflow_ckpt).eval()
    lr = torch.from_numpy(read(tmp_path / "in" / "a.png")).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        expected = model.decode(lr, temperature=0.8, generator=torch.Generator().manual_seed(7))
        g = torch.Generator().manual_seed(7)  # the same noise drawn in list order instead: another picture
        in_list_order = [torch.randn((1, *s), generator=g) * 0.8 for s in model.latent_shapes(lr.shape)]
        other = model.decode(lr, in_list_order)
    as_hwc = lambda t: t.clamp(0, 1)[0].permute(1, 2, 0).numpy()  # noqa: E731
    assert np.abs(got - as_hwc(expected)).max() <= 0.5 / 255 + 1e-4
    assert np.abs(got - as_hwc(other)).mean() > 0.01


# ----------------------------------------------------------------------------------------------------
# examples/*.toml


def _tiny_checkpoint(tmp_path: Path, component: str) -> Path:
    from restorekit import save_generator

    path = tmp_path / f"{component}.safetensors"
    if path.exists():
        return path
    reg = make_registry()
    comp = reg.get("generator", component).component
    raw = {"nf": 8, "nb": 1, "gc": 4}
    if component == "srflow":
        raw = {**raw, "K": 1, "L": 3, "hidden_channels": 8, "stack_blocks": [0]}
    params = comp.params.model_validate(raw)
    save_generator(path, comp.build(params), component, params.model_dump())
    return path


@pytest.mark.parametrize("example", sorted((ROOT / "examples").glob("*.toml")), ids=lambda p: p.name)
def test_examples_validate(example: Path, tmp_path: Path, capsys) -> None:
    """Every example resolves to a plan (--dry-run); checkpoint paths the user edits point at tiny saved models."""
    from restorekit.spec import load_spec

    spec = load_spec(example)
    components = {net.component for net in spec.networks.values()}
    overrides = []
    for name, net in spec.networks.items():
        if net.checkpoint is not None:
            ckpt = _tiny_checkpoint(tmp_path, net.component)
            overrides += ["--set", f"networks.{name}.checkpoint={json.dumps(str(ckpt))}"]
    reg = make_registry()
    if "hcflow" in components:  # the separately installed restorekit-hcflow plugin
        reg.register(pytest.importorskip("restorekit_hcflow.plugin"), "hcflow")
    code, out, err = run([example, "--dry-run", *overrides], capsys, registry=reg)
    assert code == 0, err
    assert f"mode: {spec.run.mode}" in out


def test_example_sr_rrdb_runs_on_a_tiny_checkpoint(tmp_path: Path, images: Path, capsys) -> None:
    ckpt = _tiny_checkpoint(tmp_path, "rrdb")
    sets = [f"networks.generator.checkpoint={json.dumps(str(ckpt))}", f"infer.inputs={json.dumps(str(images))}",
            f"infer.output_dir={json.dumps(str(tmp_path / 'out'))}", 'run.device="cpu"']
    code, _, err = run([ROOT / "examples" / "sr_rrdb.toml"] + [a for s in sets for a in ("--set", s)], capsys,
                       registry=make_registry())
    assert code == 0, err
    assert len(list((tmp_path / "out").rglob("*.png"))) == 3


def test_png16_round_trip_every_layout(tmp_path: Path) -> None:
    """16-bit PNGs (gray, gray+alpha, RGB, RGBA) are written and read back at full depth."""
    from restorekit.data.io import read_image, write_image

    torch.manual_seed(0)
    for gray, with_alpha, colour_type in [(True, False, 0), (True, True, 4), (False, False, 2), (False, True, 6)]:
        rgb = torch.rand(1 if gray else 3, 5, 7).expand(3, 5, 7).contiguous()
        alpha = torch.rand(1, 5, 7) if with_alpha else None
        write_image(tmp_path / "x.png", rgb, alpha, bits=16, gray=gray)
        assert png_header(tmp_path / "x.png") == (16, colour_type)
        back = read_image(tmp_path / "x.png")
        assert back.bits == 16 and back.gray == gray
        assert (back.rgb - rgb).abs().max() <= 0.5 / 65535 + 1e-7
        if alpha is not None:
            assert (back.alpha - alpha).abs().max() <= 0.5 / 65535 + 1e-7
