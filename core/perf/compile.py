"""``run.compile``: :func:`maybe_compile` compiles a model with ``torch.compile`` and keeps it only when it
runs faster on the probe input."""

from __future__ import annotations

import warnings
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from ..components import FlowModel
from ..errors import one_line
from .device import _GAIN, _seconds
from .layout import probe_input


def _compile_targets(model: nn.Module) -> list[nn.Module]:
    """What ``run.compile`` compiles: the model's forward, or for a flow (whose work is ``decode``, not
    ``forward``) each direct submodule with a forward of its own (SRFlow: the conditional RRDB)."""
    if not isinstance(model, FlowModel):
        return [model]
    return [c for c in model.children() if type(c).forward is not nn.Module.forward]


def _uncompile(targets: Sequence[nn.Module]) -> None:
    for t in targets:
        t._compiled_call_impl = None  # what nn.Module.compile() set


def maybe_compile(
    model: nn.Module, lr: Tensor, *, forward: Callable[[nn.Module, Tensor], Any] | None = None, rounds: int = 2,
    warn: Callable[[str], None] | None = None,
) -> tuple[nn.Module, str]:
    """``run.compile``: compile ``model`` in place (``nn.Module.compile``: its forward, or for a flow the
    submodules of :func:`_compile_targets`) and keep it only if the probe input runs faster; returns
    ``(model, note)`` where ``note`` says what happened in one line (also a warning when compiling is not
    possible here, which restore-run shows as one line)."""
    say = warn or (lambda msg: warnings.warn(msg, stacklevel=3))
    run = forward or (lambda m, x: m(x))
    x = probe_input(lr, int(getattr(model, "size_multiple", 1) or 1))
    device = lr.device
    targets = _compile_targets(model)
    if not targets:
        return model, "run.compile: nothing to compile in this network; running uncompiled"
    best_plain = float("inf")
    with torch.no_grad():
        for _ in range(rounds):
            best_plain = min(best_plain, _seconds(lambda: run(model, x), device)[0])
        try:
            for t in targets:
                t.compile()
            run(model, x)  # compiles
        except Exception as exc:  # noqa: BLE001 - any backend failure means: run uncompiled
            _uncompile(targets)
            note = f"run.compile: torch.compile is not available here ({one_line(exc, named=True)}); running uncompiled"
            say(note)
            return model, note
        best_comp = float("inf")
        for _ in range(rounds):
            best_comp = min(best_comp, _seconds(lambda: run(model, x), device)[0])
    if best_comp < _GAIN * best_plain:
        return model, f"run.compile: compiled ({best_plain / best_comp:.2f}x on the probe)"
    _uncompile(targets)
    return model, f"run.compile: not faster here ({best_plain / best_comp:.2f}x on the probe); running uncompiled"


__all__ = ["maybe_compile"]
