"""The resolved plan as text: what ``restore-run pipeline.toml --dry-run`` prints."""

from __future__ import annotations

from typing import Any

import torch

from ..spec import EvalSpec
from .checks import check_infer_model
from .plans import Plan


def _count(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


def dry_run(plan: Plan) -> int:
    """``restore-run pipeline.toml --dry-run``: the resolved plan, networks built on the meta device (no weights)."""
    spec = plan.spec
    modules = {}
    for name, net in plan.networks.items():
        with torch.device("meta"):  # structure only: no weights, no memory
            modules[name] = net.component.build(net.params)
    if spec.infer is not None and spec.run.mode in ("infer", "train"):
        net = plan.networks[spec.infer.network]
        check_infer_model(spec.infer, modules[spec.infer.network], network=spec.infer.network,
                          component=net.component.name, source=plan.source)
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
        module = modules.pop(name)
        params = net.params.model_dump(exclude_defaults=False)
        shown = ", ".join(f"{k}={v}" for k, v in params.items() if v is not None)
        ck = f", checkpoint={net.spec.checkpoint}" if net.spec.checkpoint else ""
        ck += f", model={net.spec.model}" if net.spec.model else ""
        trains = f", trainable={net.spec.trainable}" if spec.run.mode == "train" else ""
        print(f"  {name}: {net.component.name} ({_count(module):,} parameters{ck}{trains})")
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
    mode = spec.run.mode
    evaluates = mode == "eval" or (mode == "train" and spec.eval is not None)
    for v in plan.validators:
        roles = [r for r, used in (("training validation", mode == "train" and v.name in spec.train_validators),
                                   ("evaluation", evaluates and v.name in spec.eval_validators)) if used]
        print(f"validator {v.name}: {v.resolved.component.name} on {v.spec.network} ({', '.join(roles) or 'unused'})")
    if spec.train is not None and mode == "train":
        print(f"train: {spec.train.steps} steps")
    if spec.infer is not None and spec.run.mode in ("infer", "train"):
        i = spec.infer
        when = " (after training)" if spec.run.mode == "train" else ""
        shown = f"infer{when}: network={i.network} mode={i.mode} inputs={', '.join(map(str, i.inputs))}"
        if i.mode != "sr" or plan.networks[i.network].component.flow is not False:
            shown += f" temperatures={i.temperatures}"
        if i.mode in ("sample", "feed_through"):
            shown += f" samples={i.samples}"
        if i.tile is not None:
            shown += f" tile={i.tile.size} overlap={i.tile.overlap}"
        print(shown + f" overwrite={str(i.overwrite).lower()}")
    if evaluates:
        ev = spec.eval if spec.eval is not None else EvalSpec()
        when = " (after training)" if mode == "train" else ""
        nets = ",".join(ev.generators or dict.fromkeys(v.spec.network for v in plan.eval_validators))
        seed = ev.seed if ev.seed is not None else spec.run.seed
        print(f"eval{when}: networks={nets} temperatures={ev.temperatures} samples={ev.samples} seed={seed} "
              f"validators={','.join(v.name for v in plan.eval_validators)} output={spec.run.output_dir}")
    return 0
