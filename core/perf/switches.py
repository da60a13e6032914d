"""Module switches: attributes a network's modules declare (class attributes, off as built) and restorekit's fast
paths switch on — each the same function, computed with less memory or arithmetic. A module opts in simply by
having the attribute; the core knows only the names."""

from __future__ import annotations

from typing import Iterable

from torch import nn

INFERENCE_SWITCHES = ("factor_cond",)
"""Module attributes :func:`fast_inference` sets (restore-run's inference and the benchmark's fast path).
``factor_cond`` (SRFlow's network): the couplings convolve the upsampled part of the conditional maps above LR at
LR resolution (×2 at 2·LR, ×4 at 4·LR) — equal up to float rounding, 4·min(f, 3)² instead of 9·f² multiply-adds per
channel pair and LR pixel for those channels."""


def set_switches(model: nn.Module, names: Iterable[str], enabled: bool = True) -> int:
    """Set every attribute of ``names`` that a module of ``model`` has to ``enabled``; returns how many modules
    took one."""
    names = tuple(names)
    count = 0
    for m in model.modules():
        found = [name for name in names if hasattr(m, name)]
        for name in found:
            setattr(m, name, enabled)
        count += bool(found)
    return count


def fast_inference(model: nn.Module, enabled: bool = True) -> int:
    """Switch on the inference fast paths a network's modules offer (:data:`INFERENCE_SWITCHES`); returns how many
    modules took one."""
    return set_switches(model, INFERENCE_SWITCHES, enabled)


__all__ = ["INFERENCE_SWITCHES", "fast_inference", "set_switches"]
