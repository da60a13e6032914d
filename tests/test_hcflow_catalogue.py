"""HCFlow in the model catalogue: the plugin's entries (``restorekit_catalogue`` hook), ``restorekit.load(name)`` and
``restore-run --model … --temperature`` through a local HTTP server on 127.0.0.1 (never the internet)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import torch

import restorekit
from restorekit import catalogue as cat
from restorekit.cli import main
from fakes import Server, catalogue_file

hc = pytest.importorskip("restorekit_hcflow", reason="restorekit-hcflow is not installed (pip install -e plugins/hcflow)")

RELEASE = "https://github.com/JingyunLiang/HCFlow/releases/download/v0.0/"
FIXTURE_PARAMS = {  # tests/fixtures/hcflow_x4 (reduced size, the 4x wiring)
    "steps_per_level": 4, "cond_steps_per_level": [2, 3], "main_coupling_hidden": 24, "cond_coupling_hidden": 20,
    "cond_rrdb_blocks": [1, 2], "cond_features": 16, "cond_growth": 8,
}
FIXTURE_COUNT = 368_713


@pytest.fixture
def registry() -> restorekit.PluginRegistry:
    """The installed plugins, from their entry points (restorekit-hcflow is a separate distribution)."""
    return restorekit.PluginRegistry.load()


def _plugin_entries(registry: restorekit.PluginRegistry) -> dict[str, cat.ModelEntry]:
    return {name: e for name, e in cat.load_catalogue(registry=registry).items() if e.component == "hcflow"}


def test_the_plugin_adds_the_published_models(registry: Any) -> None:
    entries = _plugin_entries(registry)
    assert sorted(entries) == ["hcflow-celeba-8x", "hcflow-df2k-4x"]
    df2k, celeba = entries["hcflow-df2k-4x"], entries["hcflow-celeba-8x"]
    assert df2k.urls == [RELEASE + "SR_DF2K_X4_HCFlow++.pth"]
    assert celeba.urls == [RELEASE + "SR_CelebA_X8_HCFlow++.pth"]
    assert (df2k.scale, df2k.parameters, df2k.preset) == (4, 23_232_539, "hcflow-df2k-4x")
    assert (celeba.scale, celeba.parameters, celeba.preset) == (8, 27_017_723, "hcflow-celeba-8x")
    assert "Apache-2.0" in df2k.licence and "DIV2K" in df2k.licence and "academic" in df2k.licence
    assert "Apache-2.0" in celeba.licence and "CelebA" in celeba.licence and "non-commercial" in celeba.licence
    assert df2k.sha256 is None and celeba.sha256 is None  # not published: recorded at the first download
    assert "hcflow_README" not in df2k.source and df2k.source.endswith("catalogue.toml")


@pytest.mark.parametrize("name", ["hcflow-df2k-4x", "hcflow-celeba-8x"])
def test_the_presets_build_networks_of_the_catalogued_size(registry: Any, name: str) -> None:
    e = _plugin_entries(registry)[name]
    with torch.device("meta"):
        net = hc.build_hcflow(hc.HCFlowParams(preset=e.preset))
    assert cat.count_parameters(net) == e.parameters and net.scale == e.scale


@pytest.fixture
def fixture_entry(
    tmp_path: Path, server: Server, home: Path, fixtures: Path, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> bytes:
    """``hcflow-df2k-4x`` as the plugin declares it, but downloading the fixture-format file from 127.0.0.1 (its
    size needs the fixture's params and parameter count); it replaces the plugin's entry through
    $RESTOREKIT_CATALOGUE."""
    data = (fixtures / "hcflow_x4" / "official.pth").read_bytes()
    plugin = _plugin_entries(restorekit.PluginRegistry.load())["hcflow-df2k-4x"]
    local = plugin.model_copy(update={"urls": [server.add("/v0.0/SR_DF2K_X4_HCFlow++.pth", data)],
                                      "params": FIXTURE_PARAMS, "parameters": FIXTURE_COUNT})
    monkeypatch.setenv(cat.ENV_CATALOGUE, str(catalogue_file(tmp_path, local)))
    return data


def test_load_by_name_downloads_records_the_hash_and_matches_the_official_output(
    fixture_entry: bytes, home: Path, fixtures: Path  # noqa: F811
) -> None:
    from safetensors.torch import load_file

    net = restorekit.load("hcflow-df2k-4x")
    path = home / "models" / "hcflow-df2k-4x" / "SR_DF2K_X4_HCFlow++.pth"
    assert path.read_bytes() == fixture_entry
    assert cat.read_record(path) == hashlib.sha256(fixture_entry).hexdigest()
    assert isinstance(net, hc.HCFlowNet) and not net.training
    exp = load_file(str(fixtures / "hcflow_x4" / "expected.safetensors"))
    with torch.no_grad():
        assert (net(exp["input.lr"]) - exp["reverse_t0.sr"]).abs().max().item() <= 1e-5
    changed = bytearray(fixture_entry)
    changed[-10] ^= 0xFF
    path.write_bytes(bytes(changed))  # a changed file is refused at the next use
    with pytest.raises(restorekit.UserError, match=r"sha256 [0-9a-f]{64} differs from [0-9a-f]{64} recorded"):
        restorekit.load("hcflow-df2k-4x")


def test_restore_run_model_with_a_temperature(
    fixture_entry: bytes, home: Path, tmp_path: Path, sample_png: Any, capsys: pytest.CaptureFixture[str]  # noqa: F811
) -> None:
    import imageio.v3 as iio

    img = sample_png(size=10)
    out = tmp_path / "out"
    code = main(["--model", "hcflow-df2k-4x", "--input", str(img), "--output", str(out), "--temperature", "0.9",
                 "--device", "cpu", "--seed", "5"])
    assert code == 0, capsys.readouterr().err
    files = sorted(p.name for p in out.glob("*.png"))
    assert len(files) == 1, files
    sr = iio.imread(out / files[0])
    assert sr.shape == (40, 40, 3)
    again = tmp_path / "again"
    assert main(["--model", "hcflow-df2k-4x", "--input", str(img), "--output", str(again), "--temperature", "0.9",
                 "--device", "cpu", "--seed", "5"]) == 0
    assert (iio.imread(again / files[0]) == sr).all()  # one seed, one sample


def test_list_models_shows_the_plugin_entries(capsys: pytest.CaptureFixture[str], home: Path) -> None:  # noqa: F811
    assert main(["--list-models"]) == 0
    out = capsys.readouterr().out
    assert "hcflow-df2k-4x" in out and "hcflow-celeba-8x" in out and "CelebA" in out
