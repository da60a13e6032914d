"""``restorekit.export_model``: a generator to an ONNX file or a ``torch.export`` program (``.pt2``), checked
against eager and written atomically with its JSON sidecar.

Both formats start from one ``torch.export`` trace of the model's :class:`~restorekit.ExportGraph` with every input's
batch, height and width dynamic (``Dim.DYNAMIC``); ONNX is then ``torch.onnx.export`` of that program (the dynamo
exporter, which needs ``onnx`` and ``onnxscript``). Before anything is written the artifact is run at two LR sizes
and batch sizes the trace never saw and compared with eager (``1e-4`` relative in fp32); the artifact and its sidecar
then replace their destinations (temporary files renamed, :func:`restorekit.files.atomic_write`).
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import io
import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import Tensor, nn

from ..components import FlowModel
from ..errors import UserError, one_line
from ..files import atomic_write, ensure_dir, write_text
from .graph import ExportGraph, graph_for
from .runtime import ExportedModel, as_tuple, relative_error, require, sidecar_path

FORMATS = {".onnx": "onnx", ".pt2": "torch.export"}
DEFAULT_OPSET = 18
TOLERANCE = {"fp32": 1e-4, "fp16": 2e-2}
"""Largest relative error (max|export − eager| / max|eager|) accepted per precision (fp16 against fp32 eager)."""
EXAMPLE_UNITS = (5, 7)
"""The trace's LR size in units of ``size_multiple`` (batch 2): odd, unequal, so that no size is mistaken for another."""
CHECK_SIZES = ((1, 3, 4), (3, 4, 3))
"""(batch, height units, width units) of the parity runs: sizes the trace never saw."""


@dataclass
class ExportResult:
    """What :func:`export_model` wrote: the artifact, its sidecar (path and contents) and the parity it measured."""

    path: Path
    sidecar_path: Path
    sidecar: dict[str, Any]
    max_relative_error: float | None


def _channels(model: nn.Module) -> int:
    params = getattr(model, "arch_params", None) or {}
    for key in ("in_nc", "in_channels", "channels"):
        if isinstance(params.get(key), int):
            return int(params[key])
    return int(getattr(model, "in_nc", 3) or 3)


def _dynamic_shapes(module: nn.Module, inputs: tuple[Tensor, ...]) -> tuple[Any, ...]:
    """Batch, height and width of every input dynamic, shaped like ``forward``'s signature (``*args`` a tuple)."""
    def dims() -> dict[int, Any]:
        return {0: torch.export.Dim.DYNAMIC, 2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC}

    out: list[Any] = []
    i = 0
    for p in inspect.signature(module.forward).parameters.values():
        if p.kind is p.VAR_POSITIONAL:
            out.append(tuple(dims() for _ in inputs[i:]))
            i = len(inputs)
        elif i < len(inputs):
            out.append(dims())
            i += 1
    return tuple(out)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporters' progress prints, warnings and log lines kept off the console."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch._dynamo", "torch.export", "torch.fx", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


@contextlib.contextmanager
def _tracing_flags() -> Iterator[None]:
    """torch's default TF32 flags while tracing: torch.export reads the legacy ``cudnn.allow_tf32``, which raises once
    the new per-backend flags were set (as ``run.tf32`` and the benchmark's precisions do). Tracing computes nothing
    on a GPU, so the flags change no number."""
    cudnn = getattr(torch.backends.cudnn, "conv", None)
    if cudnn is None or not hasattr(cudnn, "fp32_precision"):  # pragma: no cover - torch < 2.9
        yield
        return
    before = (torch.backends.cudnn.conv.fp32_precision, torch.backends.cudnn.rnn.fp32_precision)
    torch.backends.cudnn.conv.fp32_precision = torch.backends.cudnn.rnn.fp32_precision = "tf32"
    try:
        yield
    finally:
        torch.backends.cudnn.conv.fp32_precision, torch.backends.cudnn.rnn.fp32_precision = before


def check_output(output: Path) -> str:
    """The format of ``output`` (from its suffix), its folder made; one-line errors for anything unwritable."""
    fmt = FORMATS.get(output.suffix.lower())
    if fmt is None:
        raise UserError(f"--output {output}: unknown export format {output.suffix or '(no suffix)'!r}; "
                        "name an .onnx or a .pt2 file")
    if output.is_dir():
        raise UserError(f"--output {output}: is a folder; name an .onnx or a .pt2 file")
    folder = ensure_dir(output.parent if str(output.parent) else Path("."), "--output")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"--output {output}: the folder {folder} is not writable")
    for p in (output, sidecar_path(output)):
        if p.exists() and not os.access(p, os.W_OK):
            raise UserError(f"--output {output}: {p} exists and is not writable")
    return fmt


def _lr(model: nn.Module, batch: int, hu: int, wu: int, seed: int) -> Tensor:
    m = int(getattr(model, "size_multiple", 1) or 1)
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(batch, _channels(model), m * hu, m * wu, generator=gen)


def _cast(inputs: tuple[Tensor, ...], dtype: torch.dtype) -> tuple[Tensor, ...]:
    return tuple(t.to(dtype) for t in inputs)


def trace(graph: ExportGraph, model: nn.Module, precision: str, name: str) -> torch.export.ExportedProgram:
    """``torch.export`` of the graph at the example size, every batch/height/width dynamic; a failure is one line."""
    module = graph.module.eval()
    dtype = torch.float16 if precision == "fp16" else torch.float32
    if precision == "fp16":
        module = copy.deepcopy(module).half()
    inputs = _cast(graph.make_inputs(_lr(model, 2, *EXAMPLE_UNITS, seed=0)), dtype)
    try:
        with torch.no_grad(), _quiet(), _tracing_flags():
            return torch.export.export(module, inputs, dynamic_shapes=_dynamic_shapes(module, inputs))
    except Exception as exc:  # noqa: BLE001 - whatever the tracer raises, the user gets one line
        raise UserError(f"{name}: cannot export the {graph.kind!r} graph: torch.export failed "
                        f"({one_line(exc, named=True)})") from None


def _write_onnx(program: torch.export.ExportedProgram, graph: ExportGraph, path: Path, opset: int, name: str) -> None:
    try:
        with _quiet(), _tracing_flags():
            torch.onnx.export(program, (), str(path), input_names=list(graph.inputs),
                              output_names=list(graph.outputs), opset_version=opset, external_data=False,
                              dynamo=True)
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"{name}: cannot write ONNX opset {opset}: {one_line(exc, named=True)}") from None


def parity(artifact: Path, graph: ExportGraph, model: nn.Module, precision: str,
           sizes: tuple[tuple[int, int, int], ...] = CHECK_SIZES, seed: int = 1) -> float:
    """The largest relative error of the artifact against ``graph.reference`` (eager, fp32) over ``sizes``
    ((batch, height units, width units) of ``size_multiple``)."""
    runner = ExportedModel(artifact)
    dtype = torch.float16 if precision == "fp16" else torch.float32
    worst = 0.0
    for k, (b, hu, wu) in enumerate(sizes):
        inputs = graph.make_inputs(_lr(model, b, hu, wu, seed=seed + k))
        with torch.no_grad():
            want = as_tuple(graph.reference(*inputs))
            got = as_tuple(runner(*_cast(inputs, dtype)))
        if len(got) != len(want) or any(tuple(a.shape) != tuple(w.shape) for a, w in zip(got, want)):
            raise UserError(f"{artifact.name}: the exported graph's outputs {[tuple(a.shape) for a in got]} differ "
                            f"from eager's {[tuple(w.shape) for w in want]}")
        worst = max(worst, relative_error(got, want))
    return worst


def _source(model: Any, registry: Any) -> tuple[nn.Module, Path | None, str]:
    """The module, the checkpoint file it came from (None for a module given as such) and a name for messages."""
    if isinstance(model, nn.Module):
        return model, None, type(model).__name__
    from ..api import resolve
    from ..catalogue import model_path
    from ..plan.weights import build_generator
    from ..registry import PluginRegistry

    text = str(model)
    gen = resolve(text, registry=registry or PluginRegistry.load())
    module = build_generator(gen).eval()  # the network as built: NCHW, no fast-path switches; weights read once
    path = gen.path if gen.entry is None else model_path(gen.entry)  # a catalogue file: fetched by the build
    return module, path, text


def _latent_table(model: nn.Module) -> list[dict[str, Any]]:
    m = int(getattr(model, "size_multiple", 1) or 1)
    rows = []
    for side in (16, 32, 64, 128):
        h = max(m, side // m * m)
        rows.append({"lr": [h, h], "latents": [list(s) for s in model.latent_shapes((1, _channels(model), h, h))]})
    return rows


def sidecar(model: nn.Module, graph: ExportGraph, fmt: str, precision: str, opset: int | None,
            source: Path | None, error: float | None, name: str) -> dict[str, Any]:
    """The sidecar's contents: what a runtime needs to feed the artifact and read its output."""
    from .. import __version__
    from ..provenance import file_sha256

    scale = int(getattr(model, "scale", 1) or 1)
    m = int(getattr(model, "size_multiple", 1) or 1)
    dims: dict[str, list[Any]] = {"lr": ["batch", _channels(model), "height", "width"],
                                  "hr": ["batch", _channels(model), f"height*{scale}", f"width*{scale}"]}
    if isinstance(model, FlowModel):  # z<i>: (batch, C, height·r, width·r) at LR height × width
        h0 = 16 * m
        for i, (c, hh, ww) in enumerate(model.latent_shapes((1, _channels(model), h0, h0))):
            dims[f"z{i}"] = ["batch", int(c), f"height*{hh / h0:g}", f"width*{ww / h0:g}"]
    data: dict[str, Any] = {
        "format": fmt, "graph": graph.kind, "model": name,
        "inputs": [{"name": n, "dims": dims.get(n, ["batch", "channels", "height", "width"])} for n in graph.inputs],
        "outputs": [{"name": n, "dims": dims.get(n, ["batch", "channels", "height", "width"])} if n != "sr" else
                    {"name": n, "dims": ["batch", _channels(model), f"height*{scale}", f"width*{scale}"]}
                    for n in graph.outputs],
        "scale": scale, "size_multiple": m,
        "lr_sizes": f"height and width positive multiples of {m}; batch, height and width dynamic",
        "input_range": [0.0, 1.0], "output_range": "about [0, 1], not clamped: clip before quantising",
        "precision": precision, "dtype": "float16" if precision == "fp16" else "float32",
        "opset": opset, "arch_params": dict(getattr(model, "arch_params", {}) or {}),
        "source": {"file": str(source) if source else None, "sha256": file_sha256(source) if source else None},
        "parity": {"max_relative_error": error, "tolerance": TOLERANCE[precision],
                   "against": "eager PyTorch fp32", "sizes": [list(s) for s in CHECK_SIZES]},
        "restorekit": __version__, "torch": torch.__version__,
    }
    if isinstance(model, FlowModel):
        data["flow"] = {**dict(graph.info), "latent_shapes": _latent_table(model)}
    elif graph.info:
        data["info"] = dict(graph.info)
    return data


def export_model(
    model: nn.Module | str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    graph: str | None = None,
    temperature: float | None = None,
    precision: str = "fp32",
    opset: int = DEFAULT_OPSET,
    check: bool = True,
    refuse: bool = True,
    registry: Any = None,
    source: str | os.PathLike[str] | None = None,
    name: str | None = None,
) -> ExportResult:
    """Export a generator (a module, a checkpoint file or a catalogue name) to ``output`` (``.onnx`` or ``.pt2``).

    ``graph``: ``forward`` (plain generators), ``sample`` (flows: ``lr, *latents → sr``), ``mean`` (flows at
    temperature 0: ``lr → sr``) or ``encode`` (flows: ``hr, lr → latents``); default ``forward`` / ``sample``, or
    ``mean`` with ``temperature=0``. ``precision``: ``fp32`` or ``fp16`` (where the graph allows it). ``check``:
    run the artifact at two unseen sizes against eager first (needs onnxruntime for ONNX) and refuse to write one
    that differs by more than :data:`TOLERANCE` (``refuse=False``: write it anyway and report the error, as the
    conformance kit does to say which check failed). ``source``: the checkpoint a module came from (its sha256 goes into
    the sidecar); ``name``: what messages call the model. Writes ``output`` and ``output + ".json"``; returns an :class:`ExportResult`.
    """
    out = Path(output)
    fmt = check_output(out)
    if precision not in TOLERANCE:
        raise UserError(f"--precision {precision}: choose fp32 or fp16")
    if fmt == "onnx":
        require("onnx", "onnxscript", why="exporting to ONNX")
        if check:
            require("onnxruntime", why="checking an ONNX export against eager")
    module, src, label = _source(model, registry)
    src = Path(source) if source is not None else src
    name = name or label
    g = graph_for(module, graph, temperature=temperature, name=name)
    if precision not in g.precisions:
        raise UserError(f"{name}: the {g.kind!r} graph cannot be exported in {precision} (it supports "
                        f"{', '.join(g.precisions)})")
    program = trace(g, module, precision, name)
    error: list[float | None] = [None]

    def write(tmp: Path) -> None:
        if fmt == "onnx":
            _write_onnx(program, g, tmp, opset, name)
        else:
            torch.export.save(program, str(tmp))
        if check:
            error[0] = parity(tmp, g, module, precision)
            if refuse and error[0] > TOLERANCE[precision]:
                raise UserError(f"{name}: the exported {g.kind!r} graph differs from eager by {error[0]:.2e} relative "
                                f"(limit {TOLERANCE[precision]:.0e}); nothing written")

    data: dict[str, Any] = {}
    try:
        with _staged(out) as stage:
            atomic_write(stage, write)
            data = sidecar(module, g, fmt, precision, opset if fmt == "onnx" else None, src, error[0], name)
            write_text(sidecar_path(out), json.dumps(data, indent=2) + "\n")
            os.replace(stage, out)
    except OSError as exc:
        raise UserError(f"--output {out}: cannot write it ({exc.strerror or exc}); nothing written") from None
    return ExportResult(out, sidecar_path(out), data, error[0])


@contextlib.contextmanager
def _staged(out: Path) -> Iterator[Path]:
    """A hidden file beside ``out`` that the artifact is written to and renamed from once the sidecar is written,
    removed if anything fails (so an old artifact is never paired with a new sidecar or the reverse)."""
    stage = out.with_name(f".{out.name}.staged{out.suffix}")
    try:
        yield stage
    finally:
        with contextlib.suppress(OSError):
            stage.unlink()


__all__ = ["CHECK_SIZES", "DEFAULT_OPSET", "FORMATS", "TOLERANCE", "ExportResult", "check_output", "export_model",
           "parity", "sidecar", "trace"]
