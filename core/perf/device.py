"""Device helpers of the fast paths: waiting for queued work, timing a call, the TF32 switch and pinned
host-to-device copies."""

from __future__ import annotations

import time
from typing import Any, Callable

import torch
from torch import Tensor

_GAIN = 0.95
"""A faster path must take under 95 % of the other's time to be chosen (noise margin)."""


def sync(device: torch.device | str) -> None:
    """Wait for the device's queued work (CUDA); a no-op on the CPU."""
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


Timer = Callable[[Callable[[], Any], torch.device], tuple[float, Any]]
"""How a chooser measures a call: ``timer(fn, device) -> (seconds, fn())``."""


def _seconds(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def set_tf32(enabled: bool) -> None:
    """``run.tf32``: allow (or forbid) TF32 in CUDA matrix products and cuDNN convolutions. Without it fp32 means
    IEEE fp32 everywhere (torch's own default lets cuDNN convolutions use TF32)."""
    mode = "tf32" if enabled else "ieee"
    if hasattr(torch.backends, "fp32_precision"):
        torch.backends.cuda.matmul.fp32_precision = mode
        torch.backends.cudnn.conv.fp32_precision = mode
    else:  # pragma: no cover - torch < 2.9
        torch.backends.cuda.matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled


def tf32_enabled() -> bool:
    """Whether CUDA matrix products may use TF32 now."""
    if hasattr(torch.backends, "fp32_precision"):
        return torch.backends.cuda.matmul.fp32_precision == "tf32"
    return bool(torch.backends.cuda.matmul.allow_tf32)  # pragma: no cover


def pinned(x: Tensor, device: torch.device) -> Tensor:
    """``x`` moved to ``device``; a CPU tensor bound for CUDA goes through pinned memory, asynchronously."""
    if device.type == "cuda" and x.device.type == "cpu":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


__all__ = ["pinned", "set_tf32", "sync", "tf32_enabled"]
