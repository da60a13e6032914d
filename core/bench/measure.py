"""Measuring in this process: the precision context, interleaved timing on torch.utils.benchmark's clock,
the bicubic yardstick, peak memory (CUDA allocator, or the RSS sampled by a thread) and :func:`_row`, which
turns one case's plain and fast paths into a :class:`~restorekit.bench.Row`."""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import threading
import time
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..perf import sync
from .config import BenchConfig, Row
from .models import BenchModel


@contextlib.contextmanager
def _precision(device: torch.device, precision: str) -> Iterator[None]:
    if precision in ("fp32", "tf32"):
        from ..perf import set_tf32, tf32_enabled

        before = tf32_enabled()
        set_tf32(precision == "tf32")
        try:
            yield
        finally:
            set_tf32(before)
        return
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    with torch.autocast(device.type, dtype=dtype):
        yield


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):  # not Linux: ru_maxrss (lifetime high-water mark)
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak if sys.platform == "darwin" else peak * 1024)


class RssSampler:
    """Peak resident set size while the block runs, sampled every ``interval`` seconds by a thread."""

    def __init__(self, interval: float = 0.001) -> None:
        self.interval = interval
        self.start = self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "RssSampler":
        self.start = self.peak = _rss_bytes()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(self.interval)

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, _rss_bytes())

    @property
    def increase_mb(self) -> float:
        return max(0, self.peak - self.start) / 2**20


def peak_memory_mb(fn: Callable[[], Any], device: torch.device) -> tuple[float, str]:
    """Peak memory of one call of ``fn`` above what is in use before it, in MiB, and how it was measured."""
    import gc

    gc.collect()
    if device.type == "cuda":
        sync(device)
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        sync(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20, "cuda-max-allocated"
    with RssSampler() as s:
        fn()
    return s.increase_mb, "rss-sampled"


def _timer(fn: Callable[[], Any]) -> Any:
    from torch.utils.benchmark import Timer

    return Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())


def _clock() -> Callable[[], float]:
    """torch.utils.benchmark's clock: ``perf_counter`` after synchronising the accelerator (CUDA)."""
    try:
        from torch.utils.benchmark.utils.timer import timer

        return timer
    except ImportError:  # pragma: no cover - older torch
        return time.perf_counter


def interleaved(fns: Sequence[Callable[[], Any]], repeats: int, warmup: int) -> list[list[float]]:
    """Seconds per call of each function, ``repeats`` times, interleaved (a, b, a, b, …) after ``warmup`` calls
    of each, on torch.utils.benchmark's synchronising clock. (``Timer.timeit(1)`` would run every call three
    times — it warms up twice per measurement — which triples the cost of a multi-second decode.)"""
    clock = _clock()
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(max(1, repeats)):
        for k, fn in enumerate(fns):
            t0 = clock()
            fn()
            times[k].append(clock() - t0)
    return times


def bicubic_seconds(lr: Tensor, scale: int) -> float:
    """Median seconds of a bicubic upscale of ``lr`` (Timer.blocked_autorange: short, many calls)."""
    m = _timer(lambda: F.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False))
    return float(m.blocked_autorange(min_run_time=0.05).median)


def relative_spread(values: Sequence[float]) -> float:
    """Interquartile range / median (0 for fewer than 2 values)."""
    if len(values) < 2:
        return 0.0
    q = statistics.quantiles(values, n=4, method="inclusive")
    med = statistics.median(values)
    return (q[2] - q[0]) / med if med > 0 else 0.0


def _fp32(device: torch.device, fn: Callable[[], Any]) -> Any:
    """``fn()`` with autocast off: the fp32 reference the fast path's output is compared with."""
    with torch.autocast(device.type, enabled=False):
        return fn()


def _max_diff(a: Any, b: Any) -> float:
    if isinstance(a, (list, tuple)):
        return max((_max_diff(x, y) for x, y in zip(a, b)), default=0.0)
    return float((a.float() - b.float()).abs().max())


def _row(bm: BenchModel, path: str, device: torch.device, precision: str, lr: int, batch: int, samples: int,
         scale: int, pixels: int, bicubic: float, f_plain: Callable[[], Any], f_fast: Callable[[], Any],
         diff: float, cfg: BenchConfig, note: str, flow: bool,
         memory: Callable[[str, Callable[[], Any]], tuple[float, str]] | None = None,
         extras: dict[str, Callable[[], Any]] | None = None) -> Row:
    extras = extras or {}
    plain_t, fast_t, *extra_t = interleaved([f_plain, f_fast, *extras.values()], cfg.repeats, cfg.warmup)
    ratios = [p / f for p, f in zip(plain_t, fast_t) if f > 0]
    med = statistics.median(fast_t)
    peak = plain_peak = None
    kind = ""
    if cfg.memory:
        measure = memory or (lambda _variant, fn: peak_memory_mb(fn, device))
        plain_peak, kind = measure("plain", f_plain)
        peak, kind = measure("fast", f_fast)
    images = batch * samples
    return Row(
        model=bm.name, path=path, device=str(device), precision=precision, lr=lr, batch=batch, samples=samples,
        scale=scale, ms=med * 1e3, ms_per_image=med * 1e3 / images, megapixels_per_s=batch * pixels / med / 1e6,
        samples_per_s=images / med if flow else None, plain_ms=statistics.median(plain_t) * 1e3,
        speedup_vs_plain=statistics.median(ratios) if ratios else None, vs_bicubic=med / bicubic,
        spread=relative_spread(fast_t), peak_mb=peak, plain_peak_mb=plain_peak, memory_kind=kind,
        max_abs_diff=diff, repeats=len(fast_t), times_ms=[t * 1e3 for t in fast_t], note=note,
        extra_ms={k: statistics.median(t) * 1e3 for k, t in zip(extras, extra_t)},
    )


__all__ = ["RssSampler", "bicubic_seconds", "interleaved", "peak_memory_mb", "relative_spread"]
