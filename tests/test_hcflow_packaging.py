"""restorekit-hcflow is its own distribution: its wheel holds only ``restorekit_hcflow`` (with its catalogue file)
and registers the ``hcflow`` plugin through the ``restorekit.plugins`` entry point; restorekit's wheel does not hold
it, and the installed plugin is listed by ``restore-run --list-plugins``."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from fakes import build_copy

pytest.importorskip("restorekit_hcflow", reason="restorekit-hcflow is not installed (pip install -e plugins/hcflow)")

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # pip builds a wheel in a subprocess
def test_the_plugin_wheel_holds_only_its_package_and_its_entry_point(tmp_path: Path) -> None:
    src = build_copy(ROOT / "plugins" / "hcflow", tmp_path / "src")  # nothing built in the tree
    had_build = (ROOT / "plugins" / "hcflow" / "build").exists()
    result = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "wheel", str(src),
         "--no-deps", "--no-build-isolation", "-w", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (ROOT / "plugins" / "hcflow" / "build").exists() == had_build
    (wheel,) = tmp_path.glob("restorekit_hcflow-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names if ".dist-info" not in n.split("/")[0]} == {"restorekit_hcflow"}
    assert "restorekit_hcflow/catalogue.toml" in names and "restorekit_hcflow/plugin.py" in names
    eps = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "[restorekit.plugins]" in eps and "hcflow = restorekit_hcflow.plugin" in eps
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert "Name: restorekit-hcflow" in meta and "Requires-Dist: restorekit" in meta


def test_list_plugins_shows_the_installed_distribution(capsys: pytest.CaptureFixture[str]) -> None:
    from restorekit.cli import main

    assert main(["--list-plugins", "--json"]) == 0  # the plugins of the installed entry points, as restore-run sees them
    plugins = {p["name"]: p for p in json.loads(capsys.readouterr().out)["plugins"]}
    assert plugins["hcflow"]["status"] == "ok"
    assert plugins["hcflow"]["distribution"] == "restorekit-hcflow"
    assert plugins["hcflow"]["components"] == {"generator": ["hcflow"]}
