"""The pipeline spec: validation, did-you-mean, overrides, paths, schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from restorekit.errors import UserError
from restorekit.spec import PipelineSpec, apply_overrides, json_schema, load_spec, spec_from_dict

BASE = {"run": {"mode": "infer"}, "networks": {"generator": {"component": "rrdb"}}, "infer": {"inputs": "in"}}


def err(data: dict, source: str = "p.toml") -> str:
    with pytest.raises(UserError) as info:
        spec_from_dict(data, source=source)
    return str(info.value)


def test_minimal_spec_defaults() -> None:
    spec = spec_from_dict(BASE)
    assert spec.run.device == "auto" and spec.run.precision == "fp32" and spec.run.seed == 0
    assert spec.infer is not None and spec.infer.inputs == [Path("in")] and spec.infer.mode == "sr"


@pytest.mark.parametrize(
    "patch, expected",
    [
        ({"run": {"mode": "infer", "devce": "cpu"}}, "p.toml: run.devce: unknown field (did you mean 'device'?)"),
        ({"run": {"mode": "serve"}}, "p.toml: run.mode: Input should be 'train', 'eval' or 'infer' (got 'serve')"),
        ({"run": {"mode": "infer", "device": "gpu"}}, "p.toml: run.device: device must be auto, cpu, cuda or cuda:N, got 'gpu' (got 'gpu')"),
        ({"infer": {"inputs": "in", "tile": {"size": 4}}}, "p.toml: infer.tile.size: Input should be greater than or equal to 8 (got 4)"),
        ({"infer": {"inputs": "in", "network": "gen"}}, "p.toml: infer.network: unknown network 'gen' (available: generator)"),
        ({"networks": {"generator": {"component": "rrdb", "chekpoint": "x"}}},
         "p.toml: networks.generator.chekpoint: unknown field (did you mean 'checkpoint'?)"),
    ],
)
def test_one_line_errors_name_file_and_field(patch: dict, expected: str) -> None:
    data = {**BASE, **patch}
    message = err(data)
    assert "\n" not in message
    assert message.startswith(expected.split(" (got")[0])


def test_train_mode_needs_its_tables() -> None:
    assert "needs a [train] table" in err({**BASE, "run": {"mode": "train"}})


def test_loss_typo_suggests_weight() -> None:
    data = {
        **BASE,
        "run": {"mode": "train"},
        "train": {"steps": 1},
        "data": {"train": {"hq": "x"}},
        "steps": {"s": {"networks": ["generator"], "losses": {"l": {"component": "pixel", "wieght": 2}}}},
    }
    assert err(data) == "p.toml: steps.s.losses.l.wieght: unknown field (did you mean 'weight'?)"


def test_overrides_parse_toml_values() -> None:
    data = apply_overrides(
        json.loads(json.dumps(BASE)),
        ["run.seed=7", "infer.temperatures=[0.0, 0.9]", "networks.generator.params.nb=2", 'run.device="cpu"', "infer.format=png"],
    )
    spec = spec_from_dict(data)
    assert spec.run.seed == 7 and spec.infer.temperatures == [0.0, 0.9] and spec.run.device == "cpu"
    assert spec.networks["generator"].params == {"nb": 2} and spec.infer.format == "png"
    with pytest.raises(UserError, match="expected dotted.key=value"):
        apply_overrides({}, ["run.seed"])


def test_load_spec_resolves_paths_and_reports_syntax(tmp_path: Path) -> None:
    f = tmp_path / "p.toml"
    f.write_text('[run]\nmode = "infer"\n[networks.generator]\ncomponent = "rrdb"\ncheckpoint = "w.pth"\n[infer]\ninputs = "imgs"\n')
    spec = load_spec(f)
    assert spec.networks["generator"].checkpoint == tmp_path / "w.pth"
    assert spec.infer.inputs == [tmp_path / "imgs"]
    bad = tmp_path / "bad.toml"
    bad.write_text("[run\nmode = 1\n")
    with pytest.raises(UserError, match=r"bad.toml: TOML syntax error: .*line 1"):
        load_spec(bad)
    with pytest.raises(UserError, match="missing.toml: file not found"):
        load_spec(tmp_path / "missing.toml")


def test_schema_covers_every_section_and_documents_fields() -> None:
    schema = json_schema()
    assert set(schema["properties"]) == set(PipelineSpec.model_fields)
    undocumented = [
        f"{model}.{name}"
        for model, body in schema["$defs"].items()
        for name, prop in body.get("properties", {}).items()
        if "description" not in prop and model.endswith("Spec")
    ]
    assert undocumented == []


def test_paths_from_the_command_line_are_relative_to_the_working_directory(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "cfg").mkdir()
    f = tmp_path / "cfg" / "p.toml"
    f.write_text('[run]\nmode = "infer"\n[networks.generator]\ncomponent = "rrdb"\ncheckpoint = "w.pth"\n[infer]\ninputs = "imgs"\n')
    monkeypatch.chdir(tmp_path)
    spec = load_spec(f, ["networks.generator.checkpoint=weights/x.pth", "run.seed=3"])
    assert spec.networks["generator"].checkpoint == tmp_path / "weights" / "x.pth"
    assert spec.infer.inputs == [tmp_path / "cfg" / "imgs"]


def test_set_switches_a_network_between_model_and_checkpoint(tmp_path: Path) -> None:
    """--set of networks.X.model removes the file's checkpoint and the other way round (the two exclude each other),
    so one shipped example can be pointed at a catalogue model or a weights file without editing it."""
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"")
    spec_file = tmp_path / "p.toml"
    spec_file.write_text(
        '[run]\nmode = "infer"\n[networks.generator]\ncomponent = "srflow"\ncheckpoint = "w.pth"\n'
        '[networks.other]\ncomponent = "srflow"\ncheckpoint = "w.pth"\n[infer]\ninputs = ["x"]\n'
    )
    spec = load_spec(spec_file, ["networks.generator.model=bundled-srflow-x4"])
    g = spec.networks["generator"]
    assert g.model == "bundled-srflow-x4" and g.checkpoint is None
    assert spec.networks["other"].checkpoint == weights  # only the network named in the override changes
    back = load_spec(spec_file, ["networks.generator.model=bundled-srflow-x4", f"networks.generator.checkpoint={weights}"])
    assert back.networks["generator"].model is None and back.networks["generator"].checkpoint == weights
    # in the file itself both are still a mistake, and the message says how the command line switches
    spec_file.write_text(spec_file.read_text().replace('checkpoint = "w.pth"\n', 'checkpoint = "w.pth"\nmodel = "m"\n', 1))
    with pytest.raises(UserError, match="not both .*--set of one removes the other"):
        load_spec(spec_file)
