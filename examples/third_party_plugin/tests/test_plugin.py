"""The plugin's own tests: restorekit's conformance kit over every component, plus one test of the installed entry point.

Run with ``pip install -e ".[test]" && pytest`` in this folder.
"""

from __future__ import annotations

import importlib.metadata as md
from pathlib import Path

import pytest
import torch
from restorekit.testing import check_generator, check_loss, check_validator, make_registry

import restorekit_espcn.plugin

SMALL = {"scale": 2, "features": [8, 4]}


def registry():
    return make_registry(("espcn", restorekit_espcn.plugin))


def test_espcn_passes_the_kit(tmp_path: Path) -> None:
    model = check_generator(registry(), "espcn", SMALL, tmp_dir=tmp_path)
    assert model(torch.rand(1, 3, 5, 7)).shape == (1, 3, 10, 14)


def test_bicubic_passes_the_kit(tmp_path: Path) -> None:
    check_generator(registry(), "bicubic", {"scale": 3}, tmp_dir=tmp_path)  # no weights: nothing to train


def test_gradient_loss_passes_the_kit_and_trains_espcn(tmp_path: Path) -> None:
    value = check_loss(registry(), "gradient", tmp_dir=tmp_path, generator=("espcn", SMALL))
    assert value > 0


def test_mae_passes_the_kit_and_is_zero_for_a_perfect_model(tmp_path: Path) -> None:
    check_validator(registry(), "mae", generator=("espcn", SMALL), tmp_dir=tmp_path)
    from restorekit import Sample, ValidationContext

    from restorekit_espcn import MAE, MAEParams

    hq = torch.rand(1, 3, 8, 8)
    result = MAE(MAEParams())(lambda lq: hq, [Sample("a", hq[..., ::2, ::2], hq)],
                             ValidationContext(device=torch.device("cpu"), scale=2))
    assert result.metrics == {"mae": 0.0} and result.per_image == [{"name": "a", "mae": 0.0}]


def test_installed_entry_point_lists_every_component() -> None:
    eps = {ep.name: ep for ep in md.entry_points(group="restorekit.plugins")}
    if "espcn" not in eps:
        pytest.skip("restorekit-espcn is not installed (pip install -e .)")
    from restorekit import PluginRegistry

    reg = PluginRegistry.load()
    assert {i.name: i.status for i in reg.plugin_infos()}["espcn"] == "ok"
    assert reg.get("generator", "espcn").plugin == "espcn" and reg.get("loss", "gradient").plugin == "espcn"
