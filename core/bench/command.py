"""The ``restore-run --benchmark`` command: the parsed flags to a :class:`BenchConfig`, the run, the table,
the JSON file and the ``--compare`` verdict."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ..errors import UserError
from .cases import run_benchmark
from .config import BenchConfig
from .report import change_marks, compare, machine, read_json, table, write_json


def main(cfg: BenchConfig, registry: Any, *, json_path: Path | None, compare_path: Path | None) -> int:
    """The ``restore-run --benchmark`` command: prints the table; 1 when --compare finds a regression."""
    if json_path is not None:  # checked before the measurements, not after them
        check_json_path(json_path)
    old = read_json(compare_path) if compare_path is not None else None
    rows, notes = run_benchmark(cfg, registry, log=lambda msg: print(msg, file=sys.stderr))
    changes = compare(rows, old) if old is not None else None
    print(table(rows, change_marks(changes) if changes is not None else None))
    info = machine()
    kinds = ", ".join(sorted({r.memory_kind for r in rows if r.memory_kind}))
    memory = f"peak memory above the case's start ({kinds})" if kinds else "peak memory not measured"
    print(f"\n{info['cpu']}, {info['threads']} threads, torch {info['torch']}, load average "
          f"{info['load_average'][0] if info['load_average'] else '?'}; times are medians of {cfg.repeats} "
          f"interleaved repeats; {memory}")
    for n in notes:
        print(f"note: {n}")
    if json_path is not None:
        write_json(json_path, rows, cfg, notes)
        print(f"wrote {json_path}")
    if changes is not None:
        bad = [c for c in changes if c.verdict == "regression"]
        print(f"compare: {len(changes)} rows matched {compare_path}; {len(bad)} regression(s) beyond the noise")
        return 1 if bad else 0
    return 0


def check_json_path(path: Path) -> None:
    """``--json FILE``: a file name whose folder exists or can be made (a one-line :class:`UserError` if not)."""
    from ..files import ensure_dir

    path = Path(path)
    if path.is_dir():
        raise UserError(f"--json: {path}: is a folder; give a file name (e.g. {path / 'bench.json'})")
    ensure_dir(path.parent, "--json")


def _ints(flag: str, text: str) -> list[int]:
    try:
        return [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{flag}: expected comma-separated integers, got {text!r}") from None


def main_from_args(args: Any, registry: Any) -> int:
    """``restore-run --benchmark`` with the parsed command-line flags."""
    models = args.model if isinstance(args.model, list) else ([args.model] if args.model else [])
    devices = [d.strip() for d in (args.device or "auto").split(",") if d.strip()]
    cfg = BenchConfig(
        models=list(models), sizes=_ints("--sizes", args.sizes), batches=_ints("--batches", args.batches),
        precisions=[p.strip() for p in args.precisions.split(",") if p.strip()], devices=devices,
        samples=args.samples if args.samples is not None else 8, warmup=args.warmup, repeats=args.repeats,
        compile=args.compile, memory=not args.no_memory, memory_mode=args.memory_mode, threads=args.threads,
        train=args.train, onnx=bool(getattr(args, "onnx", False)),
    )
    json_path = Path(args.json) if args.json not in (None, "-") else None
    return main(cfg, registry, json_path=json_path, compare_path=args.compare)


__all__ = ["main", "main_from_args"]
