"""Throughput of every installed generator plugin at its default (published) size: fast path vs plain path vs
bicubic, measured in this process (``restorekit.bench``, the code behind ``restore-run --benchmark``)."""

from __future__ import annotations

import pytest
import torch
from restorekit.registry import PluginRegistry


def _generators() -> list[str]:
    return PluginRegistry.load().names("generator")


@pytest.mark.parametrize("component", _generators())
def test_generator_throughput(measure, component: str, bench_lr_size: int) -> None:
    comp = PluginRegistry.load().get("generator", component).component
    try:
        params = comp.params()
    except Exception as exc:  # noqa: BLE001 - a params model with required fields has no default size
        pytest.skip(f"{component}: no default params ({exc.__class__.__name__})")
    torch.manual_seed(0)
    rows = measure(component, comp.build(params), size=bench_lr_size)
    forward = next(r for r in rows if r.path == "forward")
    assert forward.max_abs_diff is not None and forward.max_abs_diff <= 1e-4  # fast path = plain path
    assert forward.megapixels_per_s > 0 and forward.vs_bicubic is not None and forward.vs_bicubic > 1.0
