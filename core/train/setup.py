"""Building what a training run needs from its plan, with the spec checks that need the built networks."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
from torch import nn

from ..checkpoint import META_FILE, STATE_FILE
from ..errors import UserError
from ..plan import ComponentPlan, NetworkPlan, Plan, StepPlan, build_network


@contextlib.contextmanager
def naming(source: str, where: str) -> Iterator[None]:
    """Put the file and the spec field in front of a :class:`UserError` raised inside (unless it has them)."""
    try:
        yield
    except UserError as exc:
        if str(exc).startswith(f"{source}: "):
            raise
        raise UserError(f"{source}: {where}: {exc}") from None


def build_component(comp: ComponentPlan, source: str, where: str, *args: Any) -> Any:
    """``comp.build(*args)``; a :class:`UserError` it raises gets the file and field in front."""
    try:
        return comp.build(*args)
    except UserError as exc:
        raise UserError(f"{source}: {where}: {exc}") from None


def check_spec(plan: Plan) -> None:
    """Training checks across tables: saved networks exist, metrics have validators, resume folders are whole."""
    spec, src = plan.spec, plan.source
    cfg = spec.train
    if cfg is None or spec.data.train is None or not plan.steps:
        raise UserError(f"{src}: training needs [train], [data.train] and at least one [steps.<name>]")
    for name in cfg.save_generator:
        if name not in spec.networks:
            raise UserError(
                f"{src}: train.save_generator: unknown network {name!r} (available: {', '.join(sorted(spec.networks))})"
            )
    has_val = spec.data.val is not None and bool(spec.validators)
    if cfg.best_metric is not None and not has_val:
        raise UserError(f"{src}: train.best_metric needs [data.val] and at least one [validators.<name>]")
    for name, net in spec.networks.items():
        if net.unfreeze is not None and net.unfreeze.metric is not None and not has_val:
            raise UserError(
                f"{src}: networks.{name}.unfreeze.metric needs [data.val] and at least one [validators.<name>]"
            )
    if isinstance(cfg.resume, Path) and not (
        (cfg.resume / STATE_FILE).is_file() and (cfg.resume / META_FILE).is_file()
    ):
        raise UserError(f"{src}: train.resume: {cfg.resume}: not a complete checkpoint folder")


def amp_dtype(precision: str, device: torch.device, source: str) -> torch.dtype | None:
    """The autocast dtype of ``run.precision`` (None for fp32); fp16 needs CUDA."""
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        if device.type != "cuda":
            raise UserError(f"{source}: run.precision: fp16 needs a CUDA device (running on {device}); use bf16 or fp32")
        return torch.float16
    return None


def build_trained_network(net_plan: NetworkPlan, device: torch.device, gradient_checkpointing: bool) -> nn.Module:
    """The network in train mode, with gradient checkpointing switched on where a module offers it."""
    net = build_network(net_plan, device)
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
        raise UserError(f"{source}: {where}.scale: {scale}, but network {network!r} upscales by {net_scale}")
    s = scale if scale is not None else net_scale
    if s is None:
        raise UserError(f"{source}: {where}.scale: network {network!r} has no scale; set it here")
    return int(s), int(getattr(net, "size_multiple", 1) or 1)


def make_optimizers(steps: list[StepPlan], networks: Mapping[str, nn.Module]) -> dict[str, dict[str, torch.optim.Optimizer]]:
    """One Adam/AdamW per network per step, each group remembering its ``initial_lr`` for the schedule."""
    out: dict[str, dict[str, torch.optim.Optimizer]] = {}
    for s in steps:
        o = s.spec.optimizer
        cls = torch.optim.AdamW if o.kind == "adamw" else torch.optim.Adam
        out[s.name] = {
            n: cls(networks[n].parameters(), lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
            for n in s.spec.networks
        }
        for opt in out[s.name].values():
            for g in opt.param_groups:
                g.setdefault("initial_lr", g["lr"])
    return out


__all__ = ["amp_dtype", "build_component", "build_trained_network", "check_spec", "geometry", "make_optimizers", "naming"]
