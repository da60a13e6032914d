"""Throughput of every installed generator plugin, as a ratio against a bicubic baseline in the same process.

Run: ``python -m pytest benchmarks`` (CPU) or with ``RESTOREKIT_BENCH_DEVICE=cuda``.
Each generator is built with its default params (the published architecture sizes) and run on a random
LR batch; ``extra_info`` records megapixels/s of SR output and the slowdown against bicubic.
"""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F

from restorekit.registry import PluginRegistry


def _generators() -> list[str]:
    return PluginRegistry.load().names("generator")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _bicubic_seconds(lr: torch.Tensor, scale: int, device: torch.device, reps: int = 20) -> float:
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        F.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False)
    _sync(device)
    return (time.perf_counter() - t0) / reps


@pytest.mark.parametrize("component", _generators())
def test_generator_throughput(benchmark, component: str, bench_device: torch.device, bench_lr_size: int) -> None:
    reg = PluginRegistry.load()
    comp = reg.get("generator", component).component
    try:
        params = comp.params()
    except Exception as exc:  # noqa: BLE001 - a params model with required fields has no default size
        pytest.skip(f"{component}: no default params ({exc.__class__.__name__})")
    model = comp.build(params).to(bench_device).eval()
    scale = int(getattr(model, "scale", 1))
    mult = int(getattr(model, "size_multiple", 1))
    size = max(mult, (bench_lr_size // mult) * mult)
    lr = torch.rand(1, 3, size, size, device=bench_device)

    def step() -> torch.Tensor:
        with torch.inference_mode():
            out = model(lr)
        _sync(bench_device)
        return out

    out = benchmark.pedantic(step, rounds=3, iterations=1, warmup_rounds=1)
    assert out.shape[-2:] == (size * scale, size * scale) and torch.isfinite(out).all()
    seconds = benchmark.stats.stats.mean
    base = _bicubic_seconds(lr, scale, bench_device)
    benchmark.extra_info.update(
        {
            "device": str(bench_device),
            "lr_size": size,
            "scale": scale,
            "parameters": sum(p.numel() for p in model.parameters()),
            "sr_megapixels_per_s": (size * scale) ** 2 / seconds / 1e6,
            "slowdown_vs_bicubic": seconds / base,
        }
    )
