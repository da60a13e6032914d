"""``restore-run``: run a pipeline spec.

A user mistake is one line on stderr and exit status 2; a failure inside a run (some images failed, a
training stopped on non-finite losses) exits 1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from .commands import CommandParser, find
from .errors import UserError

EXIT_USER = 2


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(
        prog="restore-run",
        description="Run a restorekit pipeline (train, eval or infer) from a TOML spec.",
    )
    p.add_argument("pipeline", nargs="?", type=Path, help="pipeline.toml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a spec value (dotted key, TOML value); repeatable")
    p.add_argument("--dry-run", action="store_true", help="validate and print the resolved plan")
    p.add_argument("--list-plugins", action="store_true", help="list plugins, their components and sources")
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                   help="with --list-plugins, --list-models or --options: JSON output (to FILE if given); with "
                   "--benchmark: write the results to FILE")
    p.add_argument("--schema", action="store_true",
                   help="print the JSON Schema of the pipeline spec (with every installed component's params)")
    p.add_argument("--options", nargs=2, metavar=("KIND", "NAME"),
                   help="print a component's params (types, defaults, descriptions), e.g. --options generator srflow")
    p.add_argument("--device", help="override run.device (auto, cpu, cuda, cuda:N)")
    p.add_argument("--resume", nargs="?", const="auto", default=None, metavar="CHECKPOINT_DIR",
                   help="resume training from the newest checkpoint (or the given folder)")
    p.add_argument("--registry", type=Path, help="registry.toml with plugin switches and pins")
    p.add_argument("--trace-plugins", action="store_true", help="print every hook call")
    p.add_argument("--version", action="store_true", help="print the version")
    bench = p.add_argument_group("benchmark (restore-run --benchmark; docs/performance.md)")
    bench.add_argument("--benchmark", action="store_true",
                       help="measure generator throughput and memory against the plain path and bicubic")
    bench.add_argument("--model", action="append", default=[], metavar="NAME",
                       help="a catalogue name or checkpoint file; with --benchmark also a component name, "
                       "optionally with params as 'name:{nb = 8}' (repeatable; default: every installed generator)")
    bench.add_argument("--sizes", default="32", metavar="N,...", help="LR sizes in pixels (default 32)")
    bench.add_argument("--batches", default="1", metavar="N,...", help="batch sizes (default 1)")
    bench.add_argument("--precisions", default="fp32", metavar="P,...", help="fp32, tf32, bf16, fp16 (default fp32)")
    bench.add_argument("--samples", type=int, default=None,
                       help="flows: samples per LR image (benchmark: default 8, 0: none; --input: per temperature, default 1)")
    bench.add_argument("--warmup", type=int, default=1, help="untimed calls of each path first (default 1)")
    bench.add_argument("--repeats", type=int, default=5, help="timed, interleaved calls of each path (default 5)")
    bench.add_argument("--compile", action="store_true", help="also try torch.compile on the fast path")
    bench.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    bench.add_argument("--memory-mode", choices=["process", "sampled"], default="process",
                       help="CPU peak RSS: a fresh process per path (default, exact) or sampled in this process")
    bench.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    bench.add_argument("--train", action="store_true", help="also time a training step (and with checkpointing)")
    bench.add_argument("--onnx", action="store_true",
                       help="also time the model exported to ONNX on onnxruntime, interleaved with eager (fp32)")
    bench.add_argument("--compare", type=Path, metavar="OLD.json",
                       help="mark rows slower than in OLD.json beyond the measured noise (exit 1 if any)")
    quick = p.add_argument_group(
        "one-command SR, no pipeline file (docs/models.md)",
        "restore-run --input IMAGE ... --output DIR [--model NAME_OR_FILE]: super-resolve with a catalogue model "
        "(default bundled-srflow-x4 at temperature 0) or a weights file; also uses --model, --samples, --device",
    )
    quick.add_argument("--input", dest="inputs", nargs="+", metavar="PATH", help="images, folders or globs")
    quick.add_argument("--output", type=Path, metavar="DIR", help="output folder (default: results)")
    quick.add_argument("--temperature", dest="temperatures", nargs="+", type=float, metavar="T",
                       help="flows: sampling temperatures (default 0)")
    quick.add_argument("--seed", type=int, help="seed of the random latents (default 0)")
    quick.add_argument("--tile", type=int, metavar="N", help="tiled inference, tiles of N LR pixels")
    quick.add_argument("--overwrite", action="store_true",
                       help="replace existing outputs (without it, an output made by another request stops the run)")
    quick.add_argument("--max-pixels", type=int, metavar="N",
                       help="refuse images of more than N pixels before decoding (default 100,000,000: run.max_pixels)")
    quick.add_argument("--print-spec", action="store_true", help="print the equivalent pipeline TOML, run nothing")
    quick.add_argument("--list-models", action="store_true",
                       help="list the model catalogue: name, scale, size, cached, licence (--json too)")
    quick.add_argument("-q", "--quiet", action="store_true", help="no download progress bar")
    return p


def _registry(args: argparse.Namespace) -> Any:
    if getattr(args, "registry_object", None) is not None:
        return args.registry_object
    from .registry import PluginRegistry, default_registry_config

    return PluginRegistry.load(default_registry_config(args.registry), trace=args.trace_plugins)


def _quick(args: argparse.Namespace) -> int:
    """One-command SR (``--input`` without a pipeline file): see :mod:`restorekit.quick`."""
    from .catalogue import quiet_downloads
    from .quick import QuickOptions, run_quick

    if args.inputs is None:  # a pipeline file with these flags is refused before (_check_flags)
        raise UserError.at(None, "--input", "give the images to super-resolve (files, folders or globs)")
    models = args.model if isinstance(args.model, list) else ([args.model] if args.model else [])
    if len(models) > 1:
        raise UserError.at(None, "--model", f"give one model for --input (got {len(models)})")
    if models and not models[0].strip():
        raise UserError.at(None, "--model",
                           "empty name; give a catalogue name (restore-run --list-models) or a weights file")
    opts = QuickOptions(
        inputs=args.inputs, model=models[0] if models else None, output=args.output, temperatures=args.temperatures,
        samples=args.samples, seed=args.seed, tile=args.tile, device=args.device, overwrite=args.overwrite,
        max_pixels=args.max_pixels,
    )
    with quiet_downloads(args.quiet):
        return run_quick(opts, _registry(args), print_spec=args.print_spec, argv=args.argv)


def main(argv: Sequence[str] | None = None, *, registry: Any = None) -> int:
    """Entry point of ``restore-run``; ``registry`` replaces the entry-point plugins (tests, notebooks)."""
    _escape_unencodable_output()
    argv_list = list(argv) if argv is not None else sys.argv[1:]
    command = find(argv_list)
    try:
        with _warnings_as_lines():
            if command is not None:
                status = _subcommand(command, argv_list[1:], registry)
            else:
                parser = build_parser()
                args = parser.parse_args(argv_list)
                args.registry_object = registry
                args.argv = argv_list
                status = _main(args, parser)
            sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return status
    except UserError as exc:
        _say("error", exc)
        return EXIT_USER
    except KeyboardInterrupt:
        _say(None, "interrupted")
        return 130
    except MemoryError:  # the causes with a field to name (batch sizes, pixel limits) are checked before; the rest
        _say("error", "out of memory (lower data.*.batch_size, run.max_pixels or use [infer.tile])")
        return 1
    except BrokenPipeError:
        # the reader went away (``restore-run --list-plugins --json | head -1``): stop quietly, as cat does
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


def _subcommand(name: str, argv: list[str], registry: Any) -> int:
    """``restore-run NAME ...``: the subcommand's own parser and run (see :mod:`restorekit.commands`)."""
    import importlib

    from .commands import SUBCOMMANDS

    module = importlib.import_module(SUBCOMMANDS[name], package="restorekit.commands")
    args = module.build_parser(f"restore-run {name}").parse_args(argv)
    if registry is None:
        from .registry import PluginRegistry, default_registry_config

        registry = PluginRegistry.load(default_registry_config(getattr(args, "registry", None)),
                                       trace=bool(getattr(args, "trace_plugins", False)))
    return int(module.run(args, registry))


def _escape_unencodable_output() -> None:
    """File names need not be valid in the terminal's encoding (a Latin-1 name on a strict UTF-8 stdout): print
    what cannot be encoded as backslash escapes instead of failing with UnicodeEncodeError."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(errors="backslashreplace")
            except (ValueError, OSError, TypeError):  # pragma: no cover - a stream that cannot change
                pass


def _say(kind: str | None, message: object) -> None:
    """The one way restore-run reports on stderr: ``restore-run: <kind>: <message>``, on one line."""
    text = " ".join(str(message).split())
    print(f"restore-run: {kind}: {text}" if kind else f"restore-run: {text}", file=sys.stderr)


class _WarningLines(logging.Handler):
    """The library's logged warnings (``restorekit.*`` loggers), each one line like its ``warnings``."""

    def emit(self, record: logging.LogRecord) -> None:
        _say("warning", record.getMessage())


@contextlib.contextmanager
def _warnings_as_lines() -> Iterator[None]:
    """While a command runs, each library warning (``warnings.warn``, a ``restorekit.*`` logger at WARNING or
    above) is one line: ``restore-run: warning: <message>``."""
    logger, handler = logging.getLogger("restorekit"), _WarningLines(logging.WARNING)
    with warnings.catch_warnings():
        warnings.showwarning = lambda message, *_, **__: _say("warning", message)
        logger.addHandler(handler)
        try:
            yield
        finally:
            logger.removeHandler(handler)


_EVERYWHERE = {"registry", "trace_plugins"}
_MODES: dict[str, tuple[str, set[str]]] = {
    # mode (the attribute that selects it) → (its flag, the other flags that mean something with it)
    "schema": ("--schema", set()),
    "list_plugins": ("--list-plugins", {"json"}),
    "benchmark": ("--benchmark", {"model", "sizes", "batches", "precisions", "samples", "warmup", "repeats",
                                  "compile", "no_memory", "memory_mode", "threads", "train", "onnx", "compare", "json",
                                  "device", "quiet"}),
    "options": ("--options", {"json"}),
    "list_models": ("--list-models", {"json"}),
    "inputs": ("--input", {"model", "output", "temperatures", "samples", "seed", "tile", "overwrite", "print_spec",
                           "device", "quiet", "max_pixels"}),
    "pipeline": ("a pipeline file", {"overrides", "dry_run", "device", "resume", "quiet"}),
}


_HINTS = {
    "inputs": " (it applies to a pipeline file: write one with --print-spec)",
    "pipeline": " (change a pipeline with --set, e.g. --set networks.generator.model=NAME)",
}


def _check_flags(args: argparse.Namespace, parser: CommandParser) -> None:
    """A flag that does nothing in the chosen mode is a mistake (one line), not something to ignore silently."""
    given = [a for a in parser.actions if a.dest != "help" and getattr(args, a.dest, None) != a.default]
    mode = next((m for m in _MODES if any(a.dest == m for a in given)), None)
    if mode is None:
        return
    flag, allowed = _MODES[mode]
    for action in given:
        if action.dest != mode and action.dest not in allowed | _EVERYWHERE:
            name = "--input" if action.dest == "inputs" else (action.option_strings or [action.dest])[-1]
            if action.dest == "pipeline" and mode != "inputs":
                raise UserError.at(args.pipeline, None, f"a pipeline file does nothing with {flag}")
            if action.dest == "pipeline" or (mode == "pipeline" and action.dest in _MODES["inputs"][1]):
                what = flag if action.dest == "pipeline" else name
                raise UserError.at(args.pipeline, None, f"{what} is for one-command SR without a pipeline file; give "
                                   f"a pipeline file or --input, not both{_HINTS['pipeline']}")
            hint = _HINTS["inputs"] if mode == "inputs" and action.dest in _MODES["pipeline"][1] else ""
            raise UserError(f"{name} does nothing with {flag}{hint}")


def _listing(args: argparse.Namespace, data: Any, text: Callable[[Any], str]) -> int:
    """A listing flag's output: its data as JSON (``--json``) or as ``text``, on stdout or (``--json FILE``) in
    FILE, written atomically."""
    from .bench.command import check_json_path
    from .files import atomic_write

    out = json.dumps(data, indent=2, default=str) if args.json else text(data)
    if args.json in (None, "-"):
        print(out)
        return 0
    path = Path(args.json)
    check_json_path(path)
    atomic_write(path, lambda tmp: tmp.write_text(out + "\n", encoding="utf-8"))
    print(f"wrote {path}")
    return 0


def _main(args: argparse.Namespace, parser: CommandParser) -> int:
    if args.version:
        from . import __version__

        print(f"restorekit {__version__}")
        return 0
    _check_flags(args, parser)
    if args.schema:
        from .plugin_info import schema_with_plugins
        from .spec import json_schema

        print(json.dumps(schema_with_plugins(json_schema(), _registry(args)), indent=2))
        return 0
    if args.list_plugins:
        from .commands.listings import plugins_text
        from .plugin_info import plugins_report

        return _listing(args, plugins_report(_registry(args)), plugins_text)
    if args.benchmark:
        from .bench import main_from_args
        from .catalogue import quiet_downloads

        with quiet_downloads(args.quiet):
            return main_from_args(args, _registry(args))
    if args.options:
        from .commands.listings import options_text
        from .components import KINDS
        from .plugin_info import component_report

        kind, name = args.options
        if kind not in KINDS:
            raise UserError.at(None, "--options", f"unknown component kind {kind!r} (kinds: {', '.join(KINDS)})")
        return _listing(args, component_report(_registry(args), kind, name), options_text)  # type: ignore[arg-type]
    if args.list_models:
        from .catalogue import cache_dir, listing, load_catalogue
        from .commands.listings import models_text

        models = listing(load_catalogue(registry=_registry(args)))
        return _listing(args, {"cache": str(cache_dir()), "models": models}, models_text)
    if any(getattr(args, d) not in (None, False, []) for d in {"inputs"} | _MODES["inputs"][1] - {"device", "quiet"}):
        return _quick(args)  # the one-command SR flags (--model and --samples are shared with --benchmark, before)
    if args.pipeline is None:
        parser.print_usage(sys.stderr)
        raise UserError("a pipeline file is needed")

    from .catalogue import quiet_downloads
    from .data.io import IMAGE_SUFFIXES
    from .plan import make_plan
    from .spec import load_spec

    overrides = list(args.overrides)
    if args.device:
        overrides.append(f"run.device={json.dumps(args.device)}")
    if args.resume is not None:
        overrides.append(f"train.resume={json.dumps(args.resume)}")
    if args.pipeline.suffix.lower() in IMAGE_SUFFIXES:
        import shlex

        raise UserError.at(args.pipeline, None,
                           f"an image, not a pipeline file; did you mean `--input {shlex.quote(str(args.pipeline))}`?")
    spec = load_spec(args.pipeline, overrides)
    plan = make_plan(spec, _registry(args), source=str(args.pipeline))
    if args.dry_run:
        from .plan.dry_run import dry_run

        return dry_run(plan)
    from .runner import execute

    with quiet_downloads(args.quiet):
        return execute(plan)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
