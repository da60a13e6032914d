"""Exporting generators for deployment (``restore-run export``, :func:`restorekit.export_model`; docs/deploy.md).

* :mod:`.graph`: what a generator offers — :class:`ExportGraph`, the :class:`Exportable` protocol (flows build
  their own graphs), :func:`graph_for` (a plain generator's module is its own ``forward`` graph);
* :mod:`.writer`: :func:`export_model` — one ``torch.export`` trace with dynamic batch/height/width, written as
  ``.pt2`` or ONNX (``torch.onnx.export``), checked against eager at two unseen sizes, written atomically beside its
  JSON sidecar;
* :mod:`.runtime`: :class:`ExportedModel` — an artifact as a callable (onnxruntime or the ExportedProgram), the
  size rule checked; :func:`require` (the optional ``export`` extra's one-line error).

onnx, onnxscript and onnxruntime are imported only when an ONNX file is written or run.
"""

from .graph import GRAPH_KINDS, ExportGraph, Exportable, default_kind, graph_for
from .runtime import ExportedModel, relative_error, require, sidecar_path
from .writer import CHECK_SIZES, DEFAULT_OPSET, FORMATS, TOLERANCE, ExportResult, export_model, parity

__all__ = [
    "CHECK_SIZES",
    "DEFAULT_OPSET",
    "FORMATS",
    "GRAPH_KINDS",
    "TOLERANCE",
    "ExportGraph",
    "ExportResult",
    "Exportable",
    "ExportedModel",
    "default_kind",
    "export_model",
    "graph_for",
    "parity",
    "relative_error",
    "require",
    "sidecar_path",
]
