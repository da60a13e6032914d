"""Packaging: the wheel's top-level names, and a third-party plugin installed with pip and used by name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from fakes import build_copy


ROOT = Path(__file__).resolve().parents[1]


def _pip(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
        cwd=cwd, capture_output=True, text=True, timeout=300,
    )


@pytest.mark.slow  # pip builds a wheel in a subprocess
def test_wheel_holds_only_namespaced_packages(tmp_path: Path) -> None:
    src = build_copy(ROOT, tmp_path / "src")
    had_build = (ROOT / "build").exists()
    result = _pip("wheel", str(src), "--no-deps", "--no-build-isolation", "-w", str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    assert (ROOT / "build").exists() == had_build  # built in the copy: nothing left in the tree
    (wheel,) = tmp_path.glob("restorekit-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"restorekit", "restorekit_rrdb", "restorekit_srflow", "restorekit_validators"}
    assert "restorekit/registry.toml" in names and "restorekit/py.typed" in names
    assert "restorekit/catalogue.toml" in names  # the model catalogue is package data
    for bundled in (ROOT / "core" / "models").glob("*.safetensors"):  # the bundled models ship in the wheel
        assert f"restorekit/models/{bundled.name}" in names
    eps = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(eps).decode()
    assert "[restorekit.plugins]" in text and "restore-run = restorekit.cli:main" in text


@pytest.mark.slow
def test_third_party_plugin_installs_and_runs_without_touching_restorekit(tmp_path: Path, sample_png) -> None:
    """pip-install examples/third_party_plugin (into a target folder on PYTHONPATH) and run a pipeline."""
    site = tmp_path / "site"
    plugin_build = ROOT / "examples" / "third_party_plugin" / "build"
    had_build = plugin_build.exists()
    result = _pip(
        "install", "--no-deps", "--no-build-isolation", "--target", str(site),
        str(build_copy(ROOT / "examples" / "third_party_plugin", tmp_path / "plugin_src")),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert plugin_build.exists() == had_build
    img = sample_png("chelsea", size=24, folder=tmp_path / "in")
    pipeline = tmp_path / "pipeline.toml"
    pipeline.write_text(
        '[run]\nmode = "infer"\ndevice = "cpu"\noutput_dir = "out"\n'
        '[networks.generator]\ncomponent = "bicubic"\nparams = { scale = 3 }\n'
        '[infer]\ninputs = ["in"]\n'
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    exe = [sys.executable, "-c", "import sys; from restorekit.cli import main; sys.exit(main())"]
    listed = subprocess.run([*exe, "--list-plugins", "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert listed.returncode == 0, listed.stderr
    plugins = {p["name"]: p for p in json.loads(listed.stdout)["plugins"]}
    assert plugins["espcn"]["status"] == "ok"
    assert plugins["espcn"]["distribution"] == "restorekit-espcn"
    assert plugins["espcn"]["components"] == {"generator": ["espcn", "bicubic"], "loss": ["gradient"],
                                              "validator": ["mae"]}
    run = subprocess.run([*exe, str(pipeline)], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    import imageio.v3 as iio

    out = iio.imread(tmp_path / "out" / "infer" / "chelsea.png")
    assert out.shape == (72, 72, 3)
    assert img.is_file()

