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

Modules: :mod:`.loop` (the :class:`Trainer`), :mod:`.step` (one optimisation step), :mod:`.schedules`,
:mod:`.freeze`, :mod:`.state` (counters, RNG states, EMA), :mod:`.persist` (checkpoint folders of a run),
:mod:`.logging`, :mod:`.validation`, :mod:`.setup`; the process group lives in :mod:`restorekit.runtime`.
"""

from __future__ import annotations

from ..checkpoint import checkpoint_dirs, newest_checkpoint, prune_checkpoints, write_checkpoint_dir
from ..plan import Plan
from ..runtime import DistContext
from .freeze import Freeze
from .logging import RunLog
from .loop import Trainer, TrainResult
from .schedules import active, lr_factor, resolve_milestones
from .state import EMA, TrainingState


def train(plan: Plan) -> TrainResult:
    """Train the networks of ``plan`` as its ``[train]``, ``[steps.*]`` and ``[data.train]`` say.

    Returns a :class:`TrainResult`; a user mistake raises :class:`UserError`. Under ``torchrun`` every rank
    calls this; rank 0 logs and writes checkpoints.
    """
    ctx, device = DistContext.from_env(plan.device)
    try:
        return Trainer(plan, ctx, device).run()
    finally:
        ctx.shutdown()


__all__ = [
    "DistContext",
    "EMA",
    "Freeze",
    "RunLog",
    "TrainResult",
    "Trainer",
    "TrainingState",
    "active",
    "checkpoint_dirs",
    "lr_factor",
    "newest_checkpoint",
    "prune_checkpoints",
    "resolve_milestones",
    "train",
    "write_checkpoint_dir",
]
