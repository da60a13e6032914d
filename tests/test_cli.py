"""restore-run: plugin listing, schema, dry run, and the bad-input corpus (exit 2, one line, no traceback)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from restorekit.cli import main

TINY_RRDB = 'component = "rrdb"\nparams = { nf = 8, nb = 1, gc = 4, scale = 2 }\n'


def write(tmp_path: Path, text: str, name: str = "p.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def infer_spec(extra_net: str = "", infer: str = 'inputs = ["in"]\n') -> str:
    return (
        '[run]\nmode = "infer"\ndevice = "cpu"\noutput_dir = "out"\n'
        f"[networks.generator]\n{TINY_RRDB}{extra_net}"
        f"[infer]\n{infer}"
    )


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_list_plugins_shows_first_party_components(capsys) -> None:
    code, out, _ = run_cli(["--list-plugins", "--json"], capsys)
    assert code == 0
    plugins = {p["name"]: p for p in json.loads(out)["plugins"]}
    assert plugins["srflow"]["components"] == {"generator": ["srflow"]}
    assert plugins["rrdb"]["components"] == {"generator": ["rrdb"]}
    assert plugins["builtins"]["components"] == {"injector": ["generator"], "loss": ["pixel", "direct"]}
    assert sorted(plugins["validators"]["components"]["validator"]) == [
        "diversity", "gaussian_distance", "lpips", "lr_psnr", "nll", "psnr", "ssim"]
    first_party = ("builtins", "rrdb", "srflow", "validators")  # separately installed plugins (hcflow) may follow
    assert all(plugins[n]["status"] == "ok" and plugins[n]["distribution"] == "restorekit" for n in first_party)
    code, out, _ = run_cli(["--list-plugins"], capsys)
    assert code == 0 and "srflow  [ok]  (restorekit" in out and "generator srflow" in out


def test_schema_is_json_schema(capsys) -> None:
    code, out, _ = run_cli(["--schema"], capsys)
    schema = json.loads(out)
    assert code == 0 and {"run", "networks", "infer", "train"} <= set(schema["properties"])


def test_dry_run_prints_plan_with_parameter_counts(tmp_path: Path, capsys) -> None:
    p = write(tmp_path, infer_spec())
    code, out, err = run_cli([str(p), "--dry-run"], capsys)
    assert code == 0, err
    # RRDB nf 8, nb 1, gc 4, scale 2 (one upsampling stage): count from the formula of the architecture doc
    nf, gc = 8, 4
    rdb = sum(9 * (nf + j * gc) * gc + gc for j in range(4)) + 9 * (nf + 4 * gc) * nf + nf
    expected = (27 * nf + nf) + 3 * rdb + (2 + 1) * (9 * nf * nf + nf) + (27 * nf + 3)
    assert f"generator: rrdb ({expected:,} parameters" in out
    assert "device: cpu" in out and "mode: infer" in out and "rrdb" in out
    assert "trainable" not in out  # an inference run trains nothing
    assert "infer: network=generator mode=sr inputs=" in out and "samples" not in out and "overwrite=false" in out
    assert not (tmp_path / "out").exists()


def test_dry_run_of_a_flow_shows_samples_and_tile_and_training_shows_trainable(capsys) -> None:
    demo = Path(__file__).resolve().parents[1] / "examples" / "demo.toml"
    code, out, err = run_cli([str(demo), "--dry-run", "--set", "infer.tile={size = 32}"], capsys)
    assert code == 0, err
    assert "trainable=True" in out and "bundled: srflow" in out and "trainable=False" in out
    assert ("infer (after training): network=bundled mode=sample" in out and "temperatures=[0.0, 0.5, 0.8] samples=2 "
            "tile=32 overlap=8 overwrite=true" in out)


def test_set_overrides_reach_the_plan(tmp_path: Path, capsys) -> None:
    p = write(tmp_path, infer_spec())
    code, out, err = run_cli([str(p), "--dry-run", "--set", "networks.generator.params.nb=2", "--set", "run.seed=5"], capsys)
    assert code == 0, err
    assert "nb=2" in out and "seed: 5" in out


BAD_INPUTS = [
    # (pipeline text or None for a missing file, extra args, expected stderr fragment)
    (None, [], "missing.toml: file not found"),
    ("[run\n", [], "TOML syntax error"),
    (infer_spec().replace('mode = "infer"', 'mode = "infer"\nseeed = 1'), [], "run.seeed: unknown field (did you mean 'seed'?)"),
    (infer_spec().replace('component = "rrdb"', 'component = "rrbd"'), [],
     "networks.generator.component: unknown generator 'rrbd' (did you mean 'rrdb'?)"),
    (infer_spec().replace("nb = 1", 'nb = "one"'), [], "networks.generator.params.nb: Input should be a valid integer"),
    (infer_spec().replace("nf = 8", "nff = 8"), [], "networks.generator.params.nff: unknown field (did you mean 'nf'?)"),
    (infer_spec(extra_net='checkpoint = "nope.pth"\n'), [], "networks.generator.checkpoint: "),
    (infer_spec(), ["--set", "run.device=cuda:7"], "run.device: 'cuda:7' asked for"),
    (infer_spec(), ["--set", "run.nothing"], "--set run.nothing: expected dotted.key=value"),
    (infer_spec(infer='inputs = ["in"]\ntile = { size = 2 }\n'), [], "infer.tile.size: Input should be greater than or equal to 8"),
]


@pytest.mark.parametrize("text, extra, fragment", BAD_INPUTS)
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path: Path, capsys, text, extra, fragment) -> None:
    path = tmp_path / "missing.toml" if text is None else write(tmp_path, text)
    if "cuda:7" in " ".join(extra) and torch.cuda.device_count() > 7:
        pytest.skip("machine has 8 GPUs")
    code, out, err = run_cli([str(path), *extra], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("restore-run: error: "), err
    assert fragment in lines[0]
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ([] if text is None else ["p.toml"])


def test_bad_checkpoint_file_is_refused(tmp_path: Path, capsys) -> None:
    (tmp_path / "w.pth").write_bytes(b"not a checkpoint at all")
    p = write(tmp_path, infer_spec(extra_net='checkpoint = "w.pth"\n'))
    code, _, err = run_cli([str(p)], capsys)
    assert code == 2 and "w.pth: not a readable PyTorch checkpoint" in err and len(err.strip().splitlines()) == 1
    assert "(corrupt, or not a PyTorch file)" in err  # not the unpickler's bare key ("101")


def test_wrong_architecture_checkpoint_names_the_parameter(tmp_path: Path, capsys, sample_png) -> None:
    from restorekit_rrdb.arch import RRDBNet

    sample_png("coffee", size=16, folder=tmp_path / "in")
    torch.save(RRDBNet(nf=8, nb=2, gc=4, scale=2).state_dict(), tmp_path / "w.pth")
    p = write(tmp_path, infer_spec(extra_net='checkpoint = "w.pth"\n'))
    code, _, err = run_cli([str(p)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.strip().endswith("w.pth: nb: checkpoint has 2 blocks, params say 1"), err
    assert not (tmp_path / "out" / "infer" / "coffee.png").exists()


@pytest.mark.parametrize(("argv", "message"), [
    (["p.toml", "--benchmark"], "p.toml: a pipeline file does nothing with --benchmark"),
    (["p.toml", "--json"], "--json does nothing with a pipeline file"),
    (["--list-plugins", "--model", "srflow"], "--model does nothing with --list-plugins"),
    (["--schema", "--dry-run"], "--dry-run does nothing with --schema"),
    (["--options", "generator", "rrdb", "--train"], "--train does nothing with --options"),
])
def test_a_flag_that_does_nothing_in_its_mode_is_one_line(tmp_path: Path, capsys, argv, message) -> None:
    (tmp_path / "p.toml").write_text('[run]\nmode = "infer"\n')
    argv = [str(tmp_path / a) if a == "p.toml" else a for a in argv]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert err.strip().splitlines() == [f"restore-run: error: {message.replace('p.toml', str(tmp_path / 'p.toml'))}"]
    assert out == ""


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--ouptut", "out", "p.toml"], "unrecognized arguments: --ouptut p.toml (did you mean --output?)"),
        (["photo.png"], "photo.png: an image, not a pipeline file; did you mean `--input photo.png`?"),
        (["My Photo.JPG"], "My Photo.JPG: an image, not a pipeline file; did you mean `--input 'My Photo.JPG'`?"),
    ],
)
def test_top_level_mistakes_are_one_line_with_a_suggestion(tmp_path: Path, capsys, monkeypatch, argv, message) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / argv[-1]).write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")  # not UTF-8: no decoding error may show
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"restore-run: error: {message}\n", err


def test_library_warnings_are_one_line_each(tmp_path: Path, capsys) -> None:
    """The library warns through ``logging`` (a skipped validation image) or ``warnings``, never by printing:
    restore-run shows each warning as one ``restore-run: warning:`` line."""
    import numpy as np
    from fakes import make_registry, sample_image, save
    from restorekit.quick import to_toml

    save(tmp_path / "val" / "big.png", sample_image("coffee", 32, 32))
    save(tmp_path / "val" / "tiny.png", np.full((8, 8, 3), 0.5))
    data = {"run": {"mode": "eval", "device": "cpu", "output_dir": "out"},
            "networks": {"generator": {"component": "bicubic"}},
            "data": {"val": {"hq": "val", "scale": 2, "crop": 16}}, "validators": {"psnr": {"component": "psnr"}}}
    (tmp_path / "e.toml").write_text(to_toml(data))
    assert main([str(tmp_path / "e.toml")], registry=make_registry()) == 0
    err = capsys.readouterr().err
    assert err.splitlines() == [f"restore-run: warning: {tmp_path / 'e.toml'}: data.val: skipped 1 image(s) too small "
                                "for the crop: tiny.png"], err
