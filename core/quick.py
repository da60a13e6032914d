"""One-command super-resolution: ``restore-run --model NAME_OR_FILE --input PATH ... --output DIR``.

No TOML: the command line is turned into the same :class:`~restorekit.PipelineSpec` a pipeline file gives (an
``infer`` run of one network) and run through the normal plan/run path. ``--print-spec`` writes that spec as a
pipeline TOML instead, so any quick run becomes an editable, reproducible file.

Modes: a plain network, or a flow at temperature 0 with one sample, runs ``infer.mode = "sr"`` (``<stem>.png``);
a flow with other ``--temperature`` values or ``--samples`` runs ``"sample"`` (``<stem>_t<T>_s<i>_seed<N>.png``).
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import tomli_w

from .errors import COMMAND_LINE, UserError, where

DEFAULT_MODEL = "bundled-srflow-x4"
DEFAULT_OUTPUT = Path("results")
SOURCE = COMMAND_LINE


@dataclass(frozen=True)
class QuickOptions:
    """The one-command flags (``None``: not given)."""

    inputs: Sequence[str]
    model: str | None = None
    output: Path | None = None
    temperatures: Sequence[float] | None = None
    samples: int | None = None
    seed: int | None = None
    tile: int | None = None
    device: str | None = None
    overwrite: bool = False
    max_pixels: int | None = None


# ----------------------------------------------------------------------------------------------------
# checks of the flags

FLAGS = {  # the spec field -> the flag that fills it (the most specific first): mistakes name the flag
    "infer.inputs": "--input", "infer.output_dir": "--output", "run.output_dir": "--output",
    "infer.temperatures": "--temperature", "infer.samples": "--samples", "infer.tile.size": "--tile",
    "infer.tile": "--tile", "infer.overwrite": "--overwrite", "run.seed": "--seed", "run.device": "--device",
    "run.max_pixels": "--max-pixels", "networks.generator.model": "--model", "networks.generator.checkpoint": "--model",
    "networks.generator": "--model",
}


@contextlib.contextmanager
def flags_named() -> Iterator[None]:
    """A mistake in the spec a one-command run made is located at the flag that set the field (``--temperature:
    must be finite and >= 0``), not at ``command line: infer.temperatures``."""
    try:
        yield
    except UserError as exc:
        field = exc.field or ""
        path = next((p for p in FLAGS if field == p or field.startswith(p + ".")), None)
        if exc.source != SOURCE or path is None:
            raise
        raise UserError.at(None, FLAGS[path], where(None, field[len(path) + 1:], exc.detail)) from None


def _check_inputs(inputs: Sequence[str]) -> list[str]:
    """The ``--input`` entries, absolute (the written spec runs from anywhere), each checked by the one walker."""
    from .data.find import find_images

    out = []
    for text in inputs:
        if not text.strip():  # Path("") is the current folder: never what an empty argument meant
            raise UserError.at(None, "--input", "empty path; give images, folders or globs")
        find_images([text], "--input")
        out.append(str(Path(text).absolute()) if any(c in text for c in "*?[") else str(Path(text).resolve()))
    return out


def _network_table(model: str, registry: Any) -> tuple[dict[str, Any], str, bool]:
    """``[networks.generator]`` for a catalogue name or a weights file (component read or detected, headers
    only), the component's name, and whether the network is a :class:`~restorekit.FlowModel` (the component's ``flow`` flag, else
    ``isinstance`` of the network built on the meta device: no weights made)."""
    import torch

    from .catalogue import looks_like_name
    from .components import FlowModel
    from .plan import resolve_generator

    path = Path(model)
    if path.exists() and not path.is_file():
        raise UserError.at(None, "--model", f"{model}: not a file")
    if not path.exists() and not looks_like_name(model):
        raise UserError.at(None, "--model", f"{model}: file not found")
    if path.is_file():
        gen = resolve_generator(registry, checkpoint=path.resolve(), source=str(path))
    else:
        gen = resolve_generator(registry, model=model, source=SOURCE, where="networks.generator")
    table = {"component": gen.component.name, "checkpoint": str(path.resolve())} if path.is_file() else {"model": model}
    if gen.component.flow is not None:
        return table, gen.component.name, bool(gen.component.flow)
    with torch.device("meta"):
        return table, gen.component.name, isinstance(gen.component.build(gen.params), FlowModel)


# ----------------------------------------------------------------------------------------------------
# the spec


def build_spec_data(opts: QuickOptions, registry: Any, *, for_this_machine: bool = True) -> tuple[dict[str, Any], Any]:
    """The pipeline of a one-command run, as TOML-ready data, and its plan (validated by the spec's own validators,
    a mistake naming its flag: :func:`flags_named`; nothing loaded yet).

    ``for_this_machine=False`` (``--print-spec``): the spec may name a device this machine lacks (``--device cuda``
    to run elsewhere); the plan is then made for ``auto``."""
    from .plan import make_plan
    from .spec import spec_from_dict

    inputs = _check_inputs(opts.inputs)
    out = (opts.output or DEFAULT_OUTPUT).absolute()
    if out.exists() and not out.is_dir():
        raise UserError.at(None, "--output", f"{out}: exists and is not a folder")
    with flags_named():
        network, component, flow = _network_table(opts.model or DEFAULT_MODEL, registry)
    temps = [float(t) for t in opts.temperatures] if opts.temperatures is not None else [0.0]
    samples = opts.samples if opts.samples is not None else 1
    mode = "sr" if not flow or (temps == [0.0] and samples == 1) else "sample"
    infer: dict[str, Any] = {"mode": mode, "inputs": inputs, "output_dir": str(out)}
    if flow or opts.temperatures is not None:
        infer["temperatures"] = temps
    if mode == "sample" or opts.samples is not None:
        infer["samples"] = samples
    if opts.overwrite:
        infer["overwrite"] = True
    if opts.tile is not None:
        infer["tile"] = {"size": opts.tile, "overlap": 8}
    run: dict[str, Any] = {"mode": "infer", "seed": opts.seed or 0, "device": opts.device or "auto",
                           "output_dir": str(out)}
    if opts.max_pixels is not None:
        run["max_pixels"] = opts.max_pixels
    data = {"run": run, "networks": {"generator": network}, "infer": infer}
    with flags_named():
        spec = spec_from_dict(data, source=SOURCE)
    given = [f for f, v in (("--temperature", opts.temperatures), ("--samples", opts.samples)) if v is not None]
    if not flow and given:
        what = network.get("model") or network.get("checkpoint")
        raise UserError.at(None, given[0], f"{what} is a {component!r} network, not a flow (temperatures and "
                           "samples are for flows such as SRFlow)")
    if not for_this_machine:
        spec = spec.model_copy(update={"run": spec.run.model_copy(update={"device": "auto"})})
    with flags_named():
        return data, make_plan(spec, registry, source=SOURCE)


# ----------------------------------------------------------------------------------------------------
# TOML


def _plain(v: Any) -> Any:
    """Paths as strings, the rest as it is: what tomli_w writes."""
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def to_toml(data: Mapping[str, Any], header: Sequence[str] = ()) -> str:
    """A pipeline spec's tables as TOML text (``tomli_w``), after ``header`` as comment lines."""
    return "".join(f"# {h}\n" for h in header) + ("\n" if header else "") + tomli_w.dumps(_plain(data))


def command_line(argv: Sequence[str] | None) -> str:
    import shlex

    args = list(argv if argv is not None else sys.argv[1:])
    return "restore-run " + " ".join(shlex.quote(a) for a in args if a != "--print-spec")


# ----------------------------------------------------------------------------------------------------
# entry points


def run_quick(opts: QuickOptions, registry: Any, *, print_spec: bool = False, argv: Sequence[str] | None = None) -> int:
    """Build the spec of a one-command run; print it as TOML (``print_spec``) or run it. Returns the exit status."""
    data, plan = build_spec_data(opts, registry, for_this_machine=not print_spec)
    if print_spec:
        header = [
            "restorekit pipeline written by:",
            f"  {command_line(argv)} --print-spec",
            "Run it with: restore-run <this file>",
        ]
        sys.stdout.write(to_toml(data, header))
        return 0
    from .runner import execute

    with flags_named():
        return execute(plan)
