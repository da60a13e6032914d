"""``restore-run --benchmark --onnx``: the same case's model exported to ONNX and run on onnxruntime (CUDA where
onnxruntime offers it, else the CPU), timed interleaved with eager PyTorch on the same inputs.

Rows ``forward-onnx`` (``model(lr)``; a flow's temperature-0 ``mean`` graph) and, for flows, ``sample-onnx`` (the
sampling graph fed the case's latent sets, against ``decode(lr, latents)`` per set). Their ``plain_ms`` is eager's
time, ``speedup_vs_plain`` eager/onnxruntime, ``max_abs_diff`` onnxruntime against eager."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from ..export import export_model
from ..export.runtime import ort_session, require
from .config import BenchConfig, Row
from .measure import _max_diff, _row, peak_memory_mb
from .models import BenchModel


def _session(model: Any, kind: str, folder: Path) -> Any:
    path = folder / f"{kind}.onnx"
    export_model(model, path, graph=kind, check=False, name="benchmark")
    return ort_session(path, threads=torch.get_num_threads())


def onnx_rows(bm: BenchModel, plain: Any, lr: Tensor, sets: list[list[Tensor]] | None, device: torch.device,
              precision: str, base: float, cfg: BenchConfig) -> list[Row]:
    """The onnxruntime rows of one case (fp32 only: an fp16 ONNX file is a separate export). The graphs are exported
    first (outside inference mode), then timed under it."""
    require("onnx", "onnxscript", "onnxruntime", why="--benchmark --onnx")
    with tempfile.TemporaryDirectory(prefix="restorekit-bench-onnx-") as tmp:
        session = _session(plain, "mean" if bm.flow else "forward", Path(tmp))
        sampler = _session(plain, "sample", Path(tmp)) if bm.flow and sets else None
        with torch.inference_mode():
            return _timed(bm, plain, lr, sets, session, sampler, device, precision, base, cfg)


def _timed(bm: BenchModel, plain: Any, lr: Tensor, sets: list[list[Tensor]] | None, session: Any, sampler: Any,
           device: torch.device, precision: str, base: float, cfg: BenchConfig) -> list[Row]:
    scale = int(getattr(plain, "scale", 1) or 1)
    b, side = int(lr.shape[0]), int(lr.shape[-1])
    pixels = (side * scale) ** 2
    lr_np = lr.detach().cpu().numpy()
    note = f"onnxruntime {session.get_providers()[0]}"

    def memory(_variant: str, fn: Callable[[], Any]) -> tuple[float, str]:
        return peak_memory_mb(fn, device)

    def f_eager() -> Any:
        return plain(lr)

    def f_ort() -> Any:
        return torch.from_numpy(session.run(None, {"lr": lr_np})[0])

    rows = [_row(bm, "forward-onnx", device, precision, side, b, 1, scale, pixels, base, f_eager, f_ort,
                 _max_diff(f_ort(), f_eager().cpu()), cfg, note, flow=False, memory=memory)]
    if sampler is not None and sets:
        names = [i.name for i in sampler.get_inputs()]
        feeds = [{"lr": lr_np, **{n: z.detach().cpu().numpy() for n, z in zip(names[1:], zs)}} for zs in sets]

        def s_eager() -> Any:
            return [plain.decode(lr, latents=zs) for zs in sets]

        def s_ort() -> Any:
            return [torch.from_numpy(np.asarray(sampler.run(None, f)[0])) for f in feeds]

        diff = _max_diff(s_ort(), [x.cpu() for x in s_eager()])
        rows.append(_row(bm, "sample-onnx", device, precision, side, b, len(sets), scale, pixels * len(sets),
                         base * len(sets), s_eager, s_ort, diff, cfg, note, flow=True, memory=memory))
    return rows


__all__ = ["onnx_rows"]
