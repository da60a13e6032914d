"""What a training run reports: console (through tqdm), TensorBoard and ``metrics.jsonl``, and the running sums
between two log lines."""

from __future__ import annotations

import json
import math
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor

from ..files import write_text
from ..runtime import DistContext

METRICS_FILE = "metrics.jsonl"


class RunLog:
    """Console (through tqdm), TensorBoard and ``metrics.jsonl``; silent on ranks other than 0."""

    def __init__(self, output_dir: Path, *, enabled: bool, tensorboard: bool, resume_step: int | None) -> None:
        self.enabled = enabled
        self.dir = output_dir
        self.writer: Any = None
        self.jsonl: Any = None
        if not enabled:
            return
        output_dir.mkdir(parents=True, exist_ok=True)
        path = output_dir / METRICS_FILE
        if resume_step is not None and path.is_file():
            kept = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines()
                    if _line_step(line) <= resume_step]
            write_text(path, "".join(line + "\n" for line in kept))
        elif resume_step is None and path.is_file():
            path.unlink()
        self.jsonl = path.open("a", buffering=1, encoding="utf-8", errors="backslashreplace")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(
                str(output_dir / "tensorboard"), purge_step=resume_step + 1 if resume_step is not None else None
            )

    def console(self, message: str) -> None:
        if self.enabled:
            from tqdm import tqdm

            tqdm.write(message, file=sys.stdout)

    def record(self, record: Mapping[str, Any]) -> None:
        if self.jsonl is not None:
            self.jsonl.write(json.dumps(dict(record), default=float) + "\n")

    def scalars(self, step: int, values: Mapping[str, float], prefix: str) -> None:
        if self.writer is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self.writer.add_scalar(f"{prefix}/{k}", v, step)

    def event(self, step: int, event: str, message: str, **extra: Any) -> None:
        """A noteworthy moment (unfreeze, non-finite loss, stop, resume): console, TensorBoard text, JSONL."""
        if not self.enabled:
            return
        self.console(f"[step {step}] {message}")
        if self.writer is not None:
            self.writer.add_text(f"events/{event}", message, step)
        self.record({"step": step, "kind": "event", "event": event, "message": message, **extra})

    def image(self, step: int, tag: str, img: Tensor) -> None:
        if self.writer is not None:
            self.writer.add_image(tag, img.clamp(0, 1), step)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.jsonl is not None:
            self.jsonl.close()
            self.jsonl = None


def _line_step(line: str) -> float:
    try:
        return float(json.loads(line).get("step", 0))
    except (ValueError, AttributeError):
        return math.inf


@dataclass
class Totals:
    """Running sums between two log lines."""

    values: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    images: int = 0
    since: float = field(default_factory=time.perf_counter)

    def add(self, key: str, value: float) -> None:
        self.values[key] += value
        self.counts[key] += 1

    def add_step(self, step_name: str, values: Mapping[str, float], norms: Mapping[str, float], single: bool) -> float | None:
        """Add one optimisation step's loss values and gradient norms. With several steps per iteration the
        losses are named per step (``loss/<step>``, ``loss/<step>.<loss>``); returns the step's total loss then."""
        total = None
        for k, v in values.items():
            if single or not k.startswith("loss"):
                self.add(k, v)
            elif k == "loss":
                self.add(f"loss/{step_name}", v)
                total = v
            else:
                self.add(f"loss/{step_name}.{k[len('loss/'):]}", v)
        for name, v in norms.items():
            self.add(f"grad_norm/{name}", v)
        return total

    def means(self, ctx: DistContext, device: torch.device) -> dict[str, float]:
        """Mean of every value over its count and over the ranks, plus ``images_per_s``."""
        keys = sorted(self.values)
        raw = torch.tensor([self.values[k] / max(1, self.counts[k]) for k in keys], dtype=torch.float64)
        reduced = ctx.mean(raw.to(device) if device.type == "cuda" else raw).tolist()
        values = dict(zip(keys, reduced))
        values["images_per_s"] = self.images / max(1e-9, time.perf_counter() - self.since)
        return values


def progress_postfix(values: Mapping[str, float], running: list[str], several_steps: bool) -> dict[str, str]:
    """The progress bar's ``loss`` and the running step's ``lr``."""
    post = {"loss": f"{values.get('loss', float('nan')):.4g}"}
    shown = [f"lr/{name}." for name in running] if several_steps else ["lr/"]
    lr = next((v for k, v in values.items() if any(k.startswith(p) for p in shown)), None)
    if lr is not None:
        post["lr"] = f"{lr:.2e}"
    return post


__all__ = ["METRICS_FILE", "RunLog", "Totals", "progress_postfix"]
