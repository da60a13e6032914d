"""Benchmark settings: LR size and batch from the environment (defaults fit a 2-core CPU)."""

from __future__ import annotations

import os

import pytest
import torch


@pytest.fixture(scope="session")
def bench_device() -> torch.device:
    name = os.environ.get("RESTOREKIT_BENCH_DEVICE", "cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@pytest.fixture(scope="session")
def bench_lr_size() -> int:
    return int(os.environ.get("RESTOREKIT_BENCH_LR", "32"))
