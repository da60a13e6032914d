"""A large image through ``restore`` (encode + decode at T = 1) with the DF2K-4X-sized SRFlow, tiled: peak RSS
stays bounded by the tile, not the image. The target: a 1024×1024 LR at 4× within 3 GB of peak RSS.

``RESTOREKIT_BENCH_LARGE_LR`` sets the LR side (default 256, 32 with ``--benchmark-disable``; 1024 took 16.5 min and
2.1 GB on a 2-core CPU, see docs/performance.md), ``RESTOREKIT_BENCH_LARGE_TILE`` the tile (default 128 LR pixels, overlap 16). Peak RSS is sampled in this process every 10 ms (absolute: it includes
the interpreter, torch and the weights)."""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from restorekit.bench import RssSampler
from restorekit.tiling import tiled_flow_decode, tiled_flow_encode
from restorekit_srflow import SRFlowNet

LIMIT_MB = 3 * 1024


def test_tiled_restore_of_a_large_image_stays_within_3_gb(benchmark) -> None:
    # --benchmark-disable (a smoke run): a 32-pixel LR unless asked otherwise
    side = int(os.environ.get("RESTOREKIT_BENCH_LARGE_LR", "32" if getattr(benchmark, "disabled", False) else "256"))
    tile = int(os.environ.get("RESTOREKIT_BENCH_LARGE_TILE", "128"))
    torch.manual_seed(0)
    net = SRFlowNet().eval()  # the DF2K-4X geometry (nb 23, K 16, L 3); random weights cost the same
    g = torch.Generator().manual_seed(1)
    lr = F.interpolate(torch.rand(1, 3, max(1, side // 8), max(1, side // 8), generator=g), size=(side, side),
                       mode="bicubic").clamp(0, 1)
    hr = F.interpolate(lr, scale_factor=4, mode="bicubic").clamp(0, 1)

    def restore() -> torch.Tensor:
        with torch.inference_mode():
            zs = tiled_flow_encode(net, hr, lr, tile=tile, overlap=16)
            return tiled_flow_decode(net, lr, [zs], tile=tile, overlap=16).outputs[0]

    with RssSampler(0.01) as rss:
        out = benchmark.pedantic(restore, rounds=1, iterations=1)
    benchmark.extra_info.update({"lr": side, "tile": tile, "peak_rss_mb": rss.peak / 2**20,
                                 "increase_mb": rss.increase_mb})
    assert float((out - hr).abs().max()) < 1e-3  # the flow is invertible: restore gives the image back
    assert rss.peak / 2**20 <= LIMIT_MB
