"""The memory-layout probe: channels_last or NCHW, whichever is faster for this model, device and dtype
(:func:`choose_layout`), kept only when both give the same output. The caller keeps the choice (the run, the
trainer's freeze rules): nothing is remembered here."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn

from .device import _GAIN, Timer, _seconds

PROBE_SIDE = 64
"""Largest LR side of the layout probe's input crop."""
PROBE_MIN_WEIGHTS = 100_000
"""Networks with fewer convolution weights than this keep NCHW without a probe (the probe would cost more than
any layout could gain)."""
LAYOUT_TOLERANCE = 1e-5
"""Largest allowed difference between the layouts' outputs, relative to max(1, |output|)."""


def _first(out: Any) -> Tensor | None:
    """The first tensor of a model's output (itself, or depth-first in tuples, lists and dicts)."""
    if isinstance(out, Tensor):
        return out
    items = out.values() if isinstance(out, dict) else out if isinstance(out, (tuple, list)) else ()
    return next((t for t in map(_first, items) if t is not None), None)


def same_output(a: Tensor, b: Tensor, tol: float = LAYOUT_TOLERANCE) -> bool:
    """Whether ``a`` and ``b`` agree within ``tol · max(1, max|a|)`` (and are both finite where ``a`` is)."""
    a, b = a.float(), b.float()
    if a.shape != b.shape:
        return False
    scale = max(1.0, float(a.abs().nan_to_num(0.0).max())) if a.numel() else 1.0
    return bool(torch.allclose(a, b, rtol=0.0, atol=tol * scale, equal_nan=True))


def probe_input(lr: Tensor, multiple: int = 1, side: int = PROBE_SIDE) -> Tensor:
    """A crop of ``lr`` (first item) of at most ``side`` pixels a side, rounded down to ``multiple``."""
    m = max(1, multiple)
    h = max(m, min(int(lr.shape[-2]), side) // m * m)
    w = max(m, min(int(lr.shape[-1]), side) // m * m)
    return lr[:1, :, :h, :w].contiguous()


def to_layout(model: nn.Module, layout: str) -> nn.Module:
    """Convert ``model``'s 4-D parameters in place to ``layout`` ("channels_last" or "contiguous")."""
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    return model.to(memory_format=fmt)


def choose_layout(
    model: nn.Module,
    lr: Tensor,
    *,
    forward: Callable[[Tensor], Any] | None = None,
    tol: float = LAYOUT_TOLERANCE,
    rounds: int = 2,
    min_weights: int = PROBE_MIN_WEIGHTS,
    timer: Timer = _seconds,
) -> str:
    """Put ``model`` in the faster memory layout for inputs like ``lr`` and return it ("channels_last" or
    "contiguous"); the caller keeps the choice.

    ``forward`` (default ``model``) is what is timed, on :func:`probe_input` of ``lr`` under no-grad; each layout
    runs ``rounds`` times after one warm-up run, interleaved, and the minimum counts. channels_last is kept only
    when its output equals the default layout's within ``tol`` and it is at least 5 % faster. Networks with fewer
    than ``min_weights`` convolution weights are not probed (NCHW). ``timer(fn, device) -> (seconds, fn())``
    measures a call (a fake clock in tests).
    """
    device = lr.device
    if sum(p.numel() for p in model.parameters() if p.dim() == 4) < min_weights:
        return "contiguous"
    fn = forward or model
    x = probe_input(lr, int(getattr(model, "size_multiple", 1) or 1))
    x_cl = x.contiguous(memory_format=torch.channels_last)
    best = {"contiguous": float("inf"), "channels_last": float("inf")}
    outs: dict[str, Tensor | None] = {}
    with torch.no_grad():
        for r in range(rounds + 1):
            for layout, inp in (("contiguous", x), ("channels_last", x_cl)):
                to_layout(model, layout)
                t, out = timer(lambda: fn(inp), device)
                if r == 0:
                    outs[layout] = _first(out)
                else:
                    best[layout] = min(best[layout], t)
    a, b = outs["contiguous"], outs["channels_last"]
    ok = a is not None and b is not None and same_output(a, b, tol)
    choice = "channels_last" if ok and best["channels_last"] < _GAIN * best["contiguous"] else "contiguous"
    to_layout(model, choice)
    return choice


def in_layout(layout: str | None, lr: Tensor) -> Tensor:
    """``lr`` in ``layout`` (what :func:`choose_layout` returned; unchanged for None or the default)."""
    if layout == "channels_last" and lr.dim() == 4:
        return lr.contiguous(memory_format=torch.channels_last)
    return lr


__all__ = [
    "LAYOUT_TOLERANCE",
    "PROBE_MIN_WEIGHTS",
    "PROBE_SIDE",
    "choose_layout",
    "in_layout",
    "probe_input",
    "same_output",
    "to_layout",
]
