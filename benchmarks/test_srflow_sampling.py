"""SRFlow sampling: several samples per LR with the conditional features computed once vs. recomputed.

The ratio ``recompute / reuse`` (recorded in ``extra_info``) is what restore-run's sample mode gains by reusing
``model.conditional_features(lr)``; both runs happen in the same process, so machine noise largely cancels.
"""

from __future__ import annotations

import time

import torch

from restorekit_srflow import SRFlowNet

SAMPLES = 4


def _net(device: torch.device) -> SRFlowNet:
    torch.manual_seed(0)
    # the DF2K-4x flow geometry with a shallower RRDB, so that a CPU run stays short
    return SRFlowNet(scale=4, nb=8, K=16, L=3, stack_blocks=[1, 3, 5, 7]).to(device).eval()


def _time(fn, device: torch.device, reps: int = 2) -> float:
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - t0) / reps


def test_sampling_reuses_conditional_features(benchmark, bench_device: torch.device, bench_lr_size: int) -> None:
    net = _net(bench_device)
    size = max(2, bench_lr_size // 2 * 2)
    lr = torch.rand(1, 3, size, size, device=bench_device)

    def reuse() -> None:
        with torch.inference_mode():
            cond = net.conditional_features(lr)
            for s in range(SAMPLES):
                net.decode(lr, temperature=0.8, generator=torch.Generator(device=bench_device).manual_seed(s), cond=cond)

    def recompute() -> None:
        with torch.inference_mode():
            for s in range(SAMPLES):
                net.decode(lr, temperature=0.8, generator=torch.Generator(device=bench_device).manual_seed(s))

    benchmark.pedantic(reuse, rounds=2, iterations=1, warmup_rounds=1)
    baseline = _time(recompute, bench_device)
    ratio = baseline / benchmark.stats.stats.mean
    benchmark.extra_info.update({"device": str(bench_device), "lr_size": size, "samples": SAMPLES,
                                 "speedup_vs_recompute": ratio})
    assert ratio > 1.0
