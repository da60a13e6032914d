"""Run a plan: dispatch to training, evaluation or inference. Returns the process exit status.

A train pipeline with an ``[infer]`` table runs that inference with the trained networks afterwards, and one with an
``[eval]`` table then runs that evaluation (its validators, its temperature sweep) on them."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch

from .files import OutputLock
from .perf import set_tf32
from .plan import Plan
from .runtime import DistContext, seed_everything


def output_folders(plan: Plan) -> list[tuple[Path, str]]:
    """The folders a run of ``plan`` writes into, with the spec field that names each."""
    spec = plan.spec
    folders: list[tuple[Path, str]] = []
    if spec.run.mode in ("train", "eval"):
        folders.append((Path(spec.run.output_dir), "run.output_dir"))
    if spec.infer is not None and spec.run.mode in ("train", "infer"):
        out = spec.infer.output_dir if spec.infer.output_dir is not None else Path(spec.run.output_dir) / "infer"
        if all(os.path.realpath(out) != os.path.realpath(f) for f, _ in folders):
            folders.append((Path(out), "infer.output_dir"))
    return folders


def execute(plan: Plan) -> int:
    """Run ``plan`` in its mode; 0 on success, 1 when part of the work failed.

    The run holds the lock of every output folder it writes (:class:`restorekit.files.OutputLock`): a second run
    on the same folder stops at once with one line naming this one's PID. Under torchrun, rank 0 holds it for
    the whole group."""
    with contextlib.ExitStack() as stack:
        if DistContext.read_env().rank == 0:
            for folder, what in output_folders(plan):
                stack.enter_context(OutputLock(folder, what))
        return _execute(plan)


def _execute(plan: Plan) -> int:
    run = plan.spec.run
    seed_everything(run.seed, run.deterministic)
    if torch.cuda.is_available():
        set_tf32(run.tf32)
    if run.mode == "train":
        from .train import train

        result = train(plan)
        after = plan.spec.infer is not None or plan.spec.eval is not None
        if result.exit_code != 0 or not after:
            return result.exit_code
        if DistContext.read_env().rank != 0:  # after a distributed run, rank 0 alone runs inference and evaluation
            return 0
        code = 0
        if plan.spec.infer is not None:
            from .infer import infer

            code = infer(plan, networks=result.networks, shard=False).exit_code
        if plan.spec.eval is not None:
            from .evaluate import evaluate

            code = max(code, evaluate(plan, networks=result.networks).exit_code)
        return code
    if run.mode == "eval":
        from .evaluate import evaluate

        return evaluate(plan).exit_code
    from .infer import infer

    return infer(plan).exit_code
