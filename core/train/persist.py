"""A trainer's checkpoint folder: writing one (``step_<N>`` with every network, EMA weights, ``state.pt`` and
``meta.json``, pruned to ``keep_last`` plus the best) and resuming from one bit-exactly."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

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
from ..files import write_text
from ..errors import UserError
from ..runtime import seed_everything
from .logging import METRICS_FILE
from .state import EMA, rng_state, set_rng_state

if TYPE_CHECKING:
    from .loop import Trainer

STATE_VERSION = 1


def _training_state(t: Trainer, rngs: list[Any]) -> dict[str, Any]:
    """Everything in ``state.pt``: the trainer's counters plus each stateful part's ``state_dict()``."""
    scaler = t.steps.scaler
    return {
        "version": STATE_VERSION,
        **t.state.state_dict(),
        "optimizers": {s: {n: o.state_dict() for n, o in m.items()} for s, m in t.optimizers.items()},
        "scaler": scaler.state_dict() if scaler is not None else None,
        "freeze": {n: f.state_dict() for n, f in t.freeze.items()},
        "rng": rngs,
        "data": t.stream.state_dict(),
        "world": t.ctx.world,
        "ema": sorted(t.steps.ema),
    }


def save_training(t: Trainer) -> None:
    """Write ``checkpoints/step_<N>`` (rank 0; every rank contributes its RNG state)."""
    rngs = t.ctx.gather(rng_state())
    t.last_saved = t.state.step
    if not t.ctx.main:
        return
    state = _training_state(t, rngs)
    best = t.state.best
    meta = {
        "step": t.state.step,
        "networks": {n: p.component.name for n, p in t.plan.networks.items()},
        "ema": sorted(t.steps.ema),
        "metrics": {k: v for k, v in t.state.last_val.items() if not k.startswith("_")},
        "best": dict(best),
        "time": time.time(),
    }

    def write(tmp: Path) -> None:
        for n, net in t.networks.items():
            p = t.plan.networks[n]
            save_generator(tmp / f"{n}.safetensors", net, p.component.name, p.params.model_dump(mode="json"))
        for n, e in t.steps.ema.items():
            p = t.plan.networks[n]
            save_generator(tmp / f"{n}.ema.safetensors", e.module, p.component.name, p.params.model_dump(mode="json"))
        torch.save(state, tmp / STATE_FILE)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, default=float), encoding="utf-8")

    root = t.out / CHECKPOINTS
    path = write_checkpoint_dir(root, t.state.step, write)
    keep = {int(best["step"])} if best.get("step") is not None else set()
    prune_checkpoints(root, t.cfg.keep_last, keep)
    if best.get("step") is not None:
        write_text(root / "best.json", json.dumps(
            {"metric": t.cfg.best_metric, "mode": t.cfg.best_mode, **best,
             "path": str(root / f"step_{best['step']}")}, indent=2))
    t.log.record({"step": t.state.step, "kind": "event", "event": "checkpoint", "path": str(path)})


@dataclass
class CheckpointData:
    """A checkpoint folder read in full and checked against the trainer, before anything is loaded."""

    folder: Path
    meta: dict[str, Any]
    state: dict[str, Any]
    weights: dict[str, dict[str, torch.Tensor]]
    ema: dict[str, dict[str, torch.Tensor]]


_STATE_KEYS = ("optimizers", "freeze", "rng", "data", "world", "ema")


def read_checkpoint(t: Trainer, folder: Path) -> CheckpointData:
    """Read every file of ``folder``. A missing, empty, truncated or garbled file (or weights that do not fit the
    networks) raises :class:`UnreadableCheckpoint` naming it; a pickle payload :class:`UnsafeCheckpoint`; a
    checkpoint of other networks than the spec's a plain :class:`UserError`."""
    meta_path = folder / META_FILE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UnreadableCheckpoint(f"{meta_path}: unreadable ({_one_line(exc)})") from None
    if not isinstance(meta, dict):
        raise UnreadableCheckpoint(f"{meta_path}: not a JSON object")
    state = safe_torch_load(folder / STATE_FILE)
    if not isinstance(state, dict) or any(k not in state for k in _STATE_KEYS):
        raise UnreadableCheckpoint(f"{folder / STATE_FILE}: not a restorekit training state")
    names = {n: p.component.name for n, p in t.plan.networks.items()}
    if meta.get("networks") != names:
        raise UserError.at(t.source, "train.resume", f"{folder} holds networks {meta.get('networks')}, the spec has {names}")

    def weights(name: str, file: str) -> dict[str, torch.Tensor]:
        sd = read_state_dict(folder / file)
        own = t.networks[name].state_dict()
        bad = sorted(set(own) ^ set(sd)) or [k for k in own if tuple(own[k].shape) != tuple(sd[k].shape)]
        if bad:
            raise UnreadableCheckpoint(f"{folder / file}: does not fit networks.{name} (e.g. {bad[0]})")
        return sd

    ema_names = [n for n in state["ema"] if n in t.networks]
    return CheckpointData(
        folder, meta, state,
        {n: weights(n, f"{n}.safetensors") for n in t.networks},
        {n: weights(n, f"{n}.ema.safetensors") for n in ema_names},
    )


def apply_checkpoint(t: Trainer, ck: CheckpointData) -> None:
    """Resume from a read checkpoint: weights, EMA, freeze, optimizers, scaler, counters, data position and RNGs
    (a different world size reseeds each rank from the seed and the step instead)."""
    state = ck.state
    for n, net in t.networks.items():
        net.load_state_dict(ck.weights[n])
    for n, sd in ck.ema.items():
        e = EMA(t.networks[n], float(t.cfg.ema or 0.999))
        e.module.load_state_dict(sd)
        t.steps.ema[n] = e
    for n, fs in state["freeze"].items():
        if n in t.freeze:
            t.freeze[n].load_state_dict(fs)
            t.freeze[n].apply(t.networks[n])
    t.wrap_all()
    for s, m in state["optimizers"].items():
        for n, sd in m.items():
            t.optimizers[s][n].load_state_dict(sd)
    if t.steps.scaler is not None and state["scaler"] is not None:
        t.steps.scaler.load_state_dict(state["scaler"])
    t.state.load_state_dict(state)
    t.stream.load_state_dict(state["data"])
    t.last_saved = t.state.step
    rngs = state["rng"]
    if int(state["world"]) == t.ctx.world and t.ctx.rank < len(rngs):
        set_rng_state(rngs[t.ctx.rank])
    else:
        seed_everything(t.seed + t.ctx.rank + 7919 * t.state.step)


def load_training(t: Trainer, folder: Path) -> None:
    """Resume from ``folder`` (one line naming the file at fault when it cannot be read)."""
    resume_training(t, [folder], fallback=False)


def resume_training(t: Trainer, folders: list[Path], *, fallback: bool = True) -> tuple[Path, list[tuple[Path, str]]]:
    """Resume from the first readable checkpoint of ``folders`` (newest first). With ``fallback``, an unreadable
    one (empty or truncated ``state.pt``, garbled ``meta.json``, a broken weights file) is skipped with a warning
    naming it and the previous one is tried; a pickle payload stops the run (not a safe checkpoint). Returns the
    folder used and the ones skipped with their reasons."""
    skipped: list[tuple[Path, str]] = []
    for folder in folders:
        try:
            ck = read_checkpoint(t, folder)
        except UnsafeCheckpoint as exc:
            raise UserError.at(t.source, "train.resume", exc) from None
        except UnreadableCheckpoint as exc:
            if not fallback:
                raise UserError.at(t.source, "train.resume", exc) from None
            skipped.append((folder, str(exc)))
            if t.ctx.main:
                print(f"restore-run: warning: train.resume: skipped {folder.name}: {exc}", file=sys.stderr)
            continue
        apply_checkpoint(t, ck)
        return folder, skipped
    listed = "; ".join(f"{f.name}: {why}" for f, why in skipped)
    raise UserError.at(t.source, "train.resume", f"no readable checkpoint ({listed})")


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


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text or type(exc).__name__)[:200]


__all__ = ["CheckpointData", "apply_checkpoint", "load_training", "read_checkpoint", "refuse_earlier_run",
           "resume_candidates", "resume_training", "save_training"]
