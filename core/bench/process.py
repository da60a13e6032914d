"""Peak memory in a fresh process (CPU): :class:`MemoryJob` says what a child Python process builds and runs
once; :func:`process_peak_mb` starts it and reads back its peak RSS increase."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable

import torch
from torch import nn

from ..components import Switches
from ..perf import SampleBatcher
from .config import BenchConfig
from .measure import RssSampler, _precision
from .models import _draw_sets, freeze_as_scheduled, _plain_step, _train_autocast, _train_batch, _train_loss


@dataclass
class MemoryJob:
    """What a child process runs once to measure one path's peak RSS (see :func:`process_peak_mb`)."""

    module: str  # a torch.save'd module (this run's own temporary file)
    flow: bool
    device: str
    precision: str
    lr: int
    batch: int
    scale: int
    path: str
    variant: str  # plain | fast
    samples: int = 0
    temperature: float = 0.8
    seed: int = 0
    layout: str = "contiguous"
    chunk: int = 1
    threads: int = 1
    inference_switches: tuple[str, ...] = ()  # the generator's declared switches (restorekit.Switches)
    training_switches: tuple[str, ...] = ()
    frozen_in_training: tuple[str, ...] = ()

    @property
    def switches(self) -> Switches:
        return Switches(tuple(self.inference_switches), tuple(self.training_switches), tuple(self.frozen_in_training))


def process_peak_mb(job: MemoryJob) -> tuple[float, str]:
    """Peak RSS increase of one call of ``job``'s path, in a fresh Python process: in this process freed memory
    stays mapped (the allocator keeps it), so a second path would reuse the first one's pages and look free."""
    import subprocess

    cmd = [sys.executable, "-c", "import sys, restorekit.bench.process as p; p._memory_child(sys.argv[1])",
           json.dumps(asdict(job))]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if res.returncode != 0:
        tail = (res.stderr.strip().splitlines() or ["no output"])[-1][:200]
        raise RuntimeError(f"memory measurement of {job.path}/{job.variant} failed: {tail}")
    return float(json.loads(res.stdout.strip().splitlines()[-1])["peak_mb"]), "rss-process"


def _memory_child(spec: str) -> None:
    job = MemoryJob(**json.loads(spec))
    torch.set_num_threads(job.threads)
    module: nn.Module = torch.load(job.module, weights_only=False).eval()
    device = torch.device(job.device)
    module.to(device)
    fast = job.variant == "fast"
    fn = _job_fn(job, module, device, fast)
    with RssSampler() as sampler:
        fn()
    print(json.dumps({"peak_mb": sampler.increase_mb}))


def _job_fn(job: MemoryJob, module: nn.Module, device: torch.device, fast: bool) -> Callable[[], Any]:
    from ..perf import fast_inference, to_layout

    if job.path.startswith("train"):
        from .training import TrainerStep

        lr, hr = _train_batch(job.batch, job.lr, job.scale, job.seed, device)
        module.train()  # a loaded or exercised flow (models._exercise_flow): data-dependent layers initialised
        if hasattr(module, "gradient_checkpointing"):
            module.gradient_checkpointing = fast and job.path == "train-ckpt"  # type: ignore[assignment]
        amp = _train_autocast(device, job.precision)
        if fast:
            step = TrainerStep(module, job.switches, flow=job.flow, lr=lr, hr=hr, precision=job.precision,
                               frozen=job.path != "train-all")
            with torch.no_grad(), amp:  # frozen parts choose their layout at their first call: a one-time
                _train_loss(module, hr, lr, job.flow)  # probe, not part of a step's memory
            return step
        if job.path != "train-all":
            freeze_as_scheduled(module, job.switches)
        return _plain_step(module, hr, lr, job.flow, amp)
    gen = torch.Generator().manual_seed(job.seed)
    lr = torch.rand(job.batch, 3, job.lr, job.lr, generator=gen).to(device)
    if fast:
        fast_inference(module, job.switches)
        to_layout(module, job.layout)
    x = lr.contiguous(memory_format=torch.channels_last) if fast and job.layout == "channels_last" else lr
    sets = _draw_sets(module, lr, job.samples, job.temperature, job.seed) if job.path == "sample" else []
    batcher = SampleBatcher()
    batcher.chunks[(str(x.device), tuple(int(d) for d in x.shape))] = job.chunk

    def run() -> Any:
        with torch.inference_mode(), _precision(device, job.precision):
            if job.path == "forward":
                return module(x)
            if not fast:
                return [module.decode(lr, latents=zs) for zs in sets]
            cond = module.conditional_features(x) if hasattr(module, "conditional_features") else None
            return batcher.decode(module, x, sets, cond)

    return run


def _memory_for(cfg: BenchConfig, device: torch.device, job: MemoryJob | None
                ) -> Callable[[str, Callable[[], Any]], tuple[float, str]] | None:
    """How ``_row`` measures peak memory: in a child process on the CPU (``memory_mode = "process"``), else
    in this process."""
    if job is None or device.type != "cpu" or cfg.memory_mode != "process":
        return None
    return lambda variant, _fn: process_peak_mb(replace(job, variant=variant))


__all__ = ["MemoryJob", "process_peak_mb"]
