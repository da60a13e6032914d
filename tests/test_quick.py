"""One-command SR: ``restore-run --input ... --output ... [--model NAME_OR_FILE]`` builds a pipeline spec and runs it;
``--print-spec`` writes that spec as TOML that reproduces the run."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from restorekit import catalogue as cat
from restorekit import save_generator
from restorekit.cli import main
from restorekit.spec import load_spec, spec_from_dict

def run(args: list[str], registry: Any, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args, registry=registry)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def rrdb_ckpt(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    from restorekit_rrdb import RRDBParams, build_rrdb

    params = RRDBParams(nf=8, nb=1, gc=4, scale=4)
    net = build_rrdb(params).eval()
    path = tmp_path / "tiny_rrdb.safetensors"
    save_generator(path, net, "rrdb", params.model_dump())
    return path, net


@pytest.fixture
def srflow_ckpt(tmp_path: Path) -> Path:
    """The tiny real SRFlow of tests/fakes.py (jittered weights: a fresh flow's couplings are identities)."""
    from fakes import TINY_SRFLOW, srflow_tiny

    path = tmp_path / "tiny_srflow.safetensors"
    save_generator(path, srflow_tiny(), "srflow", {**TINY_SRFLOW, "scale": 4})
    return path


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(cat.ENV_HOME, str(tmp_path / "home"))
    monkeypatch.delenv(cat.ENV_CATALOGUE, raising=False)
    return tmp_path / "home"


def pngs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.png"))


def test_rrdb_file_writes_stem_png_equal_to_the_network(tmp_path: Path, rrdb_ckpt, sample_png, registry,
                                                        capsys) -> None:
    path, net = rrdb_ckpt
    img = sample_png(size=16)
    out = tmp_path / "out"
    code, _, err = run(["--model", str(path), "--input", str(img), "--output", str(out), "--device", "cpu"],
                       registry, capsys)
    assert code == 0, err
    assert pngs(out) == [f"{img.stem}.png"]
    lr = torch.from_numpy(iio.imread(img)).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        expected = net(lr).clamp(0, 1)[0].permute(1, 2, 0).numpy()
    got = iio.imread(out / f"{img.stem}.png") / 255.0
    assert got.shape == (64, 64, 3) and np.abs(got - expected).max() <= 0.5 / 255 + 1e-5


def test_flow_default_is_temperature_zero_sr_and_samples_keep_todays_names(
    tmp_path: Path, srflow_ckpt: Path, sample_png, registry, capsys
) -> None:
    img = sample_png(size=16)
    code, _, err = run(["--model", str(srflow_ckpt), "--input", str(img), "--output", str(tmp_path / "a")],
                       registry, capsys)
    assert code == 0, err
    assert pngs(tmp_path / "a") == [f"{img.stem}.png"]
    code, _, err = run(["--model", str(srflow_ckpt), "--input", str(img), "--output", str(tmp_path / "b"),
                        "--temperature", "0", "0.8", "--samples", "2", "--seed", "5"], registry, capsys)
    assert code == 0, err
    s = img.stem
    assert pngs(tmp_path / "b") == [f"{s}_t0.8_s0_seed5.png", f"{s}_t0.8_s1_seed6.png", f"{s}_t0_s0_seed5.png"]
    # temperature 0 is the mean image: the same pixels as the default run
    assert np.array_equal(iio.imread(tmp_path / "a" / f"{s}.png"), iio.imread(tmp_path / "b" / f"{s}_t0_s0_seed5.png"))
    a, b = (iio.imread(tmp_path / "b" / f"{s}_t0.8_s{i}_seed{5 + i}.png").astype(int) for i in (0, 1))
    assert np.abs(a - b).max() > 0  # two different samples


def test_print_spec_round_trips(tmp_path: Path, srflow_ckpt: Path, sample_png, registry, capsys,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    img = sample_png(size=16)
    args = ["--model", str(srflow_ckpt), "--input", str(img), "--temperature", "0.7", "--samples", "2",
            "--seed", "3", "--tile", "16", "--device", "cpu"]
    code, toml_text, err = run(args + ["--output", "direct", "--print-spec"], registry, capsys)
    assert code == 0, err
    assert not (tmp_path / "direct").exists()  # printing runs nothing
    data = tomllib.loads(toml_text)
    assert data["networks"]["generator"] == {"component": "srflow", "checkpoint": str(srflow_ckpt)}
    assert data["infer"]["mode"] == "sample" and data["infer"]["temperatures"] == [0.7]
    assert data["infer"]["tile"] == {"size": 16, "overlap": 8} and data["run"]["seed"] == 3
    spec_file = tmp_path / "quick.toml"
    spec_file.write_text(toml_text)
    assert load_spec(spec_file) == spec_from_dict(data)  # the file is a valid pipeline, absolute paths
    monkeypatch.chdir(tmp_path)
    code, _, err = run(args + ["--output", "direct"], registry, capsys)
    assert code == 0, err
    code, _, err = run([str(spec_file), "--set", f'infer.output_dir="{tmp_path / "from_file"}"'], registry, capsys)
    assert code == 0, err
    names = pngs(tmp_path / "direct")
    assert names == [f"{img.stem}_t0.7_s0_seed3.png", f"{img.stem}_t0.7_s1_seed4.png"]
    assert names == pngs(tmp_path / "from_file")
    for n in names:
        assert np.array_equal(iio.imread(tmp_path / "direct" / n), iio.imread(tmp_path / "from_file" / n))


def test_no_model_uses_bundled_srflow_at_temperature_zero(tmp_path: Path, sample_png, registry, capsys,
                                                          home: Path) -> None:
    # the real bundled model (shipped in restorekit/models, checked against its catalogue entry's parameter count)
    img = sample_png(size=16)
    code, text, err = run(["--input", str(img), "--output", str(tmp_path / "o"), "--print-spec"], registry, capsys)
    assert code == 0, err
    data = tomllib.loads(text)
    assert data["networks"]["generator"] == {"model": "bundled-srflow-x4"}
    assert data["infer"]["mode"] == "sr" and data["infer"]["temperatures"] == [0.0]
    # a spec for another machine: printing it needs no CUDA here
    code, text, err = run(["--input", str(img), "--output", str(tmp_path / "o"), "--device", "cuda:1", "--print-spec"],
                          registry, capsys)
    assert code == 0 and tomllib.loads(text)["run"]["device"] == "cuda:1", err
    code, _, err = run(["--input", str(img), "--output", str(tmp_path / "o")], registry, capsys)
    assert code == 0, err
    assert pngs(tmp_path / "o") == [f"{img.stem}.png"] and not home.exists()


def test_existing_outputs_are_kept_and_refused_unless_overwrite(tmp_path: Path, rrdb_ckpt, sample_png, registry,
                                                               capsys) -> None:
    img = sample_png(size=16)
    out = tmp_path / "out"
    out.mkdir()
    (out / f"{img.stem}.png").write_bytes(b"mine")
    base = ["--model", str(rrdb_ckpt[0]), "--input", str(img), "--output", str(out)]
    code, _, err = run(base, registry, capsys)
    assert code == 2 and err.startswith(f"restore-run: error: --output: {out} holds 1 image(s)"), err
    assert "no samples.json records" in err and "pass --overwrite" in err, err
    assert (out / f"{img.stem}.png").read_bytes() == b"mine"  # refused, not replaced
    code, _, err = run(base + ["--overwrite"], registry, capsys)
    assert code == 0, err
    assert iio.imread(out / f"{img.stem}.png").shape == (64, 64, 3)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--input", "missing.png"], "--input: missing.png: no such file or folder"),
        (["--input", "*.nothing"], "--input: *.nothing: no image matches this pattern"),
        (["--input", "IMG", "--model", "srflow-df2k4x"],
         "--model: unknown model 'srflow-df2k4x' (did you mean 'srflow-df2k-4x'?)"),
        (["--input", "IMG", "--model", "nothere.pth"], "--model: nothere.pth: file not found"),
        # the flags are checked by the spec's own validators, each mistake named as its flag
        (["--input", "IMG", "--model", "RRDB", "--temperature", "-1"],
         "--temperature: must be finite and >= 0 (got -1.0)"),
        (["--input", "IMG", "--model", "RRDB", "--temperature", "nan"], "--temperature: must be finite and >= 0"),
        (["--input", "IMG", "--model", "RRDB", "--temperature", "0.5", "0.5"], "--temperature: duplicate values [0.5]"),
        (["--input", "IMG", "--model", "RRDB", "--temperature", "0.8"], "is a 'rrdb' network, not a flow"),
        (["--input", "IMG", "--model", "RRDB", "--samples", "0"],
         "--samples: Input should be greater than or equal to 1 (got 0)"),
        (["--input", "IMG", "--model", "RRDB", "--tile", "4"],
         "--tile: Input should be greater than or equal to 8 (got 4)"),
        (["--input", "IMG", "--model", "RRDB", "--tile", "8"], "--tile: size (8) must be larger than overlap (8)"),
        (["--input", "IMG", "--model", "RRDB", "--device", "gpu"],
         "--device: device must be auto, cpu, cuda or cuda:N, got 'gpu'"),
        (["--input", "IMG", "--model", "RRDB", "--device", "cuda:100000"],
         "--device: device index 100000 is out of range"),
        (["--input", "IMG", "--model", "RRDB", "--seed", "-1"],
         "--seed: Input should be greater than or equal to 0 (got -1)"),
        (["p.toml", "--input", "IMG"], "p.toml: --input is for one-command SR without a pipeline file"),
        (["p.toml", "--temperature", "0.5"], "is for one-command SR without a pipeline file"),
        (["--model", "RRDB"], "--input: give the images to super-resolve"),
        (["--input", "IMG", "--model", "RRDB", "--model", "RRDB"], "--model: give one model for --input (got 2)"),
        (["--input", "IMG", "--model", ""], "--model: empty name"),
        (["--input", "", "--model", "RRDB"], "--input: empty path"),
        # flags that mean nothing in this mode are refused, not silently ignored
        (["--input", "IMG", "--model", "RRDB", "--set", "run.seed=1"],
         "--set does nothing with --input (it applies to a pipeline file: write one with --print-spec)"),
        (["--input", "IMG", "--model", "RRDB", "--dry-run"], "--dry-run does nothing with --input"),
        (["--input", "IMG", "--model", "RRDB", "--resume"], "--resume does nothing with --input"),
        (["--input", "IMG", "--model", "RRDB", "--sizes", "64"], "--sizes does nothing with --input"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path: Path, rrdb_ckpt, sample_png, registry, capsys, home: Path,
                                      args: list[str], message: str) -> None:
    img = sample_png(size=16)
    args = [str(img) if a == "IMG" else str(rrdb_ckpt[0]) if a == "RRDB" else a for a in args]
    code, _, err = run(args + ["--output", str(tmp_path / "o")], registry, capsys)
    assert code == 2 and err.startswith("restore-run: error: ") and err.count("\n") == 1, err
    assert message in err, err
    assert not (tmp_path / "o").exists()


def test_to_toml_writes_valid_toml_for_awkward_values() -> None:
    from restorekit.quick import to_toml

    data = {"a": {"s": 'quote " and \\ and é', "f": 1e-05, "g": 2.0, "l": [0.0, 0.5], "b": False,
                  "sub": {"k": 1}}, "weird key": {"x": "y"}}
    assert tomllib.loads(to_toml(data, ["header"])) == data


def test_max_pixels_raises_the_limit_the_message_names(tmp_path: Path, rrdb_ckpt, sample_png, registry,
                                                       capsys) -> None:
    img = sample_png(size=16)
    base = ["--model", str(rrdb_ckpt[0]), "--input", str(img), "--output", str(tmp_path / "o")]
    code, out, _ = run(base + ["--max-pixels", "255"], registry, capsys)
    assert code == 1 and "over the limit of 255 (run.max_pixels); not decoded" in out
    assert "--max-pixels 256 (restore-run --input), --set run.max_pixels=256 (a pipeline)" in out
    code, out, err = run(base + ["--max-pixels", "256"], registry, capsys)
    assert code == 0 and "1 written" in out, err
    code, out, _ = run(base + ["--max-pixels", "256", "--print-spec"], registry, capsys)
    assert "max_pixels = 256" in out
    code, _, err = run(base + ["--max-pixels", "0"], registry, capsys)
    assert code == 2 and "--max-pixels: Input should be greater than or equal to 1 (got 0)" in err
