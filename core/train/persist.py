"""A trainer's checkpoint folder: writing one (``step_<N>`` with every network, EMA weights, ``state.pt`` and
``meta.json``, pruned to ``keep_last`` plus the best) and resuming from one bit-exactly."""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

import torch
from torch import nn

from ..checkpoint import (
    CHECKPOINTS,
    META_FILE,
    STATE_FILE,
    UnreadableCheckpoint,
    UnsafeCheckpoint,
    checkpoint_dirs,
    prune_checkpoints,
    read_state_dict,
    safe_torch_load,
    save_generator,
    write_checkpoint_dir,
)
from ..errors import UserError, one_line
from ..files import write_text
from ..runtime import DistContext, seed_everything
from .logging import METRICS_FILE
from .state import EMA, TrainingState, rng_state, set_rng_state

STATE_VERSION = 2


class Stateful(Protocol):
    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any, /) -> Any: ...


@dataclass
class Checkpointed:
    """What a trainer hands persistence, listed once: the networks (with the component name and params their
    files record) and the EMA copies, ``state`` (the counters), ``parts`` (every other stateful part by name:
    ``"optimizers.<step>.<network>"``, ``"scaler"``, ``"freeze.<network>"``, ``"data"``; each saved with its
    ``state_dict()`` and restored with ``load_state_dict()``) and ``after_load`` (what must follow a restore:
    freeze rules re-applied, DDP re-wrapped). A new stateful part is one more entry in ``parts``."""

    source: str
    out: Path
    ctx: DistContext
    seed: int
    networks: Mapping[str, nn.Module]
    files: Mapping[str, tuple[str, dict[str, Any]]]  # network -> (component, params) written with its weights
    state: TrainingState
    parts: Mapping[str, Stateful]
    ema: dict[str, EMA]
    ema_decay: float
    keep_last: int
    best: tuple[str | None, str]  # train.best_metric, train.best_mode
    after_load: Callable[[], None]
    last_saved: int | None = None


def save_training(c: Checkpointed, record: Callable[[dict[str, Any]], None]) -> None:
    """Write ``checkpoints/step_<N>`` (rank 0; every rank contributes its RNG state)."""
    rngs = c.ctx.gather(rng_state())
    c.last_saved = c.state.step
    if not c.ctx.main:
        return
    state = {"version": STATE_VERSION, "state": c.state.state_dict(),
             "parts": {name: part.state_dict() for name, part in c.parts.items()},
             "rng": rngs, "world": c.ctx.world, "ema": sorted(c.ema)}
    best = c.state.best
    meta = {
        "step": c.state.step,
        "networks": {n: comp for n, (comp, _) in c.files.items()},
        "ema": sorted(c.ema),
        "metrics": {k: v for k, v in c.state.last_val.items() if not k.startswith("_")},
        "best": dict(best),
        "time": time.time(),
    }

    def write(tmp: Path) -> None:
        for n, net in c.networks.items():
            save_generator(tmp / f"{n}.safetensors", net, *c.files[n])
        for n, e in c.ema.items():
            save_generator(tmp / f"{n}.ema.safetensors", e.module, *c.files[n])
        torch.save(state, tmp / STATE_FILE)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, default=float), encoding="utf-8")

    root = c.out / CHECKPOINTS
    path = write_checkpoint_dir(root, c.state.step, write)
    keep = {int(best["step"])} if best.get("step") is not None else set()
    prune_checkpoints(root, c.keep_last, keep)
    if best.get("step") is not None:
        write_text(root / "best.json", json.dumps(
            {"metric": c.best[0], "mode": c.best[1], **best, "path": str(root / f"step_{best['step']}")}, indent=2))
    record({"step": c.state.step, "kind": "event", "event": "checkpoint", "path": str(path)})


@dataclass
class CheckpointData:
    """A checkpoint folder read in full and checked against the trainer, before anything is loaded."""

    folder: Path
    meta: dict[str, Any]
    state: dict[str, Any]
    weights: dict[str, dict[str, torch.Tensor]]
    ema: dict[str, dict[str, torch.Tensor]]


_STATE_KEYS = ("version", "state", "parts", "rng", "world", "ema")


def read_checkpoint(c: Checkpointed, folder: Path) -> CheckpointData:
    """Read every file of ``folder``. A missing, empty, truncated or garbled file (or weights that do not fit the
    networks) raises :class:`UnreadableCheckpoint` naming it; a pickle payload :class:`UnsafeCheckpoint`; a
    checkpoint of other networks than the spec's a plain :class:`UserError`."""
    meta_path = folder / META_FILE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UnreadableCheckpoint(f"{meta_path}: unreadable ({one_line(exc)})") from None
    if not isinstance(meta, dict):
        raise UnreadableCheckpoint(f"{meta_path}: not a JSON object")
    state = safe_torch_load(folder / STATE_FILE)
    if not isinstance(state, dict) or "version" not in state:
        raise UnreadableCheckpoint(f"{folder / STATE_FILE}: not a restorekit training state (version {STATE_VERSION})")
    if state["version"] != STATE_VERSION:
        raise UnreadableCheckpoint(f"{folder / STATE_FILE}: written by another restorekit (training state version "
                                   f"{state['version']}, this one reads {STATE_VERSION}); start a new run in another "
                                   "run.output_dir")
    if any(k not in state for k in _STATE_KEYS):
        raise UnreadableCheckpoint(f"{folder / STATE_FILE}: not a restorekit training state (version {STATE_VERSION})")
    names = {n: comp for n, (comp, _) in c.files.items()}
    if meta.get("networks") != names:
        raise UserError.at(c.source, "train.resume", f"{folder} holds networks {meta.get('networks')}, the spec has {names}")

    def weights(name: str, file: str) -> dict[str, torch.Tensor]:
        sd = read_state_dict(folder / file)
        own = c.networks[name].state_dict()
        bad = sorted(set(own) ^ set(sd)) or [k for k in own if tuple(own[k].shape) != tuple(sd[k].shape)]
        if bad:
            raise UnreadableCheckpoint(f"{folder / file}: does not fit networks.{name} (e.g. {bad[0]})")
        return sd

    ema_names = [n for n in state["ema"] if n in c.networks]
    return CheckpointData(
        folder, meta, state,
        {n: weights(n, f"{n}.safetensors") for n in c.networks},
        {n: weights(n, f"{n}.ema.safetensors") for n in ema_names},
    )


def apply_checkpoint(c: Checkpointed, ck: CheckpointData) -> None:
    """Resume from a read checkpoint: weights, EMA, every named part the checkpoint holds, counters and RNGs (a
    different world size reseeds each rank from the seed and the step instead)."""
    state = ck.state
    for n, net in c.networks.items():
        net.load_state_dict(ck.weights[n])
    for n, sd in ck.ema.items():
        e = EMA(c.networks[n], c.ema_decay)
        e.module.load_state_dict(sd)
        c.ema[n] = e
    for name, part in c.parts.items():
        if name in state["parts"]:
            part.load_state_dict(state["parts"][name])
    c.after_load()
    c.state.load_state_dict(state["state"])
    c.last_saved = c.state.step
    rngs = state["rng"]
    if int(state["world"]) == c.ctx.world and c.ctx.rank < len(rngs):
        set_rng_state(rngs[c.ctx.rank])
    else:
        seed_everything(c.seed + c.ctx.rank + 7919 * c.state.step)


def resume_training(c: Checkpointed, folders: list[Path], *, fallback: bool = True) -> tuple[Path, list[tuple[Path, str]]]:
    """Resume from the first readable checkpoint of ``folders`` (newest first). With ``fallback``, an unreadable
    one (empty or truncated ``state.pt``, garbled ``meta.json``, a broken weights file) is skipped with a warning
    naming it and the previous one is tried; a pickle payload stops the run (not a safe checkpoint). Returns the
    folder used and the ones skipped with their reasons."""
    skipped: list[tuple[Path, str]] = []
    for folder in folders:
        try:
            ck = read_checkpoint(c, folder)
        except UnsafeCheckpoint as exc:
            raise UserError.at(c.source, "train.resume", exc) from None
        except UnreadableCheckpoint as exc:
            if not fallback:
                raise UserError.at(c.source, "train.resume", exc) from None
            skipped.append((folder, str(exc)))
            if c.ctx.main:
                warnings.warn(f"train.resume: skipped {folder.name}: {exc}", stacklevel=2)
            continue
        apply_checkpoint(c, ck)
        return folder, skipped
    listed = "; ".join(f"{f.name}: {why}" for f, why in skipped)
    raise UserError.at(c.source, "train.resume", f"no readable checkpoint ({listed})")


def resume_candidates(resume: str | Path, out: Path) -> list[Path] | None:
    """The checkpoints to resume from, newest first (``auto``: every complete one, so that an unreadable newest
    one falls back to the previous); None for a fresh start."""
    if resume == "never":
        return None
    if resume == "auto":
        found = [d for _, d in reversed(checkpoint_dirs(out / CHECKPOINTS))]
        return found or None
    return [Path(resume)]


def refuse_earlier_run(out: Path, source: str) -> None:
    """A fresh run never replaces an earlier run's checkpoints or results (its checkpoints deleted, its generator
    files and metrics.jsonl still there): one line, nothing touched."""
    earlier = checkpoint_dirs(out / CHECKPOINTS)
    if earlier:
        raise UserError.at(
            source, "run.output_dir", f"{out} already holds checkpoints of an earlier run (newest "
            f"step_{earlier[-1][0]}); continue it with --resume (train.resume = \"auto\") or choose another "
            "output_dir"
        )
    if not out.is_dir():
        return
    found = sorted(p.name for p in out.iterdir()
                   if p.is_file() and (p.name == METRICS_FILE or p.name.endswith(".safetensors")))
    if found:
        raise UserError.at(
            source, "run.output_dir", f"{out} already holds results of an earlier run "
            f"({', '.join(found[:4])}{', ...' if len(found) > 4 else ''}) and no checkpoint to resume; choose "
            "another output_dir, or move those files away"
        )


__all__ = ["CheckpointData", "Checkpointed", "apply_checkpoint", "read_checkpoint", "refuse_earlier_run",
           "resume_candidates", "resume_training", "save_training"]
