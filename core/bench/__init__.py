"""``restore-run --benchmark``: throughput and peak memory of generator plugins, as ratios in one process.

For every model × LR size × batch × precision × device the benchmark times, interleaved repeat by repeat:

* ``forward`` — ``model(lr)`` the way restorekit's inference runs it (memory layout chosen by
  :func:`restorekit.perf.choose_layout`, ``torch.compile`` with ``--compile``) against the **plain path**: a
  separate copy of the same weights in NCHW, called as built;
* ``sample`` (flows) — ``samples`` latent sets of each LR image: the conditional features computed once and the
  sets decoded in chunks chosen by :class:`restorekit.perf.SampleBatcher`, against the plain path: one full
  ``decode`` per sample that recomputes the conditional features;
* ``bicubic`` — ``F.interpolate(..., mode="bicubic")`` of the same batch, the floor every ratio is taken against.

Timing uses ``torch.utils.benchmark.Timer``: it synchronises CUDA around each measurement, fixes the thread count
and runs the statement compiled once, which is what a hand-written ``perf_counter`` loop gets wrong most easily;
the repeats are interleaved by hand (plain, fast, plain, fast…) so that a shared, noisy machine slows both paths
alike, and medians are reported. Peak memory is measured in a separate run of each path: on CUDA
``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``; on the CPU the resident set size sampled
every millisecond by a thread (``/proc/self/statm``), because ``ru_maxrss`` is a high-water mark of the whole
process and cannot be reset between cases. Both are reported as the increase over the memory in use when the case
starts (weights and inputs already allocated).


The result is a list of :class:`Row`; :func:`write_json` / :func:`read_json` store them, and :func:`compare`
marks rows whose time grew beyond the noise both runs measured (the spread of their repeats).

Where things live: :mod:`.config` (:class:`BenchConfig`, :class:`Row`), :mod:`.models` (which models, their
latent sets and training loss), :mod:`.measure` (timing, in-process peak memory, one row), :mod:`.process`
(peak memory in a fresh process), :mod:`.cases` (one case, the whole run), :mod:`.training` (the train rows),
:mod:`.report` (table, JSON, compare), :mod:`.command` (the CLI entry). Every public name is importable from
``restorekit.bench``.
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
