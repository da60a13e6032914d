"""The tiny-training harness: a few optimizer steps through restorekit's own spec → plan → train path."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..components import FlowModel
from ..registry import PluginRegistry
from .data import smooth_images, write_images
from .generators import build_generator
from .kit import fail, resolve_component, work_folder


def _crop_size(model: nn.Module) -> int:
    unit = model.scale * model.size_multiple  # type: ignore[operator]
    return max(unit * math.ceil(16 / unit), 8)


def check_training(
    registry: PluginRegistry,
    *,
    generator: tuple[str, Mapping[str, Any]] = ("kit_upsampler", {}),
    losses: Mapping[str, tuple[str, Mapping[str, Any]]] | None = None,
    injectors: Mapping[str, tuple[str, Mapping[str, Any]]] | None = None,
    validators: Mapping[str, tuple[str, Mapping[str, Any]]] | None = None,
    steps: int = 2,
    tmp_dir: str | Path | None = None,
) -> dict[str, float]:
    """Train ``generator`` for ``steps`` optimizer steps through restorekit's own spec → plan → train path, on
    generated images, with the given injectors, losses and validators (defaults: a ``generator`` injector — flow
    ``encode`` for a flow — and the ``pixel`` loss, or ``direct`` on ``nll`` for a flow). Checks the run ends
    normally, every trainable weight of the generator moves, and the metrics are finite. Returns the metrics."""
    from ..plan import build_network, make_plan
    from ..runtime import seed_everything
    from ..spec import spec_from_dict
    from ..train import train

    name, gparams = generator
    probe = build_generator(resolve_component(registry, "generator", name), gparams)
    flow = isinstance(probe, FlowModel)
    if injectors is None:
        injectors = {"g": ("generator", {"mode": "encode"} if flow else {})}
    if losses is None:
        losses = {"l": ("direct", {"key": "nll"})} if flow else {"l": ("pixel", {})}
    crop = _crop_size(probe)
    with work_folder(tmp_dir) as root:
        images = write_images(root / "kit_images", 4, size=2 * crop)
        spec: dict[str, Any] = {
            "run": {"mode": "train", "device": "cpu", "seed": 0, "output_dir": str(root / "kit_run")},
            "networks": {"generator": {"component": name, "params": dict(gparams)}},
            "data": {"train": {"hq": [str(images)], "target_size": crop, "batch_size": 2}},
            "steps": {"kit": {
                "networks": ["generator"],
                "optimizer": {"lr": 1e-3},
                "injectors": {n: {"component": c, "params": dict(p)} for n, (c, p) in injectors.items()},
                "losses": {n: {"component": c, "params": dict(p)} for n, (c, p) in losses.items()},
            }},
            "train": {"steps": steps, "log_every": 1, "tensorboard": False, "image_every": 0},
        }
        if validators:
            spec["data"]["val"] = {"hq": [str(images)], "crop": crop, "batch_size": 1}
            spec["validators"] = {n: {"component": c, "params": dict(p)} for n, (c, p) in validators.items()}
        plan = make_plan(spec_from_dict(spec, source="restorekit.testing"), registry, source="restorekit.testing")
        seed_everything(0)  # as the run does: the network below starts from the same weights as the trained one
        start = build_network(plan.networks["generator"])
        before = {k: v.detach().clone() for k, v in start.state_dict().items()}
        reached = _weights_reached(plan, start, crop)
        who = f"training {name!r} with losses {sorted(c for c, _ in losses.values())}"
        if not reached:
            raise fail(who, "the losses reach no weight of the generator (no gradient)")
        seed_everything(0)
        result = train(plan)
        if result.exit_code != 0:
            raise fail(who, f"stopped with exit code {result.exit_code} (non-finite losses?)")
        after = {k: v.detach().cpu() for k, v in result.networks["generator"].state_dict().items()}
        still = sorted(k for k in reached if torch.equal(before[k], after[k]))
        if still:
            raise fail(who, f"{len(still)} of the {len(reached)} tensors the losses reach did not move (e.g. {still[0]})")
        bad = {k: v for k, v in result.metrics.items() if not math.isfinite(v)}
        if bad:
            raise fail(who, f"non-finite metrics {bad}")
        return dict(result.metrics)


def _weights_reached(plan: Any, net: nn.Module, crop: int) -> set[str]:
    """The generator's parameters that the plan's first step gives a non-zero gradient on one batch."""
    probe = copy.deepcopy(net).train()
    step = plan.steps[0]
    networks = {"generator": probe}
    hq = smooth_images(2, 3, crop, seed=11)
    state: dict[str, Any] = {"hq": hq, "lq": F.interpolate(hq, scale_factor=1 / probe.scale, mode="area")}
    for inj in step.injectors:
        state.update(inj.build(networks)(state, 0))
    total = sum(c.spec.weight * c.build()(state) for c in step.losses)
    if not (isinstance(total, Tensor) and total.requires_grad):
        return set()
    total.backward()
    return {n for n, p in probe.named_parameters() if p.grad is not None and bool(p.grad.abs().sum() > 0)}
