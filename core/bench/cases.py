"""One benchmark case (model × device × precision × LR size × batch: :func:`run_case`) and the whole run
(:func:`run_benchmark`)."""

from __future__ import annotations

import copy
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from ..errors import UserError, one_line
from ..perf import SampleBatcher, choose_layout, fast_inference, in_layout, maybe_compile
from .config import BenchConfig, Row, check_config
from .measure import _fp32, _max_diff, _precision, _row, bicubic_seconds
from .models import BenchModel, _draw_sets, resolve_models
from .process import MemoryJob, _memory_for
from .training import train_rows


def run_case(bm: BenchModel, device: torch.device, precision: str, size: int, batch: int, cfg: BenchConfig,
             log: Callable[[str], None]) -> list[Row]:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="restorekit-bench-") as tmp:
        saved = Path(tmp) / "module.pt"
        if cfg.memory and cfg.memory_mode == "process" and device.type == "cpu":
            torch.save(bm.module, saved)
        return _run_case(bm, device, precision, size, batch, cfg, log, str(saved))


def _run_case(bm: BenchModel, device: torch.device, precision: str, size: int, batch: int, cfg: BenchConfig,
              log: Callable[[str], None], saved: str) -> list[Row]:
    plain = bm.module.to(device)
    fast = copy.deepcopy(plain)
    scale = int(getattr(plain, "scale", 1) or 1)
    mult = int(getattr(plain, "size_multiple", 1) or 1)
    lr_side = max(mult, size // mult * mult)
    gen = torch.Generator().manual_seed(cfg.seed)
    lr = torch.rand(batch, 3, lr_side, lr_side, generator=gen).to(device)
    out_pixels = (lr_side * scale) ** 2
    rows: list[Row] = []
    note = ""
    with torch.inference_mode(), _precision(device, precision):
        switches = fast_inference(fast, bm.switches)
        layout = choose_layout(fast, lr)
        fast_fn: Callable[[Tensor], Any] = fast
        if cfg.compile:
            compiled, note = maybe_compile(fast, in_layout(layout, lr), warn=log)
            fast_fn = compiled
        note = f"layout={layout}" + (", fast_inference" if switches else "") + (f"; {note}" if note else "")
        job = MemoryJob(saved, bm.flow, str(device), precision, lr_side, batch, scale, "forward", "fast",
                        samples=cfg.samples, temperature=cfg.temperature, seed=cfg.seed, layout=layout,
                        threads=torch.get_num_threads(), inference_switches=bm.switches.inference,
                        training_switches=bm.switches.training, frozen_in_training=bm.switches.frozen_in_training)
        x_fast = in_layout(layout, lr)
        base = bicubic_seconds(lr, scale)

        def f_plain() -> Any:
            return plain(lr)

        def f_fast() -> Any:
            return fast_fn(x_fast)

        diff = _max_diff(f_fast(), _fp32(device, f_plain))
        rows.append(_row(bm, "forward", device, precision, lr_side, batch, 1, scale, out_pixels, base,
                         f_plain, f_fast, diff, cfg, note, flow=False, memory=_memory_for(cfg, device, job)))
        if bm.flow and cfg.samples > 0:
            sets = _draw_sets(plain, lr, cfg.samples, cfg.temperature, cfg.seed)
            batcher = SampleBatcher()

            def s_plain() -> Any:
                return [plain.decode(lr, latents=zs) for zs in sets]

            def s_fast() -> Any:
                cond = fast.conditional_features(x_fast) if hasattr(fast, "conditional_features") else None
                return batcher.decode(fast, x_fast, sets, cond)

            def s_loop() -> Any:  # one decode per sample, features computed once
                cond = fast.conditional_features(x_fast)
                return [fast.decode(x_fast, latents=zs, cond=cond) for zs in sets]

            def s_batch() -> Any:  # every sample in one batch, features computed once
                return SampleBatcher._run(fast, x_fast, sets, {"cond": fast.conditional_features(x_fast)})

            diff = _max_diff(s_fast(), _fp32(device, s_plain))
            s_fast()  # let the batcher settle before timing
            chunk = next(iter(batcher.chunks.values()), 1)
            cached = hasattr(fast, "conditional_features") and batch == 1 and cfg.samples > 1
            extras = {"loop_cached": s_loop, "one_batch_cached": s_batch} if cached else {}
            rows.append(_row(bm, "sample", device, precision, lr_side, batch, cfg.samples, scale,
                             out_pixels * cfg.samples, base * cfg.samples, s_plain, s_fast, diff, cfg,
                             f"{note}; chunk={chunk}", flow=True,
                             memory=_memory_for(cfg, device, replace(job, path="sample", chunk=chunk)),
                             extras=extras))
        times = [base]
    if cfg.onnx and precision == "fp32":  # exported outside the precision and inference-mode contexts
        from .onnxrt import onnx_rows

        sets_onnx = _draw_sets(plain, lr, cfg.samples, cfg.temperature, cfg.seed) if bm.flow else None
        rows.extend(onnx_rows(bm, plain, lr, sets_onnx, device, precision, base, cfg))
    if cfg.train:
        rows.extend(train_rows(bm, device, precision, lr_side, batch, scale, base, cfg, note, job))
    with torch.inference_mode():
        rows.append(Row(bm.name, "bicubic", str(device), precision, lr_side, batch, 1, scale, base * 1e3,
                        base * 1e3 / batch, batch * out_pixels / base / 1e6, None, None, None, 1.0, 0.0, None,
                        None, "", None, 1, [t * 1e3 for t in times]))
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def run_benchmark(
    cfg: BenchConfig, registry: Any, log: Callable[[str], None] | None = None
) -> tuple[list[Row], list[str]]:
    """Measure every case of ``cfg``; returns the rows and notes (skipped models and cases). ``log`` gets each
    case's name before it runs (default: the ``restorekit.bench`` logger, at INFO)."""
    say = log or logging.getLogger("restorekit.bench").info
    check_config(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    models, notes = resolve_models(cfg.models, registry)
    rows: list[Row] = []
    for bm in models:
        for d in cfg.devices:
            auto = "cuda" if torch.cuda.is_available() else "cpu"
            device = torch.device(auto if d == "auto" else d)
            for precision in cfg.precisions:
                if precision == "fp16" and device.type != "cuda":
                    notes.append(f"{bm.name} {device} fp16: skipped (fp16 needs a CUDA device)")
                    continue
                for size in cfg.sizes:
                    for batch in cfg.batches:
                        what = f"{bm.name} {device} {precision} LR {size} batch {batch}"
                        say(f"benchmark: {what}")
                        try:
                            rows.extend(run_case(bm, device, precision, size, batch, cfg, say))
                        except UserError:
                            raise
                        except (RuntimeError, ValueError, NotImplementedError) as exc:
                            notes.append(f"{what}: skipped ({one_line(exc, named=True, limit=200)})")
        bm.module.to("cpu")
    if models and not rows:
        raise UserError(f"--benchmark: nothing could be measured; {notes[-1] if notes else 'no case ran'}")
    return rows, notes


__all__ = ["run_benchmark", "run_case"]
