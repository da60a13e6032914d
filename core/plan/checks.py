"""Plan-time checks (so ``--dry-run`` reports them): the device, the state-key flow of the steps, ``[infer]``
against its network, and checks that need files or the device."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from ..checkpoint import META_FILE, STATE_FILE
from ..components import FlowModel
from ..errors import UserError
from ..spec import FLOW_MODES, InferSpec, PipelineSpec
from .networks import plugin_bug
from .plans import ComponentPlan, NetworkPlan, StepPlan


def resolve_device(name: str, field: str = "run.device") -> torch.device:
    """``name`` as a device; a bad name or a missing CUDA device is one line naming ``field``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError.at(None, field, f"{name!r} is not a device (auto, cpu, cuda or cuda:N)") from None
    if dev.index is not None and dev.index < 0:
        raise UserError.at(None, field, f"{name!r}: device index out of range")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError.at(None, field, f"{name!r} asked for, but CUDA is not available (use 'auto' or 'cpu')")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError.at(None, field, f"{name!r} asked for, but only {torch.cuda.device_count()} CUDA device(s)")
    return dev



STATE_INPUTS = ("hq", "lq")
"""The state keys every training step starts with."""


def _declared(plan: ComponentPlan, what: str) -> list[str] | None:
    fn = getattr(plan.resolved.component, what, None)
    if fn is None:
        return None
    try:
        return [str(k) for k in fn(plan.params)]
    except Exception as exc:  # noqa: BLE001 - a plugin's bug, named
        raise plugin_bug(plan.resolved, what, exc) from None


def _runs(step: StepPlan, item: ComponentPlan | None, t: int) -> bool:
    """Whether ``item`` (an injector or loss of ``step``; None: the step's injectors as a whole) runs at iteration
    ``t``: its step is scheduled, the item is, and — the trainer skips a step none of whose losses is due — one of
    the step's losses is."""
    if not step.spec.runs_at(t) or (item is not None and not item.spec.runs_at(t)):
        return False
    return item in step.losses or any(loss.spec.runs_at(t) for loss in step.losses)


def _horizon(steps: list[StepPlan]) -> int:
    """Iterations after which every schedule of ``steps`` repeats: the last ``after``/``before`` plus the least
    common multiple of the ``every`` values (capped; schedules far apart are checked up to the cap)."""
    import math

    specs = [s.spec for s in steps] + [c.spec for s in steps for c in (*s.injectors, *s.losses)]
    edge = max([sp.after for sp in specs] + [sp.before or 0 for sp in specs], default=0)
    return min(edge + math.lcm(*[sp.every for sp in specs]), 1_000_000)


def check_state_flow(steps: list[StepPlan], source: str) -> None:
    """Every state key an injector or loss reads must be ``hq``, ``lq`` or written by an injector before it (in its
    step, or in an earlier step of the iteration: the state carries over), at every iteration the reader runs — a
    writer scheduled with ``every``/``after``/``before`` (its own or its step's) must run whenever the reader does.
    Components declare their keys (``reads``/``writes``); after an injector that does not declare what it writes,
    nothing more can be checked."""
    writers: dict[str, list[tuple[StepPlan, ComponentPlan] | None]] = {k: [None] for k in STATE_INPUTS}
    horizon = _horizon(steps)
    for step in steps:
        for part, items in (("injectors", step.injectors), ("losses", step.losses)):
            for item in items:
                kind = "injector" if part == "injectors" else "loss"
                where = f"steps.{step.name}.{part}.{item.name}"
                for key in _declared(item, "reads") or []:
                    if key not in writers:
                        raise UserError.at(
                            source, where,
                            f"{kind} {item.name!r} ({item.resolved.component.name}) reads state key {key!r}, which no "
                            f"injector before it writes (state keys at this point: {', '.join(writers)})",
                        )
                    if None in writers[key]:
                        continue
                    missed = next((t for t in range(horizon) if _runs(step, item, t)
                                   and not any(_runs(ws, w, t) for ws, w in writers[key] if w is not None)), None)
                    if missed is not None:
                        ws, w = writers[key][0]  # type: ignore[misc]
                        raise UserError.at(
                            source, where,
                            f"{kind} {item.name!r} reads state key {key!r}, which only steps.{ws.name}.injectors."
                            f"{w.name} writes, and that does not run at every step this {kind} does (e.g. step "
                            f"{missed}): give both the same every/after/before",
                        )
                if part == "injectors":
                    writes = _declared(item, "writes")
                    if writes is None:
                        return  # an injector that does not say what it writes: the rest cannot be checked
                    for key in writes:
                        writers.setdefault(key, [])
                        scheduled = (step, item)
                        if None not in writers[key]:
                            writers[key].append(scheduled)


# ----------------------------------------------------------------------------------------------------
# checks that need more than the spec (files, the device, the network's shape): made here so --dry-run reports them


def check_infer_model(spec: InferSpec, model: Any, *, network: str, component: str, source: str) -> None:
    """``[infer]`` against its network: an integer ``scale``, a flow for the flow modes, tiles that exceed their
    overlap by the network's ``size_multiple``. Inference calls it with the built network; ``--dry-run`` with the
    network built on the meta device (no weights, no memory)."""
    scale = getattr(model, "scale", None)
    if not isinstance(scale, int) or scale < 1:
        raise UserError.at(source, f"networks.{network}", f"component {component!r} has no integer 'scale'")
    multiple = max(1, int(getattr(model, "size_multiple", 1) or 1))
    if spec.mode in FLOW_MODES and not isinstance(model, FlowModel):
        raise UserError.at(source, None, f"infer.mode = {spec.mode!r} needs a flow network (encode/decode), but "
                                         f"networks.{network} is component {component!r}, which is not one")
    tile = spec.tile
    if tile is not None and tile.size // multiple * multiple - tile.overlap < multiple:
        raise UserError.at(source, "infer.tile", f"size ({tile.size}) must exceed overlap ({tile.overlap}) by at "
                                                 f"least the size multiple of {component!r} ({multiple})")


def check_run(spec: PipelineSpec, networks: Mapping[str, NetworkPlan], device: torch.device, source: str) -> None:
    """Plan-time checks: fp16 training needs CUDA, a resume folder is whole, injectors name known networks, the
    files ``[infer]`` reads exist."""
    mode = spec.run.mode
    if mode == "train" and spec.run.precision == "fp16" and device.type != "cuda":
        raise UserError.at(source, "run.precision", f"fp16 needs a CUDA device (running on {device}); use bf16 or fp32")
    train = spec.train
    if mode == "train" and train is not None and isinstance(train.resume, Path) and not (
        (train.resume / STATE_FILE).is_file() and (train.resume / META_FILE).is_file()
    ):
        raise UserError.at(source, "train.resume", f"{train.resume}: not a complete checkpoint folder")
    for sname, step in spec.steps.items():
        for iname, inj in step.injectors.items():
            net = inj.params.get("network")
            if isinstance(net, str) and net not in spec.networks:
                raise UserError.at(source, f"steps.{sname}.injectors.{iname}.params.network",
                                   f"unknown network {net!r} (available: {', '.join(sorted(spec.networks))})")
    infer = spec.infer
    if infer is None or mode not in ("infer", "train"):
        return
    for field, used in (("reference", infer.mode in ("latent_transfer", "interpolate")), ("temperature_map", True)):
        path = getattr(infer, field)
        if used and path is not None and not Path(path).is_file():
            raise UserError.at(source, f"infer.{field}", f"{path}: file not found")

