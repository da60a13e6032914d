"""Running an exported artifact from Python: :class:`ExportedModel` (an ``.onnx`` file on onnxruntime, or a
``.pt2`` ExportedProgram) checks its inputs against the sidecar's size rule and maps tensors to tensors."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from ..errors import UserError

EXTRA = "pip install 'restorekit[export]'"


def require(*modules: str, why: str) -> None:
    """Import ``modules`` or stop with one line naming the missing ones and the extra that installs them."""
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise UserError(f"{why} needs {' and '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not "
                        f"installed ({EXTRA})")


def sidecar_path(artifact: str | Path) -> Path:
    """The JSON sidecar beside an artifact: ``model.onnx`` → ``model.onnx.json``."""
    p = Path(artifact)
    return p.with_name(p.name + ".json")


def check_lr_size(h: int, w: int, multiple: int, where: str) -> None:
    """An LR size this export supports: both sides positive multiples of ``multiple`` (one-line error if not)."""
    if h < 1 or w < 1 or h % multiple or w % multiple:
        raise UserError(f"{where}: LR size {h}x{w} is outside what this export supports: height and width must be "
                        f"positive multiples of {multiple} (pad the image, e.g. by reflection, and crop the result)")


def ort_session(path: str | Path, threads: int | None = None) -> Any:
    """An onnxruntime session on the CPU (and CUDA first where onnxruntime offers it)."""
    require("onnxruntime", why="running an ONNX export")
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
    return ort.InferenceSession(str(path), sess_options=opts, providers=providers)


class ExportedModel:
    """An exported graph as a callable: ``model(*inputs)`` → a tensor (one output) or a tuple of tensors.

    ``.onnx`` runs on onnxruntime (CUDA where present, else the CPU), ``.pt2`` as the ExportedProgram's module.
    With a sidecar beside the file (``<file>.json``), the LR input's size is checked against its ``size_multiple``.
    """

    def __init__(self, path: str | Path, *, threads: int | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"{self.path}: no such exported model")
        side = sidecar_path(self.path)
        self.sidecar: dict[str, Any] = json.loads(side.read_text()) if side.is_file() else {}
        self.multiple = int(self.sidecar.get("size_multiple", 1))
        self.inputs: list[str] = [i["name"] for i in self.sidecar.get("inputs", [])]
        if self.path.suffix == ".onnx":
            self.session = ort_session(self.path, threads)
            self.inputs = [i.name for i in self.session.get_inputs()]
            self.program = None
        elif self.path.suffix == ".pt2":
            self.session = None
            self.program = torch.export.load(str(self.path)).module()
        else:
            raise UserError(f"{self.path}: not an exported model (.onnx or .pt2)")

    def __call__(self, *inputs: Tensor) -> Any:
        if "lr" in self.inputs and len(inputs) == len(self.inputs):
            lr = inputs[self.inputs.index("lr")]
            check_lr_size(int(lr.shape[-2]), int(lr.shape[-1]), self.multiple, str(self.path))
        if self.program is not None:
            with torch.no_grad():
                return self.program(*inputs)
        feeds = {name: t.detach().cpu().numpy() for name, t in zip(self.inputs, inputs)}
        if len(feeds) != len(self.inputs):
            raise UserError(f"{self.path}: takes {len(self.inputs)} inputs ({', '.join(self.inputs)}), got {len(inputs)}")
        outs = [torch.from_numpy(o) for o in self.session.run(None, feeds)]
        return outs[0] if len(outs) == 1 else tuple(outs)


def as_tuple(out: Any) -> tuple[Tensor, ...]:
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def relative_error(got: Sequence[Tensor], want: Sequence[Tensor]) -> float:
    """max over outputs of ``max|got − want| / max|want|`` (the relative error the parity checks bound)."""
    worst = 0.0
    for a, b in zip(got, want):
        scale = float(b.detach().float().abs().max()) or 1.0
        worst = max(worst, float((a.detach().float() - b.detach().float()).abs().max()) / scale)
    return worst


__all__ = ["EXTRA", "ExportedModel", "as_tuple", "check_lr_size", "ort_session", "relative_error", "require",
           "sidecar_path"]
