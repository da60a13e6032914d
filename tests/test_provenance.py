"""Provenance of outputs: every written image records what made it (samples.json and PNG text); an existing output
is skipped only when its record matches the new request exactly, else the run stops before any work."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from fakes import TINY_SRFLOW, pipeline, srflow_tiny

from restorekit import save_generator
from restorekit.cli import main
from restorekit.data.png import read_png_text

from restorekit import provenance


def run(args: list[str], registry: Any, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main([str(a) for a in args], registry=registry)
    out, err = capsys.readouterr()
    return code, out, err


def records(out: Path) -> dict[str, Any]:
    return json.loads((out / "samples.json").read_text())["outputs"]


def state(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def two_flows(tmp_path: Path) -> tuple[Path, Path]:
    """Two tiny real SRFlow files of the same architecture, different weights."""
    a, b = tmp_path / "flow_a.safetensors", tmp_path / "flow_b.safetensors"
    net = srflow_tiny()
    save_generator(a, net, "srflow", {**TINY_SRFLOW, "scale": 4})
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01)
    save_generator(b, net, "srflow", {**TINY_SRFLOW, "scale": 4})
    return a, b


def test_each_output_records_weights_params_mode_temperature_sample_seed_tile_and_version(
    tmp_path: Path, two_flows, sample_png, registry, capsys
) -> None:
    import restorekit

    a, _ = two_flows
    img = sample_png(size=32)
    out = tmp_path / "out"
    code, _, err = run(["--model", a, "--input", img, "--output", out, "--temperature", "0.5", "--samples", "2",
                        "--seed", "3", "--tile", "16"], registry, capsys)
    assert code == 0, err
    recs = records(out)
    name = f"{img.stem}_t0.5_s1_seed4.png"
    rec = recs[name]
    assert rec["checkpoint"] == str(a.resolve()) and rec["sha256"] == provenance.file_sha256(a)
    assert rec["network"] == "srflow" and rec["params"]["hidden_channels"] == TINY_SRFLOW["hidden_channels"]
    assert (rec["mode"], rec["temperature"], rec["sample"], rec["seed"]) == ("sample", 0.5, 1, 4)
    assert rec["tile"] == {"size": 16, "overlap": 8} and rec["restorekit"] == restorekit.__version__
    assert rec["input_sha256"] == provenance.file_sha256(img) and rec["input"] == str(img.resolve())
    # the same record travels inside the PNG (tEXt)
    assert json.loads(read_png_text(out / name)["restorekit"]) == rec


@pytest.mark.parametrize("change,field,value", [
    ("networks.generator.checkpoint", "checkpoint", None),  # another model file
    ("run.seed", "seed", 9),
    ("infer.temperatures", "temperature", [0.9]),
    ("infer.tile", "tile.size", {"size": 24, "overlap": 8}),
])
def test_a_different_request_stops_before_any_work_naming_the_field(
    tmp_path: Path, two_flows, sample_png, registry, capsys, change: str, field: str, value: Any
) -> None:
    """A pipeline in ``sr`` mode at temperature 0.5: the output is ``<stem>.png`` whatever the model, seed,
    temperature or tile, so only the record tells the images apart."""
    a, b = two_flows
    img = sample_png(size=32)
    p = pipeline(tmp_path, {"mode": "sr", "inputs": [str(img)], "output_dir": "out", "temperatures": [0.5],
                            "tile": {"size": 16, "overlap": 8}}, component="srflow", checkpoint=a, seed=1)
    out = tmp_path / "out"
    code, outp, err = run([p], registry, capsys)
    assert code == 0 and "1 written" in outp, err
    first = state(out)
    code, outp, err = run([p], registry, capsys)  # the same request again: skipped, the image not rewritten
    assert code == 0 and "0 written, 1 skipped" in outp, err
    before = state(out)
    assert before[f"{img.stem}.png"] == first[f"{img.stem}.png"] and before["samples.json"] == first["samples.json"]
    new = str(b) if value is None else value
    setting = ["--set", f"{change}={json.dumps(new)}".replace('"size": ', "size = ").replace('"overlap": ', "overlap = ")]
    code, outp, err = run([p, *setting], registry, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"was made with {field} = " in err and "infer.overwrite = true" in err and "another infer.output_dir" in err
    assert "infer:" not in outp and state(out) == before  # nothing written, nothing deleted, no summary rewritten
    # overwrite replaces the output and its record; the new request then skips
    code, outp, err = run([p, *setting, "--set", "infer.overwrite=true"], registry, capsys)
    assert code == 0 and "1 written" in outp, err
    (rec,) = records(out).values()
    expected = {"checkpoint": str(b.resolve()), "seed": 9, "temperature": 0.9,
                "tile.size": {"size": 24, "overlap": 8}}[field]
    assert rec[field.split(".")[0]] == expected
    code, outp, _ = run([p, *setting], registry, capsys)
    assert code == 0 and "1 skipped" in outp


def test_the_one_command_form_names_its_flags_and_new_names_go_beside(tmp_path: Path, two_flows, sample_png,
                                                                      registry, capsys) -> None:
    a, b = two_flows
    img = sample_png(size=32)
    out = tmp_path / "out"
    base = ["--input", img, "--output", out, "--temperature", "0.5", "--seed", "1"]
    code, _, err = run(["--model", a, *base], registry, capsys)
    assert code == 0, err
    code, _, err = run(["--model", a, *base, "--tile", "16"], registry, capsys)
    assert code == 2 and "was made with tile = (not recorded), this run asks tile = " in err
    assert "pass --overwrite to replace existing outputs, or choose another --output folder" in err
    code, _, err = run(["--model", b, *base], registry, capsys)
    assert code == 2 and "was made with checkpoint = " in err
    saved = a.read_bytes()
    a.write_bytes(b.read_bytes())  # the same file name, other weights: the sha256 tells
    code, _, err = run(["--model", a, *base], registry, capsys)
    assert code == 2 and "was made with sha256 = " in err
    a.write_bytes(saved)
    # another seed or temperature has other file names (..._t<T>_s<i>_seed<N>.png): written beside the first
    code, outp, err = run(["--model", a, *base[:-1], "2"], registry, capsys)
    assert code == 0 and "1 written, 0 skipped" in outp, err
    assert sorted(records(out)) == [f"{img.stem}_t0.5_s0_seed1.png", f"{img.stem}_t0.5_s0_seed2.png"]


def test_two_models_by_name_and_by_component(tmp_path: Path, sample_png, registry, capsys) -> None:
    """A flow's outputs in a folder: an RRDB file asking for the same file name is refused on the weights."""
    from restorekit_rrdb import RRDBParams, build_rrdb

    img = sample_png(size=16)
    out = tmp_path / "out"
    code, _, err = run(["--model", "bundled-rrdb-x4", "--input", img, "--output", out], registry, capsys)
    assert code == 0, err
    rec = records(out)[f"{img.stem}.png"]
    assert rec["model"] == "bundled-rrdb-x4" and len(rec["sha256"]) == 64 and "checkpoint" not in rec
    params = RRDBParams(nf=8, nb=1, gc=4, scale=4)
    mine = tmp_path / "mine.safetensors"
    save_generator(mine, build_rrdb(params).eval(), "rrdb", params.model_dump())
    code, _, err = run(["--model", mine, "--input", img, "--output", out], registry, capsys)
    assert code == 2 and "was made with model = 'bundled-rrdb-x4', this run asks model = (not recorded)" in err


def test_a_folder_of_images_with_no_records_is_refused(tmp_path: Path, sample_png, registry, capsys) -> None:
    img = sample_png(size=16)
    out = tmp_path / "out"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"someone else's")
    code, _, err = run(["--model", "bundled-rrdb-x4", "--input", img, "--output", out], registry, capsys)
    assert code == 2 and "holds 1 image(s)" in err and "--overwrite" in err
    assert sorted(p.name for p in out.iterdir()) == ["holiday.jpg"]
    code, _, err = run(["--model", "bundled-rrdb-x4", "--input", img, "--output", out, "--overwrite"], registry,
                       capsys)
    assert code == 0 and (out / "holiday.jpg").read_bytes() == b"someone else's"  # only what it replaces


def test_a_weights_file_is_hashed_once_per_run(tmp_path: Path, two_flows, sample_png, registry, capsys,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import restorekit.catalogue as cat

    a, _ = two_flows
    calls: list[Path] = []
    real = cat.sha256_file
    monkeypatch.setattr(cat, "sha256_file", lambda p: calls.append(Path(p)) or real(p))
    provenance._DIGESTS.clear()
    img = sample_png(size=16)
    code, _, err = run(["--model", a, "--input", img, "--output", tmp_path / "o", "--temperature", "0", "0.5",
                        "--samples", "2"], registry, capsys)
    assert code == 0, err
    assert calls.count(a.resolve()) == 1 and calls.count(img.resolve()) == 1
    a.touch()  # a changed file (new mtime) is hashed again
    provenance.file_sha256(a)
    assert calls.count(a.resolve()) == 2


def test_a_request_field_missing_from_the_ordered_list_is_still_compared() -> None:
    from restorekit.infer.records import first_difference

    rec = {"model": "a", "seed": 1, "input": "x.png", "fallback": None}  # input/fallback: what happened, not asked
    assert first_difference(rec, {"model": "a", "seed": 1}) is None
    assert first_difference(rec, {"model": "a", "seed": 2}) == ("seed", 1, 2)
    assert first_difference({**rec, "new_switch": 0}, {"model": "a", "seed": 1, "new_switch": 1}) == ("new_switch", 0, 1)
