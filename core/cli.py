"""``restore-run``: run a pipeline spec.

A user mistake is one line on stderr and exit status 2; a failure inside a run (some images failed, a
training stopped on non-finite losses) exits 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from .errors import UserError

EXIT_USER = 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="restore-run",
        description="Run a restorekit pipeline (train, eval or infer) from a TOML spec.",
    )
    p.add_argument("pipeline", nargs="?", type=Path, help="pipeline.toml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a spec value (dotted key, TOML value); repeatable")
    p.add_argument("--dry-run", action="store_true", help="validate and print the resolved plan")
    p.add_argument("--list-plugins", action="store_true", help="list plugins, their components and sources")
    p.add_argument("--json", action="store_true", help="with --list-plugins: JSON output")
    p.add_argument("--schema", action="store_true", help="print the JSON Schema of the pipeline spec")
    p.add_argument("--device", help="override run.device (auto, cpu, cuda, cuda:N)")
    p.add_argument("--resume", nargs="?", const="auto", default=None, metavar="CHECKPOINT_DIR",
                   help="resume training from the newest checkpoint (or the given folder)")
    p.add_argument("--registry", type=Path, help="registry.toml with plugin switches and pins")
    p.add_argument("--trace-plugins", action="store_true", help="print every hook call")
    p.add_argument("--version", action="store_true", help="print the version")
    return p


def _registry(args: argparse.Namespace) -> Any:
    if getattr(args, "registry_object", None) is not None:
        return args.registry_object
    from .registry import PluginRegistry, default_registry_config

    return PluginRegistry.load(default_registry_config(args.registry), trace=args.trace_plugins)


def list_plugins(args: argparse.Namespace) -> int:
    reg = _registry(args)
    infos = reg.plugin_infos()
    conflicts = reg.conflicts()
    if args.json:
        out = [
            {"name": i.name, "distribution": i.distribution, "version": i.version, "status": i.status,
             "reason": i.reason, "components": {k: v for k, v in i.provides.items()}}
            for i in infos
        ]
        print(json.dumps({"plugins": out, "conflicts": conflicts}, indent=2))
        return 0
    for i in infos:
        src = f"{i.distribution or '?'} {i.version or ''}".strip()
        print(f"{i.name}  [{i.status}]  ({src})")
        if i.status != "ok":
            print(f"    {i.reason}")
            continue
        for kind, names in i.provides.items():
            for n in names:
                comp = reg.candidates(kind, n)[0].component if reg.candidates(kind, n) else None
                summary = f" - {comp.summary}" if comp is not None and comp.summary else ""
                print(f"    {kind:<9} {n}{summary}")
    for kind, names in conflicts.items():
        for n, plugins in names.items():
            print(f"conflict: {kind} {n!r} provided by {', '.join(plugins)} (pin one in registry.toml)")
    return 0


def _count(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


def dry_run(plan: Any) -> int:
    import torch

    spec = plan.spec
    print(f"pipeline: {plan.source}")
    print(f"mode: {spec.run.mode}   device: {plan.device}   precision: {spec.run.precision}   seed: {spec.run.seed}")
    print(f"output: {spec.run.output_dir}")
    print("plugins:")
    used = {r.plugin for r in [n.resolved for n in plan.networks.values()]
            + [c.resolved for s in plan.steps for c in s.injectors + s.losses]
            + [v.resolved for v in plan.validators]}
    for info in plan.registry.plugin_infos():
        if info.name in used:
            print(f"  {info.name} {info.version or ''} ({info.distribution or '?'})")
    print("networks:")
    for name, net in plan.networks.items():
        with torch.device("meta"):
            module = net.component.build(net.params)
        params = net.params.model_dump(exclude_defaults=False)
        shown = ", ".join(f"{k}={v}" for k, v in params.items() if v is not None)
        ck = f", checkpoint={net.spec.checkpoint}" if net.spec.checkpoint else ""
        print(f"  {name}: {net.component.name} ({_count(module):,} parameters{ck}, trainable={net.spec.trainable})")
        print(f"    {shown}")
        del module
    for split in ("train", "val"):
        ds = getattr(spec.data, split)
        if ds is not None:
            print(f"data.{split}: {', '.join(map(str, ds.hq))} (batch {ds.batch_size}, crop {ds.target_size}, {ds.downsampler})")
    for step in plan.steps:
        inj = ", ".join(f"{c.name}:{c.resolved.component.name}" for c in step.injectors)
        los = ", ".join(f"{c.name}:{c.resolved.component.name}x{c.spec.weight}" for c in step.losses)
        print(f"step {step.name}: networks={step.spec.networks} injectors=[{inj}] losses=[{los}]")
    for v in plan.validators:
        print(f"validator {v.name}: {v.resolved.component.name} on {v.spec.network}")
    if spec.train is not None and spec.run.mode == "train":
        print(f"train: {spec.train.steps} steps")
    if spec.infer is not None and spec.run.mode == "infer":
        i = spec.infer
        print(f"infer: mode={i.mode} inputs={', '.join(map(str, i.inputs))} temperatures={i.temperatures}")
    return 0


def main(argv: Sequence[str] | None = None, *, registry: Any = None) -> int:
    """Entry point of ``restore-run``; ``registry`` replaces the entry-point plugins (tests, notebooks)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.registry_object = registry
    try:
        return _main(args, parser)
    except UserError as exc:
        print(f"restore-run: error: {exc}", file=sys.stderr)
        return EXIT_USER
    except KeyboardInterrupt:
        print("restore-run: interrupted", file=sys.stderr)
        return 130


def _main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.version:
        from . import __version__

        print(f"restorekit {__version__}")
        return 0
    if args.schema:
        from .spec import json_schema

        print(json.dumps(json_schema(), indent=2))
        return 0
    if args.list_plugins:
        return list_plugins(args)
    if args.pipeline is None:
        parser.print_usage(sys.stderr)
        print("restore-run: error: a pipeline file is needed", file=sys.stderr)
        return EXIT_USER

    from .plan import make_plan
    from .spec import load_spec

    overrides = list(args.overrides)
    if args.device:
        overrides.append(f"run.device={json.dumps(args.device)}")
    if args.resume is not None:
        overrides.append(f"train.resume={json.dumps(args.resume)}")
    spec = load_spec(args.pipeline, overrides)
    plan = make_plan(spec, _registry(args), source=str(args.pipeline))
    if args.dry_run:
        return dry_run(plan)
    from .runner import execute

    return execute(plan)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
