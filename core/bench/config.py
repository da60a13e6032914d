"""What ``restore-run --benchmark`` measures (:class:`BenchConfig`, checked by :func:`check_config`) and what
one measurement gives (:class:`Row`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import UserError

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
    onnx: bool = False  # also time the model exported to ONNX on onnxruntime (restorekit.bench.onnxrt)


@dataclass
class Row:
    """One measured path of one case. Times in milliseconds (medians over the repeats)."""

    model: str
    path: str  # forward | sample | bicubic | train… | forward-onnx | sample-onnx
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


def check_config(cfg: BenchConfig) -> None:
    if not cfg.precisions:
        raise UserError(f"--precisions: give at least one of {', '.join(PRECISIONS)}")
    for p in cfg.precisions:
        if p not in PRECISIONS:
            raise UserError(f"--precisions: unknown precision {p!r} (choose from {', '.join(PRECISIONS)})")
    if not cfg.devices:
        raise UserError("--device: give at least one device (auto, cpu, cuda, cuda:N; comma-separated)")
    for d in cfg.devices:
        try:
            dev = torch.device(d) if d != "auto" else None
        except (RuntimeError, ValueError):
            dev = None
        if d != "auto" and (dev is None or dev.type not in ("cpu", "cuda")):
            raise UserError(f"--device {d}: not a device the benchmark runs on (auto, cpu, cuda or cuda:N; "
                            "comma-separated)")
        if dev is not None and dev.type == "cuda" and not torch.cuda.is_available():
            raise UserError(f"--device {d}: CUDA is not available on this machine")
    cuda = any(d.startswith("cuda") or (d == "auto" and torch.cuda.is_available()) for d in cfg.devices)
    if "fp16" in cfg.precisions and not cuda:
        raise UserError("--precisions fp16: needs a CUDA device (fp16 autocast is a GPU precision; on a CPU use bf16)")
    for name, values in (("--sizes", cfg.sizes), ("--batches", cfg.batches)):
        if not values or any(v < 1 for v in values):
            raise UserError(f"{name}: give positive integers, got {values}")
    if cfg.repeats < 1 or cfg.warmup < 0 or cfg.samples < 0:
        raise UserError("--repeats must be >= 1, --warmup and --samples >= 0")
    if cfg.threads is not None and cfg.threads < 1:
        raise UserError(f"--threads: must be at least 1 (got {cfg.threads})")


__all__ = ["NOISE_FLOOR", "PRECISIONS", "SCHEMA", "BenchConfig", "Row", "check_config"]
