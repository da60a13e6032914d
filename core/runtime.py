"""The process a run lives in: its place in a ``torchrun`` group, global seeding, DDP wrappers.

Training and inference both read the distributed environment here (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) and
seed the global generators with :func:`seed_everything`.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python's, numpy's and torch's global generators (``deterministic``: ask torch for deterministic
    algorithms too, warning where there are none)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


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
    def read_env(cls) -> "DistContext":
        """The environment's rank, world size and local rank (default: the rank), without joining a group."""
        world = max(1, int(os.environ.get("WORLD_SIZE", "1")))
        if world <= 1:
            return cls()
        rank = int(os.environ.get("RANK", "0"))
        return cls(rank=rank, world=world, local_rank=int(os.environ.get("LOCAL_RANK", str(rank))))

    def device_for(self, device: torch.device) -> torch.device:
        """A CUDA device without an index becomes ``cuda:LOCAL_RANK`` in a group; anything else stays."""
        if device.type == "cuda" and self.active and device.index is None:
            return torch.device("cuda", self.local_rank)
        return device

    @classmethod
    def from_env(cls, device: torch.device) -> tuple["DistContext", torch.device]:
        """Join the process group when ``WORLD_SIZE > 1`` (nccl on CUDA, gloo on CPU); the device of a CUDA
        rank becomes ``cuda:LOCAL_RANK``."""
        env = cls.read_env()
        if not env.active:
            return cls(), device
        if device.type == "cuda":
            device = torch.device("cuda", env.local_rank)
            torch.cuda.set_device(device)
        owns = False
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            owns = True
        return cls(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=env.local_rank, owns_group=owns), device

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

    def in_group(self) -> bool:
        """Whether an initialised process group of more than one rank exists."""
        return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1

    def shutdown(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def broadcast_from_rank0(networks: Any) -> None:
    """Make every rank's weights rank 0's (data-dependent initialisations in the first forward, e.g. ActNorm,
    differ per rank)."""
    with torch.no_grad():
        for net in networks:
            for t in list(net.parameters()) + list(net.buffers()):
                dist.broadcast(t.data, src=0)


def unwrap(module: Any) -> Any:
    """The network inside a :class:`DistributedDataParallel` wrapper (anything else unchanged)."""
    return module.module if isinstance(module, DistributedDataParallel) else module


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
        self.ddp: DistributedDataParallel | None = None

    def wrap(self, device: torch.device) -> None:
        """(Re)build the DDP wrapper over the parameters that currently require grad."""
        if not any(p.requires_grad for p in self.net.parameters()):
            self.ddp = None
            return
        ids = [device.index] if device.type == "cuda" else None
        self.ddp = DistributedDataParallel(_Dispatch(self.net), device_ids=ids, find_unused_parameters=True)

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



def amp_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of ``run.precision`` (None for fp32), one meaning for training and inference on every
    device (the plan checked that fp16 runs on CUDA)."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

__all__ = ["DistContext", "NetworkView", "amp_dtype", "broadcast_from_rank0", "seed_everything", "unwrap"]
