"""Benchmark settings from the environment (defaults fit a 2-core CPU), and the shared case runner.

``python -m pytest benchmarks`` runs the same measuring code as ``restore-run --benchmark`` (``restorekit.bench``):
every test runs one case — plain path and fast path interleaved in this process — inside ``benchmark.pedantic``,
and stores the case's ratios in ``extra_info``. ``--benchmark-disable`` runs each case once (a smoke run).
Environment: ``RESTOREKIT_BENCH_DEVICE`` (default cuda when available), ``RESTOREKIT_BENCH_LR`` (LR side, 32),
``RESTOREKIT_BENCH_REPEATS`` (5).
"""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any, Callable

import pytest
import torch
from restorekit.bench import BenchConfig, BenchModel, Row, run_case


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """No workers: pyproject.toml's ``-n auto`` spreads the unit tests over every core, but a benchmark timed beside
    other work measures the contention (and pytest-benchmark switches itself off under pytest-xdist)."""
    return 0


@pytest.fixture(scope="session")
def bench_device() -> torch.device:
    name = os.environ.get("RESTOREKIT_BENCH_DEVICE", "cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@pytest.fixture(scope="session")
def bench_lr_size() -> int:
    return int(os.environ.get("RESTOREKIT_BENCH_LR", "32"))


@pytest.fixture(scope="session")
def bench_repeats() -> int:
    return int(os.environ.get("RESTOREKIT_BENCH_REPEATS", "5"))


@pytest.fixture
def measure(benchmark: Any, bench_device: torch.device, bench_repeats: int) -> Callable[..., list[Row]]:
    """``measure(name, module, size=, batch=, samples=)`` → the case's rows (forward, sample for flows, bicubic),
    run under pytest-benchmark; the rows go to ``extra_info``."""

    def run(name: str, module: torch.nn.Module, *, size: int, batch: int = 1, samples: int = 0,
            precision: str = "fp32") -> list[Row]:
        cfg = BenchConfig(samples=samples, repeats=bench_repeats, warmup=1)
        flow = all(callable(getattr(module, m, None)) for m in ("encode", "decode", "latent_shapes"))
        bm = BenchModel(name, module.eval(), flow)
        rows: list[Row] = benchmark.pedantic(
            run_case, args=(bm, bench_device, precision, size, batch, cfg, lambda _m: None), rounds=1, iterations=1
        )
        benchmark.extra_info["rows"] = [
            {k: v for k, v in asdict(r).items() if k != "times_ms"} for r in rows
        ]
        return rows

    return run
