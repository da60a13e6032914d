""":func:`check_export`: a generator whose component claims ``exportable=True`` exports (``torch.export``, and
ONNX on onnxruntime where the ``export`` extra is installed) to a graph equal to eager at two LR sizes the trace
never saw."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Sequence

from torch import nn

from ..components import FlowModel
from ..errors import UserError
from ..export import TOLERANCE, export_model
from .kit import fail, work_folder


def onnx_available() -> bool:
    """Whether onnx, onnxscript and onnxruntime are installed (``pip install 'restorekit[export]'``)."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxscript", "onnxruntime"))


def check_export(model: nn.Module, *, name: str = "generator", tmp_dir: str | Path | None = None,
                 formats: Sequence[str] | None = None) -> dict[str, float]:
    """Export ``model``'s graphs (``forward``; a flow's ``sample`` and ``mean``) to every format of ``formats``
    (default: each to ``.pt2``, and the first to ``.onnx`` too when the export extra is installed), run each
    artifact at two unseen sizes and compare it with eager. Returns the relative error per artifact; raises AssertionError naming the graph that
    cannot export or differs by more than 1e-4 relative."""
    kinds = ["sample", "mean"] if isinstance(model, FlowModel) else ["forward"]
    plan = [(kind, suffix) for kind in kinds for suffix in formats] if formats is not None else (
        [(kind, ".pt2") for kind in kinds] + ([(kinds[0], ".onnx")] if onnx_available() else []))
    errors: dict[str, float] = {}
    with work_folder(tmp_dir) as root:
        for kind, suffix in plan:
            path = root / f"kit_export_{kind}{suffix}"
            try:
                measured = export_model(model, path, graph=kind, refuse=False, name=name).max_relative_error
            except UserError as exc:
                raise fail(name, f"claims exportable=True, but the {kind!r} graph does not export to {suffix}: "
                                 f"{exc}") from None
            err = float(measured) if measured is not None else float("inf")  # check=True always measures
            if err > TOLERANCE["fp32"]:
                raise fail(name, f"the exported {kind!r} graph ({suffix}) differs from eager by {err:.2e} relative "
                                 f"(limit {TOLERANCE['fp32']:.0e})")
            errors[path.name] = err
    return errors


__all__ = ["check_export", "onnx_available"]
