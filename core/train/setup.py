"""Building what a training run needs from its plan, with the checks that need the built networks (the spec's
own checks live in :mod:`restorekit.spec` and :mod:`restorekit.plan`, so ``--dry-run`` reports them)."""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from ..errors import UserError, located
from ..perf import fused_optimizer, lean_training
from ..plan import ComponentPlan, NetworkPlan, StepPlan, build_network
from ..runtime import amp_dtype


def build_component(comp: ComponentPlan, source: str, where: str, *args: Any) -> Any:
    """``comp.build(*args)``; a :class:`UserError` it raises gets the file and field in front."""
    with located(source, where):
        return comp.build(*args)


def build_trained_network(net_plan: NetworkPlan, device: torch.device, gradient_checkpointing: bool) -> nn.Module:
    """The network in train mode, with gradient checkpointing switched on where a module offers it."""
    net = build_network(net_plan, device)
    lean_training(net, net_plan.component.switches)  # the generator's declared training fast paths
    if gradient_checkpointing:
        for m in net.modules():
            if hasattr(m, "gradient_checkpointing"):
                m.gradient_checkpointing = True
    return net.train()


def geometry(networks: Mapping[str, nn.Module], network: str, scale: int | None, where: str, source: str) -> tuple[int, int]:
    """``(scale, size multiple)`` of a dataset feeding ``network`` (the dataset's ``scale`` must match it)."""
    net = networks[network]
    net_scale = getattr(net, "scale", None)
    if scale is not None and net_scale is not None and int(net_scale) != scale:
        raise UserError.at(source, f"{where}.scale", f"{scale}, but network {network!r} upscales by {net_scale}")
    s = scale if scale is not None else net_scale
    if s is None:
        raise UserError.at(source, f"{where}.scale", f"network {network!r} has no scale; set it here")
    return int(s), int(getattr(net, "size_multiple", 1) or 1)


def make_optimizers(steps: list[StepPlan], networks: Mapping[str, nn.Module]) -> dict[str, dict[str, torch.optim.Optimizer]]:
    """One Adam/AdamW per network per step, each group remembering its ``initial_lr`` for the schedule."""
    out: dict[str, dict[str, torch.optim.Optimizer]] = {}
    for s in steps:
        o = s.spec.optimizer
        cls = torch.optim.AdamW if o.kind == "adamw" else torch.optim.Adam
        out[s.name] = {
            n: fused_optimizer(cls, networks[n].parameters(), lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
            for n in s.spec.networks
        }
        for opt in out[s.name].values():
            for g in opt.param_groups:
                g.setdefault("initial_lr", g["lr"])
    return out


__all__ = ["amp_dtype", "build_component", "build_trained_network", "geometry", "make_optimizers"]
