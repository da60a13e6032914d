"""Run a plan: dispatch to training, evaluation or inference. Returns the process exit status.

A train pipeline with an ``[infer]`` table runs that inference with the trained networks afterwards."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from .plan import Plan


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def execute(plan: Plan) -> int:
    """Run ``plan`` in its mode; 0 on success, 1 when part of the work failed."""
    run = plan.spec.run
    seed_everything(run.seed, run.deterministic)
    if run.mode == "train":
        from .train import train

        result = train(plan)
        if result.exit_code != 0 or plan.spec.infer is None:
            return result.exit_code
        if int(os.environ.get("RANK", "0")) != 0:  # after a distributed run, rank 0 alone runs the inference
            return 0
        from .infer import infer

        return infer(plan, networks=result.networks, shard=False).exit_code
    if run.mode == "eval":
        from .evaluate import evaluate

        return evaluate(plan).exit_code
    from .infer import infer

    return infer(plan).exit_code
