"""SRFlow sampling: ``SAMPLES`` samples of one LR. The fast path computes the conditional features once and lets
:class:`restorekit.perf.SampleBatcher` choose how many samples to decode per call; the plain path decodes each
sample on its own and recomputes the features. A second check: the batcher is at least as fast as a loop of
single decodes with cached features (what a batch slower than the loop would lose)."""

from __future__ import annotations

import statistics

import torch
from restorekit.bench import interleaved
from restorekit.perf import SampleBatcher
from restorekit_srflow import SRFlowNet

SAMPLES = 8


def _net(device: torch.device) -> SRFlowNet:
    torch.manual_seed(0)
    # the DF2K-4x flow geometry with a shallower RRDB, so that a CPU run stays short
    return SRFlowNet(scale=4, nb=8, K=16, L=3, stack_blocks=[1, 3, 5, 7]).to(device).eval()


def test_sampling_reuses_conditional_features(measure, bench_device: torch.device, bench_lr_size: int) -> None:
    rows = measure("srflow-nb8", _net(bench_device), size=bench_lr_size, samples=SAMPLES)
    sample = next(r for r in rows if r.path == "sample")
    assert sample.max_abs_diff is not None and sample.max_abs_diff <= 1e-4
    assert sample.speedup_vs_plain is not None and sample.speedup_vs_plain > 1.0


def test_batched_sampling_not_slower_than_loop(benchmark, bench_device: torch.device, bench_lr_size: int,
                                               bench_repeats: int) -> None:
    net = _net(bench_device)
    size = max(2, bench_lr_size // 2 * 2)
    lr = torch.rand(1, 3, size, size, device=bench_device)
    gen = torch.Generator().manual_seed(0)
    sets = [[(0.8 * torch.randn((1, *s), generator=gen)).to(bench_device) for s in net.latent_shapes(lr.shape)]
            for _ in range(SAMPLES)]
    batcher = SampleBatcher()

    def loop() -> list[torch.Tensor]:
        cond = net.conditional_features(lr)
        return [net.decode(lr, latents=zs, cond=cond) for zs in sets]

    def chosen() -> list[torch.Tensor]:
        return batcher.decode(net, lr, sets, net.conditional_features(lr))

    with torch.inference_mode():
        diff = max(float((a - b).abs().max()) for a, b in zip(loop(), chosen()))
        loop_t, chosen_t = interleaved([loop, chosen], bench_repeats, 1)
        benchmark.pedantic(chosen, rounds=1, iterations=1)
    ratio = statistics.median(a / b for a, b in zip(loop_t, chosen_t))
    benchmark.extra_info.update({"samples": SAMPLES, "lr_size": size, "chunk": batcher.chunks,
                                 "speedup_vs_loop": ratio, "max_abs_diff": diff})
    assert diff <= 1e-4
    assert ratio >= 0.9  # never clearly slower than the loop (0.9: the noise of a shared CPU)
