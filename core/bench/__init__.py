"""``restore-run --benchmark``: throughput and peak memory of generator plugins, the fast path against the plain
path (the same weights as built) and bicubic, as ratios in one process; what each row measures and how is in
``docs/performance.md``. :func:`compare` marks rows whose time grew beyond the noise both runs measured. With
``--onnx`` the model exported to ONNX (:func:`restorekit.export_model`) is timed on onnxruntime against eager, same
inputs, interleaved (:mod:`.onnxrt`).

Where things live: :mod:`.config` (:class:`BenchConfig`, :class:`Row`), :mod:`.models` (which models, their
latent sets and training loss), :mod:`.measure` (timing, in-process peak memory, one row), :mod:`.process`
(peak memory in a fresh process), :mod:`.cases` (one case, the whole run), :mod:`.training` (the train rows: the
trainer's own step), :mod:`.report` (table, JSON, compare), :mod:`.onnxrt` (the ``--onnx`` rows), :mod:`.command` (the CLI entry). Every public name is
importable from ``restorekit.bench``.
"""

from __future__ import annotations

from .cases import run_benchmark, run_case
from .command import main, main_from_args
from .config import NOISE_FLOOR, PRECISIONS, SCHEMA, BenchConfig, Row, check_config
from .measure import RssSampler, bicubic_seconds, interleaved, peak_memory_mb, relative_spread
from .models import BenchModel, parse_model_arg, resolve_models
from .process import MemoryJob, process_peak_mb
from .report import COLUMNS, Change, change_marks, compare, machine, read_json, table, write_json
from .training import train_rows

__all__ = [
    "BenchConfig",
    "BenchModel",
    "COLUMNS",
    "Change",
    "MemoryJob",
    "NOISE_FLOOR",
    "PRECISIONS",
    "Row",
    "RssSampler",
    "SCHEMA",
    "bicubic_seconds",
    "change_marks",
    "check_config",
    "compare",
    "interleaved",
    "machine",
    "main",
    "main_from_args",
    "parse_model_arg",
    "peak_memory_mb",
    "process_peak_mb",
    "read_json",
    "relative_spread",
    "resolve_models",
    "run_benchmark",
    "run_case",
    "table",
    "train_rows",
    "write_json",
]
