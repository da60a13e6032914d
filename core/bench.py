"""``restore-run --benchmark``: throughput and peak memory of generator plugins, as ratios in one process.

For every model × LR size × batch × precision × device the benchmark times, interleaved repeat by repeat:

* ``forward`` — ``model(lr)`` the way restorekit's inference runs it (memory layout chosen by
  :func:`restorekit.perf.choose_layout`, ``torch.compile`` with ``--compile``) against the **plain path**: a
  separate copy of the same weights in NCHW, called as built;
* ``sample`` (flows) — ``samples`` latent sets of each LR image: the conditional features computed once and the
  sets decoded in chunks chosen by :class:`restorekit.perf.SampleBatcher`, against the plain path: one full
  ``decode`` per sample that recomputes the conditional features;
* ``bicubic`` — ``F.interpolate(..., mode="bicubic")`` of the same batch, the floor every ratio is taken against.

Timing uses ``torch.utils.benchmark.Timer``: it synchronises CUDA around each measurement, fixes the thread count
and runs the statement compiled once, which is what a hand-written ``perf_counter`` loop gets wrong most easily;
the repeats are interleaved by hand (plain, fast, plain, fast…) so that a shared, noisy machine slows both paths
alike, and medians are reported. Peak memory is measured in a separate run of each path: on CUDA
``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``; on the CPU the resident set size sampled
every millisecond by a thread (``/proc/self/statm``), because ``ru_maxrss`` is a high-water mark of the whole
process and cannot be reset between cases. Both are reported as the increase over the memory in use when the case
starts (weights and inputs already allocated).

The result is a list of :class:`Row`; :func:`write_json` / :func:`read_json` store them, and :func:`compare`
marks rows whose time grew beyond the noise both runs measured (the spread of their repeats).
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import platform
import statistics
import sys
import threading
import time
import tomllib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import UserError
from .perf import SampleBatcher, choose_layout, in_layout, maybe_compile, sync

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
"""tf32: fp32 tensors with TF32 matrix products and convolutions (CUDA; the same as fp32 on a CPU)."""
NOISE_FLOOR = 0.10
"""Smallest slowdown --compare reports as a regression (10 %), whatever the measured spread."""
SCHEMA = 1


@dataclass
class BenchConfig:
    """What to measure. ``models``: component names (default params, or ``name:{toml inline table}``), catalogue
    names or checkpoint files; empty = every installed generator."""

    models: list[str] = field(default_factory=list)
    sizes: list[int] = field(default_factory=lambda: [32])
    batches: list[int] = field(default_factory=lambda: [1])
    precisions: list[str] = field(default_factory=lambda: ["fp32"])
    devices: list[str] = field(default_factory=lambda: ["cpu"])
    samples: int = 8
    temperature: float = 0.8
    warmup: int = 1
    repeats: int = 5
    compile: bool = False
    memory: bool = True
    memory_mode: str = "process"  # CPU: "process" (a fresh process per path) or "sampled" (in this process)
    seed: int = 0
    threads: int | None = None
    train: bool = False


@dataclass
class Row:
    """One measured path of one case. Times in milliseconds (medians over the repeats)."""

    model: str
    path: str  # forward | sample | bicubic
    device: str
    precision: str
    lr: int
    batch: int
    samples: int
    scale: int
    ms: float  # per call (the whole batch, all samples)
    ms_per_image: float  # per output image
    megapixels_per_s: float  # output pixels
    samples_per_s: float | None  # flows' sample path
    plain_ms: float | None  # the plain path, same case, interleaved
    speedup_vs_plain: float | None  # median of per-repeat plain/fast ratios
    vs_bicubic: float | None  # how many times slower than bicubic of the same batch
    spread: float  # relative interquartile range of the fast path's repeats
    peak_mb: float | None  # fast path, increase over the case's start
    plain_peak_mb: float | None
    memory_kind: str  # cuda-max-allocated | rss-sampled
    max_abs_diff: float | None  # fast vs plain output
    repeats: int
    times_ms: list[float] = field(default_factory=list)
    note: str = ""
    extra_ms: dict[str, float] = field(default_factory=dict)  # other variants timed in the same interleaving

    @property
    def key(self) -> tuple[Any, ...]:
        return (self.model, self.path, self.device, self.precision, self.lr, self.batch, self.samples)


# ----------------------------------------------------------------------------------------------------
# models


@dataclass
class BenchModel:
    name: str
    module: nn.Module
    flow: bool


def _is_flow(model: Any) -> bool:
    return all(callable(getattr(model, m, None)) for m in ("encode", "decode", "latent_shapes"))


def parse_model_arg(text: str) -> tuple[str, dict[str, Any]]:
    """``name`` or ``name:{k = v, ...}`` (a TOML inline table of params) → (name, params)."""
    name, sep, rest = text.partition(":")
    if not sep or not rest.strip().startswith("{"):
        return text, {}
    try:
        params = tomllib.loads(f"p = {rest.strip()}")["p"]
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"--model {text}: the params after ':' must be a TOML inline table ({exc})") from None
    return name, dict(params)


def resolve_models(names: Sequence[str], registry: Any) -> tuple[list[BenchModel], list[str]]:
    """Build the models to measure; returns them and one-line notes about generators that were skipped."""
    from .plan import validate_params

    notes: list[str] = []
    out: list[BenchModel] = []
    generators = registry.names("generator")
    wanted = list(names) or list(generators)
    for text in wanted:
        name, params = parse_model_arg(text)
        if name in generators:
            comp = registry.get("generator", name).component
            try:
                parsed = validate_params(comp.params, params, "--model", f"{name}.params")
            except UserError:
                if names:
                    raise
                notes.append(f"{name}: skipped (no default params)")
                continue
            torch.manual_seed(0)
            module = comp.build(parsed)
            label = name if not params else f"{name}:{_short(params)}"
        elif Path(name).is_file() or not params:
            from .api import load

            module = load(name, registry=registry, **params)
            label = Path(name).name if Path(name).is_file() else name
        else:
            raise UserError(f"--model {text}: {name!r} is not an installed generator (params need a component name)")
        if not isinstance(module, nn.Module):
            notes.append(f"{label}: skipped (not an nn.Module)")
            continue
        out.append(BenchModel(label, module.eval(), _is_flow(module)))
    return out, notes


def _short(params: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in params.items()).replace(" ", "")


# ----------------------------------------------------------------------------------------------------
# measuring


@contextlib.contextmanager
def _precision(device: torch.device, precision: str) -> Iterator[None]:
    if precision in ("fp32", "tf32"):
        from .perf import set_tf32, tf32_enabled

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


# ----------------------------------------------------------------------------------------------------
# one case


def _draw_sets(model: Any, lr: Tensor, n: int, temperature: float, seed: int) -> list[list[Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    shapes = model.latent_shapes(tuple(lr.shape))
    b = int(lr.shape[0])
    return [
        [(torch.randn((b, *s[-3:]), generator=gen) * temperature).to(lr.device) for s in shapes] for _ in range(n)
    ]


# ----------------------------------------------------------------------------------------------------
# peak memory in a fresh process (CPU)


@dataclass
class MemoryJob:
    """What a child process runs once to measure one path's peak RSS (see :func:`process_peak_mb`)."""

    module: str  # a torch.save'd module (this run's own temporary file)
    flow: bool
    device: str
    precision: str
    lr: int
    batch: int
    scale: int
    path: str
    variant: str  # plain | fast
    samples: int = 0
    temperature: float = 0.8
    seed: int = 0
    layout: str = "contiguous"
    chunk: int = 1
    threads: int = 1


def process_peak_mb(job: MemoryJob) -> tuple[float, str]:
    """Peak RSS increase of one call of ``job``'s path, in a fresh Python process: in this process freed memory
    stays mapped (the allocator keeps it), so a second path would reuse the first one's pages and look free."""
    import subprocess

    cmd = [sys.executable, "-c", "import sys, restorekit.bench as b; b._memory_child(sys.argv[1])",
           json.dumps(asdict(job))]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if res.returncode != 0:
        tail = (res.stderr.strip().splitlines() or ["no output"])[-1][:200]
        raise RuntimeError(f"memory measurement of {job.path}/{job.variant} failed: {tail}")
    return float(json.loads(res.stdout.strip().splitlines()[-1])["peak_mb"]), "rss-process"


def _memory_child(spec: str) -> None:
    job = MemoryJob(**json.loads(spec))
    torch.set_num_threads(job.threads)
    module: nn.Module = torch.load(job.module, weights_only=False).eval()
    device = torch.device(job.device)
    module.to(device)
    fast = job.variant == "fast"
    fn = _job_fn(job, module, device, fast)
    with RssSampler() as sampler:
        fn()
    print(json.dumps({"peak_mb": sampler.increase_mb}))


def _job_fn(job: MemoryJob, module: nn.Module, device: torch.device, fast: bool) -> Callable[[], Any]:
    from .perf import to_layout, training_step

    if job.path.startswith("train"):
        gen = torch.Generator().manual_seed(job.seed + 1)
        lr = torch.rand(job.batch, 3, job.lr, job.lr, generator=gen).to(device)
        hr = torch.rand(job.batch, 3, job.lr * job.scale, job.lr * job.scale, generator=gen).to(device)
        module.train()
        for m in module.modules():  # steady-state steps: data-dependent layers (ActNorm) count as initialised,
            if hasattr(m, "initialized"):  # as they are after the first step (no extra forward touches memory)
                m.initialized = True
        _frozen_rrdb(module)
        if hasattr(module, "gradient_checkpointing"):
            module.gradient_checkpointing = fast and job.path == "train-ckpt"  # type: ignore[assignment]
        amp = torch.autocast(device.type, dtype=torch.bfloat16 if job.precision == "bf16" else torch.float16,
                             enabled=job.precision in ("bf16", "fp16"))
        if fast:
            return training_step(module, lambda m: _train_loss(m, hr, lr, job.flow), lr_like=lr, autocast=amp,
                                 optimizer=lambda ps: torch.optim.Adam(ps, lr=1e-5), layout=job.layout)
        opt = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=1e-5, foreach=False)

        def plain_step() -> None:
            opt.zero_grad(set_to_none=False)
            with amp:
                loss = _train_loss(module, hr, lr, job.flow)
            loss.backward()
            opt.step()

        return plain_step
    gen = torch.Generator().manual_seed(job.seed)
    lr = torch.rand(job.batch, 3, job.lr, job.lr, generator=gen).to(device)
    if fast:
        to_layout(module, job.layout)
    x = lr.contiguous(memory_format=torch.channels_last) if fast and job.layout == "channels_last" else lr
    sets = _draw_sets(module, lr, job.samples, job.temperature, job.seed) if job.path == "sample" else []
    batcher = SampleBatcher()
    batcher.chunks[(str(x.device), tuple(int(d) for d in x.shape))] = job.chunk

    def run() -> Any:
        with torch.inference_mode(), _precision(device, job.precision):
            if job.path == "forward":
                return module(x)
            if not fast:
                return [module.decode(lr, latents=zs) for zs in sets]
            cond = module.conditional_features(x) if hasattr(module, "conditional_features") else None
            return batcher.decode(module, x, sets, cond)

    return run


def _memory_for(cfg: BenchConfig, device: torch.device, job: MemoryJob | None
                ) -> Callable[[str, Callable[[], Any]], tuple[float, str]] | None:
    """How ``_row`` measures peak memory: in a child process on the CPU (``memory_mode = "process"``), else
    in this process."""
    if job is None or device.type != "cpu" or cfg.memory_mode != "process":
        return None
    return lambda variant, _fn: process_peak_mb(replace(job, variant=variant))


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
        layout = choose_layout(fast, lr)
        fast_fn: Callable[[Tensor], Any] = fast
        if cfg.compile:
            compiled, note = maybe_compile(fast, in_layout(fast, lr), warn=log)
            fast_fn = compiled
        note = f"layout={layout}" + (f"; {note}" if note else "")
        job = MemoryJob(saved, bm.flow, str(device), precision, lr_side, batch, scale, "forward", "fast",
                        samples=cfg.samples, temperature=cfg.temperature, seed=cfg.seed, layout=layout,
                        threads=torch.get_num_threads())
        x_fast = in_layout(fast, lr)
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
    if cfg.train:
        rows.extend(train_rows(bm, device, precision, lr_side, batch, scale, base, cfg, note, job))
    with torch.inference_mode():
        rows.append(Row(bm.name, "bicubic", str(device), precision, lr_side, batch, 1, scale, base * 1e3,
                        base * 1e3 / batch, batch * out_pixels / base / 1e6, None, None, None, 1.0, 0.0, None,
                        None, "", None, 1, [t * 1e3 for t in times]))
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


# ----------------------------------------------------------------------------------------------------
# training steps


def _train_loss(model: Any, hr: Tensor, lr: Tensor, flow: bool) -> Tensor:
    if flow:
        return model.encode(hr, lr).nll.mean()
    return (model(lr) - hr).abs().mean()


def _frozen_rrdb(model: nn.Module) -> None:
    """A flow's conditional RRDB frozen (SRFlow's stage 2: only the flow trains, as in the official schedule)."""
    inner = getattr(model, "RRDB", None)
    if isinstance(inner, nn.Module):
        inner.requires_grad_(False)


def train_rows(bm: BenchModel, device: torch.device, precision: str, lr_side: int, batch: int, scale: int,
               bicubic: float, cfg: BenchConfig, note: str, job: MemoryJob | None = None) -> list[Row]:
    """``train`` and ``train-ckpt`` rows: one optimisation step (forward, backward, Adam) of restorekit's training
    path (:func:`restorekit.perf.training_step`) against the plain path — NCHW, ``zero_grad(set_to_none=False)``,
    the single-tensor Adam — with and without gradient checkpointing. A flow trains on its NLL with the RRDB
    frozen; other generators on an L1 loss."""
    from .perf import training_step

    gen = torch.Generator().manual_seed(cfg.seed + 1)
    lr = torch.rand(batch, 3, lr_side, lr_side, generator=gen).to(device)
    hr = torch.rand(batch, 3, lr_side * scale, lr_side * scale, generator=gen).to(device)
    rows: list[Row] = []
    amp = torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16,
                         enabled=precision in ("bf16", "fp16"))

    def make(ckpt: bool) -> tuple[nn.Module, Any]:
        m = copy.deepcopy(bm.module).to(device).train()
        _frozen_rrdb(m)
        if hasattr(m, "gradient_checkpointing"):
            m.gradient_checkpointing = ckpt  # type: ignore[assignment]
        return m, None

    plain, _ = make(False)
    p_opt = torch.optim.Adam([p for p in plain.parameters() if p.requires_grad], lr=1e-5, foreach=False)

    def f_plain() -> Tensor:
        p_opt.zero_grad(set_to_none=False)
        with amp:
            loss = _train_loss(plain, hr, lr, bm.flow)
        loss.backward()
        p_opt.step()
        return loss.detach()

    ref_model, _ = make(False)
    with amp:
        ref_loss = float(_train_loss(ref_model, hr, lr, bm.flow).detach())  # a fresh copy's first loss
    del ref_model
    for path, ckpt in (("train", False), ("train-ckpt", True)):
        if ckpt and not hasattr(bm.module, "gradient_checkpointing"):
            continue
        fast, _ = make(ckpt)
        step = training_step(fast, lambda m, h=hr, l=lr: _train_loss(m, h, l, bm.flow), lr_like=lr, autocast=amp,
                             optimizer=lambda params: torch.optim.Adam(params, lr=1e-5))
        diff = abs(float(step()) - ref_loss)  # the probe ran forward + backward only: the weights are the same
        if path == "train":
            f_plain()  # initialises the plain copy's data-dependent layers (ActNorm) on the same batch
        mem_job = replace(job, path=path, layout=step.layout) if job is not None else None
        rows.append(_row(bm, path, device, precision, lr_side, batch, 1, scale, (lr_side * scale) ** 2,
                         bicubic, f_plain, step, diff, cfg, f"{note}; {step.note}", flow=False,
                         memory=_memory_for(cfg, device, mem_job)))
    return rows


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


# ----------------------------------------------------------------------------------------------------
# the whole run


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    info: dict[str, Any] = {
        "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        if names:
            info["cpu"] = names[0]
    except OSError:
        pass
    if torch.cuda.is_available():
        info["cuda"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def check_config(cfg: BenchConfig) -> None:
    for p in cfg.precisions:
        if p not in PRECISIONS:
            raise UserError(f"--precisions: unknown precision {p!r} (choose from {', '.join(PRECISIONS)})")
    for d in cfg.devices:
        dev = torch.device(d) if d != "auto" else None
        if dev is not None and dev.type == "cuda" and not torch.cuda.is_available():
            raise UserError(f"--device {d}: CUDA is not available on this machine")
    for name, values in (("--sizes", cfg.sizes), ("--batches", cfg.batches)):
        if not values or any(v < 1 for v in values):
            raise UserError(f"{name}: give positive integers, got {values}")
    if cfg.repeats < 1 or cfg.warmup < 0 or cfg.samples < 0:
        raise UserError("--repeats must be >= 1, --warmup and --samples >= 0")


def run_benchmark(
    cfg: BenchConfig, registry: Any, log: Callable[[str], None] | None = None
) -> tuple[list[Row], list[str]]:
    """Measure every case of ``cfg``; returns the rows and notes (skipped models and cases)."""
    say = log or (lambda msg: print(msg, file=sys.stderr))
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
                for size in cfg.sizes:
                    for batch in cfg.batches:
                        what = f"{bm.name} {device} {precision} LR {size} batch {batch}"
                        say(f"benchmark: {what}")
                        try:
                            rows.extend(run_case(bm, device, precision, size, batch, cfg, say))
                        except UserError:
                            raise
                        except (RuntimeError, ValueError, NotImplementedError) as exc:
                            line = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0][:160]
                            notes.append(f"{what}: skipped ({exc.__class__.__name__}: {line})")
        bm.module.to("cpu")
    return rows, notes


# ----------------------------------------------------------------------------------------------------
# output


def _fmt(v: float | None, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


COLUMNS = ("model", "path", "device", "prec", "LR", "batch", "n", "ms/img", "MP/s", "samples/s", "peak MB",
           "plain MB", "x bicubic", "x plain", "spread", "max|diff|")


def table(rows: Sequence[Row], marks: dict[tuple[Any, ...], str] | None = None) -> str:
    """The rows as a Markdown table (``marks``: a note per row key, from :func:`compare`)."""
    cols = list(COLUMNS) + (["vs old"] if marks is not None else [])
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        cells = [
            r.model, r.path, r.device, r.precision, str(r.lr), str(r.batch), str(r.samples), _fmt(r.ms_per_image),
            _fmt(r.megapixels_per_s, 3), _fmt(r.samples_per_s), _fmt(r.peak_mb, 1), _fmt(r.plain_peak_mb, 1),
            _fmt(r.vs_bicubic, 1), _fmt(r.speedup_vs_plain), f"{100 * r.spread:.0f}%",
            "-" if r.max_abs_diff is None else f"{r.max_abs_diff:.1e}",
        ]
        if marks is not None:
            cells.append(marks.get(r.key, "new"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_json(path: Path, rows: Sequence[Row], cfg: BenchConfig, notes: Sequence[str]) -> None:
    data = {"schema": SCHEMA, "machine": machine(), "config": asdict(cfg), "notes": list(notes),
            "rows": [asdict(r) for r in rows]}
    from .files import write_text

    write_text(path, json.dumps(data, indent=2) + "\n")


def read_json(path: Path) -> list[Row]:
    try:
        data = json.loads(Path(path).read_text())
        return [Row(**r) for r in data["rows"]]
    except FileNotFoundError:
        raise UserError(f"{path}: --compare: file not found") from None
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        what = exc.__class__.__name__
        raise UserError(f"{path}: --compare: not a restore-run --benchmark JSON file ({what})") from None


@dataclass
class Change:
    key: tuple[Any, ...]
    ratio: float  # new time / old time
    threshold: float  # the relative change the noise allows
    verdict: str  # regression | faster | same


def compare(new: Sequence[Row], old: Sequence[Row]) -> list[Change]:
    """Each row of ``new`` that ``old`` also has: the time ratio and whether it is beyond the noise.

    The allowed change is ``max(NOISE_FLOOR, 2 × (spread_old + spread_new))``, the spreads being the relative
    interquartile ranges of the repeats each run measured: a row is a regression when new/old time exceeds
    1 + that, faster when it is below 1 / (1 + that). Bicubic rows are the machine's yardstick, not compared.
    """
    before = {r.key: r for r in old}
    out: list[Change] = []
    for r in new:
        o = before.get(r.key)
        if o is None or r.path == "bicubic" or o.ms <= 0:
            continue
        thr = max(NOISE_FLOOR, 2.0 * (r.spread + o.spread))
        ratio = r.ms / o.ms
        verdict = "regression" if ratio > 1 + thr else "faster" if ratio < 1 / (1 + thr) else "same"
        out.append(Change(r.key, ratio, thr, verdict))
    return out


def change_marks(changes: Sequence[Change]) -> dict[tuple[Any, ...], str]:
    marks = {}
    for c in changes:
        text = f"{c.ratio:.2f}x time (noise {100 * c.threshold:.0f}%)"
        marks[c.key] = f"REGRESSION {text}" if c.verdict == "regression" else f"{c.verdict} {text}"
    return marks


def main(cfg: BenchConfig, registry: Any, *, json_path: Path | None, compare_path: Path | None) -> int:
    """The ``restore-run --benchmark`` command: prints the table; 1 when --compare finds a regression."""
    old = read_json(compare_path) if compare_path is not None else None
    rows, notes = run_benchmark(cfg, registry)
    changes = compare(rows, old) if old is not None else None
    print(table(rows, change_marks(changes) if changes is not None else None))
    info = machine()
    kinds = ", ".join(sorted({r.memory_kind for r in rows if r.memory_kind}))
    memory = f"peak memory above the case's start ({kinds})" if kinds else "peak memory not measured"
    print(f"\n{info['cpu']}, {info['threads']} threads, torch {info['torch']}, load average "
          f"{info['load_average'][0] if info['load_average'] else '?'}; times are medians of {cfg.repeats} "
          f"interleaved repeats; {memory}")
    for n in notes:
        print(f"note: {n}")
    if json_path is not None:
        write_json(json_path, rows, cfg, notes)
        print(f"wrote {json_path}")
    if changes is not None:
        bad = [c for c in changes if c.verdict == "regression"]
        print(f"compare: {len(changes)} rows matched {compare_path}; {len(bad)} regression(s) beyond the noise")
        return 1 if bad else 0
    return 0


__all__ = [
    "BenchConfig",
    "Change",
    "Row",
    "RssSampler",
    "compare",
    "interleaved",
    "main",
    "main_from_args",
    "peak_memory_mb",
    "read_json",
    "run_benchmark",
    "table",
    "write_json",
]


def _ints(flag: str, text: str) -> list[int]:
    try:
        return [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{flag}: expected comma-separated integers, got {text!r}") from None


def main_from_args(args: Any, registry: Any) -> int:
    """``restore-run --benchmark`` with the parsed command-line flags."""
    models = args.model if isinstance(args.model, list) else ([args.model] if args.model else [])
    devices = [d.strip() for d in (args.device or "auto").split(",") if d.strip()]
    cfg = BenchConfig(
        models=list(models), sizes=_ints("--sizes", args.sizes), batches=_ints("--batches", args.batches),
        precisions=[p.strip() for p in args.precisions.split(",") if p.strip()], devices=devices,
        samples=args.samples if args.samples is not None else 8, warmup=args.warmup, repeats=args.repeats,
        compile=args.compile, memory=not args.no_memory, memory_mode=args.memory_mode, threads=args.threads,
        train=args.train,
    )
    json_path = Path(args.json) if args.json not in (None, "-") else None
    return main(cfg, registry, json_path=json_path, compare_path=args.compare)
