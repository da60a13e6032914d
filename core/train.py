"""The training loop: steps of injectors and losses over a state dict, optimizers, schedules, checkpoints.

One *iteration* (``train.steps`` of them) takes ``accumulate`` batches and runs every ``[steps.<name>]`` of the
plan in order. A step runs its active injectors (each writes named entries into the state, which starts as
``{"hq", "lq"}``), sums its active losses times their weights, back-propagates, and updates the networks it
optimises with one Adam/AdamW optimizer per network. The state carries over (detached) to the next step of the
same iteration, so a later step can read what an earlier one wrote.

Around that: a learning-rate schedule that is a pure function of the step (constant / multistep / cosine with
linear warmup), gradient accumulation and clipping, autocast (bf16, or fp16 with a GradScaler on CUDA),
gradient checkpointing, an optional EMA of the weights, frozen networks and partial training
(``trainable``/``trainable_only``) switched on by ``unfreeze`` rules, skipping of non-finite losses, validation
with the plan's validators, image grids, TensorBoard / JSONL / console logging, atomic resumable checkpoints
and DDP (``torchrun``: ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``).
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import random
import re
import shutil
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Mapping

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from .checkpoint import read_state_dict, save_generator
from .components import Sample, ValidationContext
from .data.datasets import BatchStream, TrainDataset, load_val_samples
from .errors import UserError
from .plan import ComponentPlan, NetworkPlan, Plan, StepPlan, build_network
from .spec import NetworkSpec, Schedule, ScheduleSpec, TrainSpec, UnfreezeSpec

CHECKPOINTS = "checkpoints"
STATE_FILE = "state.pt"
META_FILE = "meta.json"
METRICS_FILE = "metrics.jsonl"
_STEP_DIR = re.compile(r"^step_(\d+)$")


@dataclass
class TrainResult:
    """``exit_code`` 0 (done) or 1 (stopped early); ``networks`` by name (EMA weights where kept);
    ``metrics`` the last validation metrics plus ``loss`` (the last logged total loss)."""

    exit_code: int
    networks: dict[str, nn.Module]
    metrics: dict[str, float]


# ----------------------------------------------------------------------------------------------------
# distributed


@dataclass
class DistContext:
    """Rank, world size and local rank of this process (``torchrun`` sets them in the environment)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @classmethod
    def from_env(cls, device: torch.device) -> tuple["DistContext", torch.device]:
        """Join the process group when ``WORLD_SIZE > 1`` (nccl on CUDA, gloo on CPU); the device of a CUDA
        rank becomes ``cuda:LOCAL_RANK``."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls(), device
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
        if device.type == "cuda":
            device = torch.device("cuda", local)
            torch.cuda.set_device(device)
        owns = False
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            owns = True
        return cls(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local, owns_group=owns), device

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def mean(self, values: Tensor) -> Tensor:
        """All-reduced mean of a float tensor over the ranks."""
        if self.active:
            values = values.clone()
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
            values /= self.world
        return values

    def any(self, flag: bool, device: torch.device) -> bool:
        """Whether ``flag`` is true on any rank."""
        if not self.active:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (a list on rank 0, empty elsewhere)."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world if self.main else []
        dist.gather_object(obj, out if self.main else None, dst=0)
        return out

    def shutdown(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


class _Dispatch(nn.Module):
    """Routes ``forward(method, ...)`` to a method of the wrapped network, so that DDP sees every call
    (``encode``, ``decode``, ``rrdb_forward``...) as a forward pass."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, method: str, *args: Any, **kwargs: Any) -> Any:
        fn = self.net if method == "__call__" else getattr(self.net, method)
        return fn(*args, **kwargs)


class NetworkView:
    """What injectors see of a trained network under DDP: calls and methods go through the current DDP
    wrapper (replaced when the trainable parameters change); attributes come from the network itself."""

    def __init__(self, net: nn.Module) -> None:
        self.net = net
        self.ddp: nn.parallel.DistributedDataParallel | None = None

    def wrap(self, device: torch.device) -> None:
        """(Re)build the DDP wrapper over the parameters that currently require grad."""
        if not any(p.requires_grad for p in self.net.parameters()):
            self.ddp = None
            return
        ids = [device.index] if device.type == "cuda" else None
        self.ddp = nn.parallel.DistributedDataParallel(
            _Dispatch(self.net), device_ids=ids, find_unused_parameters=True
        )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.ddp is None:
            return self.net(*args, **kwargs)
        return self.ddp("__call__", *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.net, name)
        if self.ddp is not None and callable(attr) and not isinstance(attr, nn.Module) and not name.startswith("_"):
            ddp = self.ddp

            def call(*args: Any, **kwargs: Any) -> Any:
                return ddp(name, *args, **kwargs)

            return call
        return attr


# ----------------------------------------------------------------------------------------------------
# schedules


def resolve_milestones(spec: ScheduleSpec, total: int) -> list[int]:
    """Milestones in absolute steps: values >= 1 are steps, values < 1 fractions of ``total``."""
    out = []
    for m in spec.milestones:
        if m < 0:
            raise UserError(f"train.schedule.milestones: {m} is negative")
        out.append(int(m) if m >= 1 else int(round(m * total)))
    return sorted(out)


def lr_factor(step: int, spec: ScheduleSpec, total: int, base_lr: float) -> float:
    """The learning-rate multiplier of the update made at (0-based) ``step`` of ``total``."""
    if spec.warmup and step < spec.warmup:
        warm = (step + 1) / spec.warmup
    else:
        warm = 1.0
    if spec.kind == "constant":
        factor = 1.0
    elif spec.kind == "multistep":
        factor = spec.gamma ** sum(1 for m in resolve_milestones(spec, total) if step >= m)
    else:
        span = max(1, total - spec.warmup)
        t = min(1.0, max(0.0, (step - spec.warmup) / span))
        floor = min(1.0, spec.min_lr / base_lr) if base_lr > 0 else 0.0
        factor = floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))
    return warm * factor


def active(schedule: Schedule, step: int) -> bool:
    """Whether an injector / loss with this ``every``/``after``/``before`` runs at (0-based) ``step``."""
    if step < schedule.after:
        return False
    if schedule.before is not None and step >= schedule.before:
        return False
    return (step - schedule.after) % schedule.every == 0


# ----------------------------------------------------------------------------------------------------
# freezing


Mode = Literal["full", "partial", "frozen", "fixed"]


@dataclass
class Freeze:
    """Which parameters of a network train: ``full`` all, ``partial`` those under ``trainable_only``,
    ``frozen`` none until its unfreeze rule fires, ``fixed`` none ever (no step optimises it)."""

    name: str
    mode: Mode
    prefixes: tuple[str, ...] = ()
    rule: UnfreezeSpec | None = None
    best: float | None = None
    bad: int = 0
    unfrozen_at: int | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "best": self.best, "bad": self.bad, "unfrozen_at": self.unfrozen_at}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.mode = state["mode"]
        self.best = state["best"]
        self.bad = int(state["bad"])
        self.unfrozen_at = state["unfrozen_at"]

    def trains(self, param_name: str) -> bool:
        if self.mode == "full":
            return True
        if self.mode == "partial":
            return param_name.startswith(self.prefixes)
        return False

    def apply(self, net: nn.Module) -> int:
        """Set ``requires_grad``; BatchNorm layers with no trained parameter go to eval mode. Returns the
        number of trained parameters."""
        count = 0
        for pname, p in net.named_parameters():
            p.requires_grad_(self.trains(pname))
            count += p.numel() if p.requires_grad else 0
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                params = list(m.parameters(recurse=False))
                trained = any(p.requires_grad for p in params) if params else self.mode == "full"
                m.train(trained and net.training)
        return count


def make_freeze(name: str, spec: NetworkSpec, optimised: bool, net: nn.Module, source: str) -> Freeze:
    """The initial :class:`Freeze` of a network from its spec (prefixes checked against the parameters)."""
    where = f"{source}: networks.{name}"
    if not optimised:
        return Freeze(name, "fixed")
    prefixes: tuple[str, ...] = ()
    if spec.trainable_only:
        names = [n for n, _ in net.named_parameters()]
        for prefix in spec.trainable_only:
            if not any(n.startswith(prefix) for n in names):
                tops = sorted({n.split(".", 1)[0] for n in names})
                raise UserError(
                    f"{where}.trainable_only: no parameter name starts with {prefix!r} "
                    f"(top-level modules: {', '.join(tops[:12])})"
                )
        prefixes = tuple(spec.trainable_only)
        mode: Mode = "partial"
    elif not spec.trainable:
        mode = "frozen"
    else:
        mode = "full"
    return Freeze(name, mode, prefixes, spec.unfreeze)


# ----------------------------------------------------------------------------------------------------
# EMA


class EMA:
    """Exponential moving average of a network's parameters (buffers copied). Created from the network at
    its first update, so data-dependent initialisations (ActNorm) are not averaged with their start values."""

    def __init__(self, net: nn.Module, decay: float) -> None:
        self.decay = decay
        self.module = copy.deepcopy(net)
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        for e, p in zip(self.module.parameters(), net.parameters()):
            e.lerp_(p.detach(), 1.0 - self.decay)
        for e, b in zip(self.module.buffers(), net.buffers()):
            e.copy_(b)


# ----------------------------------------------------------------------------------------------------
# checkpoints


def checkpoint_dirs(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoint folders under ``root`` (``step_<N>`` with state and meta files), oldest first."""
    if not root.is_dir():
        return []
    out = []
    for d in root.iterdir():
        m = _STEP_DIR.match(d.name)
        if m and d.is_dir() and (d / STATE_FILE).is_file() and (d / META_FILE).is_file():
            out.append((int(m.group(1)), d))
    return sorted(out)


def newest_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run folder, or None."""
    dirs = checkpoint_dirs(Path(output_dir) / CHECKPOINTS)
    return dirs[-1][1] if dirs else None


def write_checkpoint_dir(root: Path, step: int, write: Callable[[Path], None]) -> Path:
    """Fill a temporary folder with ``write(tmp)`` then rename it to ``root/step_<step>``: a reader (or a
    resume after a crash) never sees a partial checkpoint."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step}"
    tmp = root / f".tmp-step_{step}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        write(tmp)
        if final.exists():
            trash = root / f".old-step_{step}-{os.getpid()}"
            os.replace(final, trash)
            os.replace(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def prune_checkpoints(root: Path, keep_last: int, keep: set[int]) -> list[Path]:
    """Delete complete checkpoints except the newest ``keep_last`` and the steps in ``keep``; returns what
    was deleted. Leftover temporary folders of crashed saves are removed too."""
    dirs = checkpoint_dirs(root)
    survivors = {s for s, _ in dirs[-keep_last:]} | keep
    removed = []
    for s, d in dirs:
        if s not in survivors:
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


def clean_temporaries(root: Path) -> None:
    """Remove ``.tmp-*``/``.old-*`` folders left by an interrupted save."""
    if root.is_dir():
        for d in root.iterdir():
            if d.is_dir() and (d.name.startswith(".tmp-step_") or d.name.startswith(".old-step_")):
                shutil.rmtree(d, ignore_errors=True)


def rng_state() -> dict[str, Any]:
    """torch (CPU and CUDA), numpy and python RNG states, in a form ``torch.load(weights_only=True)`` reads."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)), *map(float, np_state[2:])],
        "python": random.getstate(),
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))


# ----------------------------------------------------------------------------------------------------
# logging


class RunLog:
    """Console (through tqdm), TensorBoard and ``metrics.jsonl``; silent on ranks other than 0."""

    def __init__(self, output_dir: Path, *, enabled: bool, tensorboard: bool, resume_step: int | None) -> None:
        self.enabled = enabled
        self.dir = output_dir
        self.writer: Any = None
        self.jsonl: Any = None
        if not enabled:
            return
        output_dir.mkdir(parents=True, exist_ok=True)
        path = output_dir / METRICS_FILE
        if resume_step is not None and path.is_file():
            kept = [line for line in path.read_text().splitlines() if _line_step(line) <= resume_step]
            path.write_text("".join(line + "\n" for line in kept))
        elif resume_step is None and path.is_file():
            path.unlink()
        self.jsonl = path.open("a", buffering=1)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(
                str(output_dir / "tensorboard"), purge_step=resume_step + 1 if resume_step is not None else None
            )

    def console(self, message: str) -> None:
        if self.enabled:
            from tqdm import tqdm

            tqdm.write(message, file=sys.stdout)

    def record(self, record: Mapping[str, Any]) -> None:
        if self.jsonl is not None:
            self.jsonl.write(json.dumps(dict(record), default=float) + "\n")

    def scalars(self, step: int, values: Mapping[str, float], prefix: str) -> None:
        if self.writer is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self.writer.add_scalar(f"{prefix}/{k}", v, step)

    def event(self, step: int, event: str, message: str, **extra: Any) -> None:
        """A noteworthy moment (unfreeze, non-finite loss, stop, resume): console, TensorBoard text, JSONL."""
        if not self.enabled:
            return
        self.console(f"[step {step}] {message}")
        if self.writer is not None:
            self.writer.add_text(f"events/{event}", message, step)
        self.record({"step": step, "kind": "event", "event": event, "message": message, **extra})

    def image(self, step: int, tag: str, img: Tensor) -> None:
        if self.writer is not None:
            self.writer.add_image(tag, img.clamp(0, 1), step)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.jsonl is not None:
            self.jsonl.close()
            self.jsonl = None


def _line_step(line: str) -> float:
    try:
        return float(json.loads(line).get("step", 0))
    except (ValueError, AttributeError):
        return math.inf


def _detach(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.detach()
    if isinstance(value, (list, tuple)):
        return type(value)(_detach(v) for v in value) if not hasattr(value, "_fields") else type(value)(*(_detach(v) for v in value))
    if isinstance(value, dict):
        return {k: _detach(v) for k, v in value.items()}
    return value


# ----------------------------------------------------------------------------------------------------
# the trainer


@dataclass
class _Totals:
    """Running sums between two log lines."""

    values: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    images: int = 0
    since: float = field(default_factory=time.perf_counter)

    def add(self, key: str, value: float) -> None:
        self.values[key] += value
        self.counts[key] += 1


class Trainer:
    """Runs the training of a :class:`Plan` (see the module docstring). Use :func:`train`."""

    def __init__(self, plan: Plan, ctx: DistContext, device: torch.device) -> None:
        if plan.spec.train is None or plan.spec.data.train is None or not plan.steps:
            raise UserError(f"{plan.source}: training needs [train], [data.train] and at least one [steps.<name>]")
        self.plan = plan
        self.spec = plan.spec
        self.cfg: TrainSpec = plan.spec.train
        self.ctx = ctx
        self.device = device
        self.source = plan.source
        self.out = Path(self.spec.run.output_dir)
        self.seed = self.spec.run.seed
        self.total = self.cfg.steps
        self.step = 0
        self.nonfinite = 0
        self.best: dict[str, Any] = {"value": None, "step": None}
        self.last_val: dict[str, float] = {}
        self.last_loss: float | None = None
        self.last_saved: int | None = None
        self._synced = False
        self._check_spec()
        self._setup_precision()

        random.seed(self.seed)
        np.random.seed(self.seed % 2**32)
        torch.manual_seed(self.seed)
        self.networks: dict[str, nn.Module] = {}
        for name, net_plan in plan.networks.items():
            self.networks[name] = self._build(net_plan)
        optimised = {n for s in plan.steps for n in s.spec.networks}
        self.freeze = {
            name: make_freeze(name, plan.networks[name].spec, name in optimised, net, self.source)
            for name, net in self.networks.items()
        }
        for name, fr in self.freeze.items():
            if fr.mode == "fixed":
                self.networks[name].eval()
            fr.apply(self.networks[name])
        self._check_only()
        self.views: dict[str, Any] = {
            n: NetworkView(m) if ctx.active and n in optimised else m for n, m in self.networks.items()
        }
        self.ema: dict[str, EMA] = {}
        self.optimizers = self._make_optimizers()
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.injectors = {
            s.name: [(c, self._component(c, f"steps.{s.name}.injectors.{c.name}", self.views)) for c in s.injectors]
            for s in plan.steps
        }
        self.losses = {
            s.name: [(c, self._component(c, f"steps.{s.name}.losses.{c.name}")) for c in s.losses] for s in plan.steps
        }
        self.validators = [(v, self._component(v, f"validators.{v.name}")) for v in plan.validators]

        primary = plan.steps[0].spec.networks[0]
        self.scale, multiple = self._geometry(primary, self.spec.data.train.scale, "data.train")
        self.dataset = TrainDataset(
            self.spec.data.train, scale=self.scale, seed=self.seed, size_multiple=multiple
        )
        self.stream = BatchStream(
            self.dataset,
            batch_size=self.spec.data.train.batch_size,
            workers=self.spec.data.train.workers,
            seed=self.seed,
            rank=ctx.rank,
            world=ctx.world,
            pin_memory=device.type == "cuda",
        )
        self.val_samples: dict[tuple[int, int], list[Sample]] = {}
        self.image_network = plan.validators[0].spec.network if plan.validators else primary

    # -- setup -----------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _naming(self, where: str) -> Any:
        """Put the file and the spec field in front of a :class:`UserError` raised inside."""
        try:
            yield
        except UserError as exc:
            if str(exc).startswith(f"{self.source}: "):
                raise
            raise UserError(f"{self.source}: {where}: {exc}") from None

    def _component(self, comp: ComponentPlan, where: str, *args: Any) -> Any:
        """``comp.build(*args)``; a :class:`UserError` it raises gets the file and field in front."""
        try:
            return comp.build(*args)
        except UserError as exc:
            raise UserError(f"{self.source}: {where}: {exc}") from None

    def _check_spec(self) -> None:
        cfg, spec, src = self.cfg, self.spec, self.source
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

    def _check_only(self) -> None:
        for sp in self.plan.steps:
            names = [pn for n in sp.spec.networks for pn, _ in self.networks[n].named_parameters()]
            for prefix in getattr(sp.spec, "only", None) or []:
                if not any(n.startswith(prefix) for n in names):
                    tops = sorted({n.split(".", 1)[0] for n in names})
                    raise UserError(
                        f"{self.source}: steps.{sp.name}.only: no parameter name starts with {prefix!r} "
                        f"(top-level modules: {', '.join(tops[:12])})"
                    )

    def _setup_precision(self) -> None:
        precision = self.spec.run.precision
        self.amp_dtype: torch.dtype | None = None
        if precision == "bf16":
            self.amp_dtype = torch.bfloat16
        elif precision == "fp16":
            if self.device.type != "cuda":
                raise UserError(
                    f"{self.source}: run.precision: fp16 needs a CUDA device (running on {self.device}); use bf16 or fp32"
                )
            self.amp_dtype = torch.float16

    def _build(self, net_plan: NetworkPlan) -> nn.Module:
        net = build_network(net_plan, self.device)
        if self.cfg.gradient_checkpointing:
            for m in net.modules():
                if hasattr(m, "gradient_checkpointing"):
                    m.gradient_checkpointing = True
        return net.train()

    def _geometry(self, network: str, scale: int | None, where: str) -> tuple[int, int]:
        net = self.networks[network]
        net_scale = getattr(net, "scale", None)
        if scale is not None and net_scale is not None and int(net_scale) != scale:
            raise UserError(
                f"{self.source}: {where}.scale: {scale}, but network {network!r} upscales by {net_scale}"
            )
        s = scale if scale is not None else net_scale
        if s is None:
            raise UserError(f"{self.source}: {where}.scale: network {network!r} has no scale; set it here")
        return int(s), int(getattr(net, "size_multiple", 1) or 1)

    def _make_optimizers(self) -> dict[str, dict[str, torch.optim.Optimizer]]:
        out: dict[str, dict[str, torch.optim.Optimizer]] = {}
        for s in self.plan.steps:
            o = s.spec.optimizer
            cls = torch.optim.AdamW if o.kind == "adamw" else torch.optim.Adam
            out[s.name] = {
                n: cls(self.networks[n].parameters(), lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
                for n in s.spec.networks
            }
            for opt in out[s.name].values():
                for g in opt.param_groups:
                    g.setdefault("initial_lr", g["lr"])
        return out

    def _wrap_all(self) -> None:
        for name, view in self.views.items():
            if isinstance(view, NetworkView):
                view.wrap(self.device)

    # -- validation data ---------------------------------------------------------------------------------
    def samples_for(self, network: str) -> list[Sample]:
        assert self.spec.data.val is not None
        scale, multiple = self._geometry(network, self.spec.data.val.scale, "data.val")
        key = (scale, multiple)
        if key not in self.val_samples:
            self.val_samples[key] = [
                Sample(s.name, s.lq.to(self.device), s.hq.to(self.device))
                for s in load_val_samples(self.spec.data.val, scale=scale, size_multiple=multiple, seed=self.seed)
            ]
        return self.val_samples[key]

    def eval_model(self, name: str) -> nn.Module:
        return self.ema[name].module if name in self.ema else self.networks[name]

    # -- running ---------------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        """Resume (if asked), train to ``train.steps``, validate, save; see :func:`train`."""
        resume = self._resume_dir()
        if resume is not None:
            self._load(resume)
        else:
            earlier = checkpoint_dirs(self.out / CHECKPOINTS)
            if earlier:
                raise UserError(
                    f"{self.source}: run.output_dir: {self.out} already holds checkpoints of an earlier run (newest "
                    f"step_{earlier[-1][0]}); continue it with --resume (train.resume = \"auto\") or choose another "
                    "output_dir"
                )
            if self.ctx.main:
                clean_temporaries(self.out / CHECKPOINTS)
            self._wrap_all()
            self._per_rank_seed()
        self.log = RunLog(
            self.out, enabled=self.ctx.main, tensorboard=self.cfg.tensorboard,
            resume_step=self.step if resume is not None else None,
        )
        if resume is not None:
            self.log.event(self.step, "resume", f"resumed from {resume}", path=str(resume))
        for fr in self.freeze.values():
            if fr.mode in ("partial", "frozen") and fr.rule is None:
                what = "only " + ", ".join(fr.prefixes) if fr.mode == "partial" else "nothing"
                self.log.console(f"networks.{fr.name}: trains {what} (no unfreeze rule)")
            elif fr.mode in ("full", "fixed") and fr.rule is not None and fr.unfrozen_at is None:
                why = "it trains fully from the start" if fr.mode == "full" else "no step optimises it"
                self.log.console(f"networks.{fr.name}.unfreeze has no effect: {why}")
        try:
            return self._loop()
        finally:
            self.log.close()

    def _resume_dir(self) -> Path | None:
        r = self.cfg.resume
        if r == "never":
            return None
        if r == "auto":
            found = newest_checkpoint(self.out)
            if found is None and self.ctx.main:
                print(f"train.resume = 'auto': no checkpoint in {self.out / CHECKPOINTS}, starting fresh", file=sys.stderr)
            return found
        return Path(r)

    def _per_rank_seed(self) -> None:
        """Rank ``r`` draws from ``seed + r`` (rank 0 and a single process from ``seed``)."""
        s = self.seed + self.ctx.rank
        torch.manual_seed(s)
        np.random.seed(s % 2**32)
        random.seed(s)

    def _loop(self) -> TrainResult:
        from tqdm import tqdm

        bar = tqdm(
            total=self.total, initial=self.step, disable=not self.ctx.main, unit="step", dynamic_ncols=True,
            desc="train", file=sys.stderr,
        )
        totals = _Totals()
        val_every, log_every = self.cfg.val_every, self.cfg.log_every
        try:
            while self.step < self.total:
                self._step_rules()
                ok = self._iteration(totals)
                self.step += 1
                bar.update(1)
                if not ok:
                    if self.nonfinite >= self.cfg.max_nonfinite:
                        return self._stop()
                self._step_rules()
                if self.step % log_every == 0 or self.step == self.total:
                    self._log_train(totals, bar)
                    totals = _Totals()
                new_best = False
                if val_every and self.step % val_every == 0 and self.step < self.total:
                    new_best = self._validate()
                if self.cfg.image_every and self.step % self.cfg.image_every == 0:
                    self._images()
                every = self.cfg.checkpoint_every
                due = (every and self.step % every == 0 and self.step < self.total) or new_best
                if due and self.nonfinite == 0:  # never replace good checkpoints during a non-finite streak
                    self._save()
        finally:
            bar.close()
        if self.validators and self.spec.data.val is not None and self.last_val.get("_step") != self.step:
            self._validate()
        if self.last_saved != self.step:
            self._save()
        self._write_generators()
        self.ctx.barrier()
        self.log.console(f"training done: {self.step} steps, output in {self.out}")
        return TrainResult(0, self._result_networks(), self._result_metrics())

    def _result_networks(self) -> dict[str, nn.Module]:
        return {n: self.eval_model(n) for n in self.networks}

    def _result_metrics(self) -> dict[str, float]:
        out = {k: v for k, v in self.last_val.items() if not k.startswith("_")}
        if self.last_loss is not None:
            out["loss"] = self.last_loss
        return out

    def _stop(self) -> TrainResult:
        last = newest_checkpoint(self.out)
        where = f"the last good checkpoint is {last}" if last is not None else "no checkpoint was written"
        self.log.event(
            self.step, "stop",
            f"training stopped: {self.nonfinite} non-finite losses in a row (train.max_nonfinite = "
            f"{self.cfg.max_nonfinite}); {where}",
        )
        if self.ctx.main:
            print(
                f"restore-run: training stopped at step {self.step}: {self.nonfinite} non-finite losses in a row; {where}",
                file=sys.stderr,
            )
        self.ctx.barrier()
        return TrainResult(1, self._result_networks(), self._result_metrics())

    # -- one iteration -----------------------------------------------------------------------------------
    def _batch(self) -> dict[str, Tensor]:
        batch = self.stream.next()
        nb = self.device.type == "cuda"
        return {k: v.to(self.device, non_blocking=nb) for k, v in batch.items()}

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _iteration(self, totals: _Totals) -> bool:
        """One iteration over every step; False when a step was skipped for a non-finite loss."""
        step = self.step
        states: list[dict[str, Any]] = [self._batch() for _ in range(self.cfg.accumulate)]
        totals.images += sum(int(s["hq"].shape[0]) for s in states) * self.ctx.world
        for opt_map in self.optimizers.values():
            for opt in opt_map.values():
                for g in opt.param_groups:
                    g["lr"] = g["initial_lr"] * lr_factor(step, self.cfg.schedule, self.total, g["initial_lr"])
        all_ok = True
        ran = False
        self._iteration_loss: float | None = None
        for sp in self.plan.steps:
            if not active(sp.spec, step):  # type: ignore[arg-type]
                continue
            result = self._run_step(sp, states, step, totals)
            if result is None:
                continue
            ran = True
            all_ok = all_ok and result
            states = [{k: _detach(v) for k, v in s.items()} for s in states]
        if ran:
            self.nonfinite = 0 if all_ok else self.nonfinite + 1
        if self._iteration_loss is not None:  # several steps: "loss" is the sum of their totals
            totals.add("loss", self._iteration_loss)
        return all_ok

    def _run_step(self, sp: StepPlan, states: list[dict[str, Any]], step: int, totals: _Totals) -> bool | None:
        losses = [(c, fn) for c, fn in self.losses[sp.name] if active(c.spec, step)]
        if not losses:
            return None
        injectors = [(c, fn) for c, fn in self.injectors[sp.name] if active(c.spec, step)]
        opts = self.optimizers[sp.name]
        for opt in opts.values():
            opt.zero_grad(set_to_none=True)
        views = [self.views[n] for n in sp.spec.networks if isinstance(self.views[n], NetworkView)]
        only = self._only(sp)
        # outside DDP, parameters a step does not update need no gradient at all (cheaper backward)
        toggled = [p for p in only if p.requires_grad] if not views else []
        for p in toggled:
            p.requires_grad_(False)
        try:
            values, finite = self._forward_backward(sp, states, step, injectors, losses, views)
        finally:
            for p in toggled:
                p.requires_grad_(True)
        for p in only:
            p.grad = None
        return self._update(sp, step, values, finite, totals)

    def _only(self, sp: StepPlan) -> list[nn.Parameter]:
        """The parameters of the step's networks that ``steps.<name>.only`` excludes from its updates."""
        prefixes = getattr(sp.spec, "only", None)
        if not prefixes:
            return []
        return [
            p for n in sp.spec.networks for pname, p in self.networks[n].named_parameters()
            if not pname.startswith(tuple(prefixes))
        ]

    def _forward_backward(
        self, sp: StepPlan, states: list[dict[str, Any]], step: int, injectors: list[Any], losses: list[Any],
        views: list[NetworkView],
    ) -> tuple[dict[str, float], bool]:
        """Injectors, losses and backward over the micro-batches; (mean loss values, all finite on every rank)."""
        finite = True
        n_micro = len(states)
        values: dict[str, float] = defaultdict(float)
        for i, state in enumerate(states):
            last = i == n_micro - 1
            with contextlib.ExitStack() as stack:
                if not last:
                    for v in views:
                        if v.ddp is not None:
                            stack.enter_context(v.ddp.no_sync())
                with self._autocast():
                    for c, inj in injectors:
                        with self._naming(f"steps.{sp.name}.injectors.{c.name}"):
                            state.update(inj(state, step))
                    total: Tensor | None = None
                    for c, fn in losses:
                        with self._naming(f"steps.{sp.name}.losses.{c.name}"):
                            value = fn(state)
                        values[f"loss/{c.name}"] += float(value.detach().float()) / n_micro
                        term = value.float() * float(c.spec.weight)
                        total = term if total is None else total + term
                    assert total is not None
                    total = total / n_micro
                if "nll" in state and isinstance(state["nll"], Tensor):
                    values["nll"] += float(state["nll"].detach().float().mean()) / n_micro
                values["loss"] += float(total.detach())
                finite = finite and bool(torch.isfinite(total.detach()).all())
                if total.requires_grad:
                    (self.scaler.scale(total) if self.scaler is not None else total).backward()
        return values, not self.ctx.any(not finite, self.device)

    def _update(self, sp: StepPlan, step: int, values: dict[str, float], finite: bool, totals: _Totals) -> bool:
        """Unscale, measure and clip the gradients, then step the optimizers unless something is non-finite."""
        opts = self.optimizers[sp.name]
        if self.scaler is not None:
            for opt in opts.values():
                self.scaler.unscale_(opt)
        norms = {}
        for name in opts:
            params = [p for p in self.networks[name].parameters() if p.grad is not None]
            if not params:
                continue
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad.detach().float()) for p in params]))
            if self.cfg.clip_grad is not None and torch.isfinite(norm):
                coef = (self.cfg.clip_grad / (norm + 1e-6)).clamp(max=1.0)
                for p in params:
                    p.grad.detach().mul_(coef.to(p.grad.dtype))
            norms[name] = float(norm)
        if self.scaler is None and not all(math.isfinite(v) for v in norms.values()):
            finite = False
        if not finite:
            for opt in opts.values():
                opt.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.update()  # lowers the loss scale; also clears the unscale_ records
            bad = {k: v for k, v in values.items() if not math.isfinite(v)}
            self.log.event(
                step + 1, "nonfinite",
                f"steps.{sp.name}: non-finite loss or gradient, update skipped "
                f"({', '.join(f'{k}={v}' for k, v in bad.items()) or 'gradient'}; "
                f"{self.nonfinite + 1} in a row)",
                step_name=sp.name,
            )
            return False
        if self.ctx.active and not self._synced:
            self._broadcast_from_rank0()
        self._synced = True
        for opt in opts.values():
            if self.scaler is not None:
                self.scaler.step(opt)
            else:
                opt.step()
        if self.scaler is not None:
            self.scaler.update()
        if self.cfg.ema is not None:
            for name in opts:
                if name not in self.ema:
                    self.ema[name] = EMA(self.networks[name], self.cfg.ema)
                else:
                    self.ema[name].update(self.networks[name])
        single = len(self.plan.steps) == 1
        for k, v in values.items():
            if single or not k.startswith("loss"):
                totals.add(k, v)
            elif k == "loss":
                totals.add(f"loss/{sp.name}", v)
                self._iteration_loss = (self._iteration_loss or 0.0) + v
            else:
                totals.add(f"loss/{sp.name}.{k[len('loss/'):]}", v)
        for name, v in norms.items():
            totals.add(f"grad_norm/{name}", v)
        return True

    def _broadcast_from_rank0(self) -> None:
        """Make every rank's weights rank 0's once (data-dependent initialisations in the first forward,
        e.g. ActNorm, differ per rank)."""
        with torch.no_grad():
            for net in self.networks.values():
                for t in list(net.parameters()) + list(net.buffers()):
                    dist.broadcast(t.data, src=0)

    # -- unfreezing ----------------------------------------------------------------------------------------
    def _step_rules(self) -> None:
        for fr in self.freeze.values():
            rule = fr.rule
            if rule is None or fr.mode in ("full", "fixed"):
                continue
            if rule.after_steps is not None and self.step >= rule.after_steps:
                self._unfreeze(fr, f"after_steps = {rule.after_steps}")
            elif rule.after_fraction is not None and self.step >= int(math.ceil(rule.after_fraction * self.total)):
                self._unfreeze(fr, f"after_fraction = {rule.after_fraction}")

    def _metric_rules(self, metrics: Mapping[str, float]) -> None:
        for fr in self.freeze.values():
            rule = fr.rule
            if rule is None or rule.metric is None or fr.mode in ("full", "fixed"):
                continue
            if rule.metric not in metrics:
                raise UserError(
                    f"{self.source}: networks.{fr.name}.unfreeze.metric: {rule.metric!r} is not a validation metric "
                    f"(available: {', '.join(sorted(k for k in metrics if not k.startswith('_')))})"
                )
            value = float(metrics[rule.metric])
            better = (
                fr.best is None
                or (rule.metric_mode == "min" and value < fr.best - rule.min_delta)
                or (rule.metric_mode == "max" and value > fr.best + rule.min_delta)
            )
            if better:
                fr.best, fr.bad = value, 0
            else:
                fr.bad += 1
            if fr.bad >= rule.patience:
                by = f" by more than {rule.min_delta:g}" if rule.min_delta > 0 else ""
                plural = "s" if fr.bad != 1 else ""
                self._unfreeze(
                    fr, f"{rule.metric} did not improve{by} for {fr.bad} validation{plural} (best {fr.best:.6g})"
                )

    def _unfreeze(self, fr: Freeze, reason: str) -> None:
        before = fr.mode
        fr.mode = "full"
        fr.unfrozen_at = self.step
        net = self.networks[fr.name]
        count = fr.apply(net)
        view = self.views[fr.name]
        if isinstance(view, NetworkView):
            view.wrap(self.device)
        self.log.event(
            self.step, "unfreeze",
            f"networks.{fr.name}: {before} -> all {count:,} parameters trainable ({reason})",
            network=fr.name, reason=reason,
        )

    # -- logging, validation, images ----------------------------------------------------------------------
    def _lrs(self) -> dict[str, float]:
        return {
            f"lr/{s}.{n}" if len(self.optimizers) > 1 else f"lr/{n}": opt.param_groups[0]["lr"]
            for s, m in self.optimizers.items() for n, opt in m.items()
        }

    def _log_train(self, totals: _Totals, bar: Any) -> None:
        keys = sorted(totals.values)
        raw = torch.tensor([totals.values[k] / max(1, totals.counts[k]) for k in keys], dtype=torch.float64)
        reduced = self.ctx.mean(raw.to(self.device) if self.device.type == "cuda" else raw).tolist()
        values = dict(zip(keys, reduced))
        elapsed = max(1e-9, time.perf_counter() - totals.since)
        values["images_per_s"] = totals.images / elapsed
        values.update(self._lrs())
        if "loss" in values:
            self.last_loss = values["loss"]
        if not self.ctx.main:
            return
        self.log.scalars(self.step, values, "train")
        self.log.record({"step": self.step, "kind": "train", "time": time.time(), **values})
        post = {"loss": f"{values.get('loss', float('nan')):.4g}"}
        running = [sp.name for sp in self.plan.steps if active(sp.spec, max(0, self.step - 1))]
        shown = [f"lr/{name}." for name in running] if len(self.optimizers) > 1 else ["lr/"]
        lr = next((v for k, v in values.items() if any(k.startswith(p) for p in shown)), None)
        if lr is not None:
            post["lr"] = f"{lr:.2e}"
        bar.set_postfix(post, refresh=False)

    def _validate(self) -> bool:
        """Run the validators (rank 0), share the metrics, apply metric rules; True on a new best."""
        metrics: dict[str, float] = {}
        if self.ctx.main:
            metrics = self._run_validators()
        metrics = self.ctx.broadcast(metrics)
        metrics["_step"] = float(self.step)
        self.last_val = metrics
        if self.ctx.main:
            shown = {k: v for k, v in metrics.items() if not k.startswith("_")}
            self.log.scalars(self.step, shown, "val")
            self.log.record({"step": self.step, "kind": "val", **shown})
            self.log.console(
                f"[step {self.step}] validation: " + ", ".join(f"{k} = {v:.5g}" for k, v in sorted(shown.items()))
            )
        self._metric_rules(metrics)
        return self._update_best(metrics)

    def _run_validators(self) -> dict[str, float]:
        metrics: dict[str, float] = {}
        for vplan, validator in self.validators:
            net_name = vplan.spec.network
            model = self.eval_model(net_name)
            assert self.spec.data.val is not None
            scale = self._geometry(net_name, self.spec.data.val.scale, "data.val")[0]
            ctx = ValidationContext(
                device=self.device, scale=scale, step=self.step, output_dir=self.out / "val" / vplan.name
            )
            was = model.training
            try:
                with torch.no_grad():
                    result = validator(model, self.samples_for(net_name), ctx)
            finally:
                model.train(was)
            for k, v in result.metrics.items():
                metrics[f"{vplan.name}.{k}"] = float(v)
        return metrics

    def _update_best(self, metrics: Mapping[str, float]) -> bool:
        name = self.cfg.best_metric
        if name is None:
            return False
        if name not in metrics:
            raise UserError(
                f"{self.source}: train.best_metric: {name!r} is not a validation metric "
                f"(available: {', '.join(sorted(k for k in metrics if not k.startswith('_')))})"
            )
        value = float(metrics[name])
        if not math.isfinite(value):
            return False
        best = self.best["value"]
        if best is None or (value < best if self.cfg.best_mode == "min" else value > best):
            self.best = {"value": value, "step": self.step}
            return True
        return False

    @torch.no_grad()
    def _images(self) -> None:
        """Image grid LR (upscaled) | SR (per temperature for flows) | HR, to TensorBoard and a PNG."""
        if not self.ctx.main:
            return
        from .data.io import write_image

        name = self.image_network
        model = self.eval_model(name)
        if self.spec.data.val is not None:
            sample = self.samples_for(name)[0]
            lq, hq = sample.lq, sample.hq
        else:
            batch = self.dataset.item(0, 0)
            lq, hq = batch["lq"][None].to(self.device), batch["hq"][None].to(self.device)
        was = model.training
        model.eval()
        try:
            tiles = [F.interpolate(lq, size=hq.shape[-2:], mode="bicubic", align_corners=False).clamp(0, 1)]
            if hasattr(model, "decode") and hasattr(model, "encode"):
                for t in self.cfg.image_temperatures:
                    g = torch.Generator(device=self.device).manual_seed(self.seed * 7919 + self.step)
                    tiles.append(model.decode(lq, temperature=t, generator=g).clamp(0, 1))
            else:
                tiles.append(model(lq).clamp(0, 1))
            tiles.append(hq)
        finally:
            model.train(was)
        sep = torch.ones(1, 3, hq.shape[-2], 2, device=hq.device)
        parts: list[Tensor] = []
        for t in tiles:
            if t.shape[-2:] != hq.shape[-2:]:
                t = F.interpolate(t.float(), size=hq.shape[-2:], mode="nearest")
            parts += [t.float(), sep]
        grid = torch.cat(parts[:-1], dim=-1)[0].cpu()
        grid = torch.nan_to_num(grid, nan=0.0)
        write_image(self.out / "images" / f"step_{self.step:07d}.png", grid)
        self.log.image(self.step, "images/lr_sr_hr", grid)

    # -- checkpoints ---------------------------------------------------------------------------------------
    def _training_state(self, rngs: list[Any]) -> dict[str, Any]:
        return {
            "version": 1,
            "step": self.step,
            "optimizers": {s: {n: o.state_dict() for n, o in m.items()} for s, m in self.optimizers.items()},
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "freeze": {n: f.state_dict() for n, f in self.freeze.items()},
            "nonfinite": self.nonfinite,
            "best": dict(self.best),
            "last_val": dict(self.last_val),
            "rng": rngs,
            "data": self.stream.state_dict(),
            "world": self.ctx.world,
            "ema": sorted(self.ema),
            "synced": self._synced,
        }

    def _save(self) -> None:
        rngs = self.ctx.gather(rng_state())
        self.last_saved = self.step
        if not self.ctx.main:
            return
        state = self._training_state(rngs)
        meta = {
            "step": self.step,
            "networks": {n: p.component.name for n, p in self.plan.networks.items()},
            "ema": sorted(self.ema),
            "metrics": {k: v for k, v in self.last_val.items() if not k.startswith("_")},
            "best": dict(self.best),
            "time": time.time(),
        }

        def write(tmp: Path) -> None:
            for n, net in self.networks.items():
                p = self.plan.networks[n]
                save_generator(tmp / f"{n}.safetensors", net, p.component.name, p.params.model_dump(mode="json"))
            for n, e in self.ema.items():
                p = self.plan.networks[n]
                save_generator(tmp / f"{n}.ema.safetensors", e.module, p.component.name, p.params.model_dump(mode="json"))
            torch.save(state, tmp / STATE_FILE)
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2, default=float))

        root = self.out / CHECKPOINTS
        path = write_checkpoint_dir(root, self.step, write)
        keep = {int(self.best["step"])} if self.best.get("step") is not None else set()
        prune_checkpoints(root, self.cfg.keep_last, keep)
        if self.best.get("step") is not None:
            (root / "best.json").write_text(json.dumps(
                {"metric": self.cfg.best_metric, "mode": self.cfg.best_mode, **self.best,
                 "path": str(root / f"step_{self.best['step']}")}, indent=2))
        self.log.record({"step": self.step, "kind": "event", "event": "checkpoint", "path": str(path)})

    def _load(self, folder: Path) -> None:
        try:
            meta = json.loads((folder / META_FILE).read_text())
            state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
        except (OSError, ValueError, RuntimeError) as exc:
            raise UserError(f"{self.source}: train.resume: {folder}: unreadable checkpoint ({exc})") from None
        names = {n: p.component.name for n, p in self.plan.networks.items()}
        if meta.get("networks") != names:
            raise UserError(
                f"{self.source}: train.resume: {folder} holds networks {meta.get('networks')}, the spec has {names}"
            )
        for n, net in self.networks.items():
            net.load_state_dict(read_state_dict(folder / f"{n}.safetensors"))
        for n in state["ema"]:
            e = EMA(self.networks[n], float(self.cfg.ema or 0.999))
            e.module.load_state_dict(read_state_dict(folder / f"{n}.ema.safetensors"))
            self.ema[n] = e
        for n, fs in state["freeze"].items():
            if n in self.freeze:
                self.freeze[n].load_state_dict(fs)
                self.freeze[n].apply(self.networks[n])
        self._wrap_all()
        for s, m in state["optimizers"].items():
            for n, sd in m.items():
                self.optimizers[s][n].load_state_dict(sd)
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.nonfinite = int(state["nonfinite"])
        self.best = dict(state["best"])
        self.last_val = dict(state["last_val"])
        self.stream.load_state_dict(state["data"])
        self._synced = bool(state.get("synced", False))
        self.last_saved = self.step
        rngs = state["rng"]
        if int(state["world"]) == self.ctx.world and self.ctx.rank < len(rngs):
            set_rng_state(rngs[self.ctx.rank])
        else:
            s = self.seed + self.ctx.rank + 7919 * self.step
            torch.manual_seed(s)
            np.random.seed(s % 2**32)
            random.seed(s)

    def _write_generators(self) -> None:
        if not self.ctx.main:
            return
        for n in self.cfg.save_generator:
            p = self.plan.networks[n]
            path = self.out / f"{n}.safetensors"
            save_generator(path, self.eval_model(n), p.component.name, p.params.model_dump(mode="json"))
            self.log.console(f"wrote {path}")


def train(plan: Plan) -> TrainResult:
    """Train the networks of ``plan`` as its ``[train]``, ``[steps.*]`` and ``[data.train]`` say.

    Returns a :class:`TrainResult`; a user mistake raises :class:`UserError`. Under ``torchrun`` every rank
    calls this; rank 0 logs and writes checkpoints.
    """
    ctx, device = DistContext.from_env(plan.device)
    try:
        trainer = Trainer(plan, ctx, device)
        return trainer.run()
    finally:
        ctx.shutdown()


__all__ = [
    "DistContext",
    "EMA",
    "Freeze",
    "RunLog",
    "TrainResult",
    "Trainer",
    "active",
    "checkpoint_dirs",
    "lr_factor",
    "newest_checkpoint",
    "prune_checkpoints",
    "resolve_milestones",
    "train",
    "write_checkpoint_dir",
]
