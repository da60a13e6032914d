"""``restore-run export``: a generator to an ONNX file or a ``torch.export`` program (docs/deploy.md).

    restore-run export --model NAME_OR_FILE --output OUT.onnx|OUT.pt2 [--temperature 0] [--graph KIND]
                       [--precision fp32|fp16] [--opset N] [--no-check]
    restore-run export --pipeline spec.toml --network generator --output OUT.onnx
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import UserError
from . import CommandParser


def build_parser(prog: str) -> CommandParser:
    p = CommandParser(prog=prog, description="Export a generator to ONNX (.onnx) or torch.export (.pt2), checked "
                      "against eager, with a JSON sidecar beside it.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", metavar="NAME_OR_FILE", help="a catalogue name or a checkpoint file")
    src.add_argument("--pipeline", type=Path, metavar="SPEC.toml", help="a pipeline spec; with --network")
    p.add_argument("--network", metavar="NAME", help="the network of --pipeline to export (default: generator)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value of --pipeline (dotted key, TOML value); repeatable")
    p.add_argument("--output", type=Path, metavar="OUT.onnx|OUT.pt2",
                   help="the artifact; its format follows the suffix; the sidecar is OUT.onnx.json")
    p.add_argument("--graph", choices=["forward", "sample", "mean", "encode"],
                   help="flows: sample (lr + latents, default), mean (temperature 0, lr only), encode (hr, lr → "
                   "latents); plain generators: forward")
    p.add_argument("--temperature", type=float, metavar="T",
                   help="flows: 0 exports the temperature-0 graph (lr only); the sampling graph takes latents drawn "
                   "at any temperature")
    p.add_argument("--precision", choices=["fp32", "fp16"], default="fp32", help="weights and inputs (default fp32)")
    p.add_argument("--opset", type=int, default=None, metavar="N", help="ONNX opset (default 18)")
    p.add_argument("--no-check", action="store_true", help="skip the parity run against eager before writing")
    p.add_argument("--registry", type=Path, help="registry.toml with plugin switches and pins")
    return p


def _network(args: argparse.Namespace, registry: Any) -> tuple[Any, Any, str]:
    """The module to export, its checkpoint file (or None) and its name, from --model or --pipeline/--network."""
    if args.model is not None:
        if args.network is not None:
            raise UserError("restore-run export: --network goes with --pipeline, not --model")
        return args.model, None, args.model
    if args.pipeline is None:
        raise UserError("restore-run export: give --model NAME_OR_FILE or --pipeline SPEC.toml [--network NAME]")
    from ..plan import build_network, make_plan
    from ..spec import load_spec

    plan = make_plan(load_spec(args.pipeline, args.overrides), registry, source=str(args.pipeline))
    name = args.network or "generator"
    if name not in plan.networks:
        known = ", ".join(sorted(plan.networks)) or "none"
        raise UserError(f"--network {name}: {args.pipeline} has no network {name!r} (networks: {known})")
    net = plan.networks[name]
    module = build_network(net).eval()
    ckpt = net.spec.checkpoint
    if ckpt is None and net.model is not None:
        from ..catalogue import model_path

        ckpt = model_path(net.model)  # fetched (and checked) by build_network
    return module, ckpt, f"{args.pipeline}:networks.{name}"


def run(args: argparse.Namespace, registry: Any) -> int:
    from ..export import DEFAULT_OPSET, export_model

    if args.output is None:
        raise UserError("restore-run export: give --output OUT.onnx or --output OUT.pt2")
    output: Path = args.output
    if args.opset is not None and output.suffix.lower() != ".onnx":
        raise UserError(f"--opset: only for ONNX files, not {output.name}")
    model, source, name = _network(args, registry)
    result = export_model(model, output, graph=args.graph, temperature=args.temperature, precision=args.precision,
                          opset=args.opset or DEFAULT_OPSET, check=not args.no_check, registry=registry, source=source,
                          name=name)
    side = result.sidecar
    err = result.max_relative_error
    parity = f"max relative difference to eager {err:.1e}" if err is not None else "not checked against eager"
    inputs = ", ".join(i["name"] for i in side["inputs"])
    print(f"wrote {result.path} ({side['format']}, {side['graph']} graph: {inputs} -> {', '.join(o['name'] for o in side['outputs'])}, "
          f"{side['precision']}; {parity})")
    print(f"wrote {result.sidecar_path}")
    return 0


__all__ = ["build_parser", "run"]
