"""Inference fast paths, each chosen by measuring it against the plain path on the real model and input.

* :func:`choose_layout` — channels_last or the default (NCHW) memory layout, whichever is faster on this device,
  kept only when both give the same output within ``1e-5`` (relative to the output's magnitude). The probe runs
  once per model, device and dtype on a crop of the first input (at most :data:`PROBE_SIDE` LR pixels a side).
* :class:`SampleBatcher` — how many latent sets of one LR image to decode as one batch. A batch shares the cached
  conditional features; on a CPU a large batch leaves the caches and becomes slower than a loop (8 samples of a
  64×64 LR: 10.8 s batched vs 4.6 s looped), on a GPU batching wins. The batcher grows the chunk (1, 2, 4, …)
  until the time per sample is clearly (5 %) worse than the best so far or ``max_chunk`` is reached, measuring
  the decodes it has to do anyway (over as many calls as that takes), and remembers the best chunk per device
  and LR shape.
* :func:`maybe_compile` — ``run.compile = true``: ``torch.compile``, kept only when the compiled module is faster
  on the probe input; where the platform cannot compile, one line on stderr and the module runs uncompiled.

The plain path (NCHW, no caching, one decode per sample) is what ``restore-run --benchmark`` measures these
against, in the same process (``docs/performance.md``).
"""

from __future__ import annotations

import sys
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

PROBE_SIDE = 64
"""Largest LR side of the layout probe's input crop."""
PROBE_MIN_WEIGHTS = 100_000
"""Networks with fewer convolution weights than this keep NCHW without a probe (the probe would cost more than
any layout could gain)."""
LAYOUT_TOLERANCE = 1e-5
"""Largest allowed difference between the layouts' outputs, relative to max(1, |output|)."""
_GAIN = 0.95
"""A faster path must take under 95 % of the other's time to be chosen (noise margin)."""

_layouts: "weakref.WeakKeyDictionary[nn.Module, dict[tuple[str, str], str]]" = weakref.WeakKeyDictionary()


def sync(device: torch.device | str) -> None:
    """Wait for the device's queued work (CUDA); a no-op on the CPU."""
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _seconds(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def _first(out: Any) -> Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


def same_output(a: Tensor, b: Tensor, tol: float = LAYOUT_TOLERANCE) -> bool:
    """Whether ``a`` and ``b`` agree within ``tol · max(1, max|a|)`` (and are both finite where ``a`` is)."""
    a, b = a.float(), b.float()
    if a.shape != b.shape:
        return False
    scale = max(1.0, float(a.abs().nan_to_num(0.0).max())) if a.numel() else 1.0
    return bool(torch.allclose(a, b, rtol=0.0, atol=tol * scale, equal_nan=True))


def probe_input(lr: Tensor, multiple: int = 1, side: int = PROBE_SIDE) -> Tensor:
    """A crop of ``lr`` (first item) of at most ``side`` pixels a side, rounded down to ``multiple``."""
    m = max(1, multiple)
    h = max(m, min(int(lr.shape[-2]), side) // m * m)
    w = max(m, min(int(lr.shape[-1]), side) // m * m)
    return lr[:1, :, :h, :w].contiguous()


def to_layout(model: nn.Module, layout: str) -> nn.Module:
    """Convert ``model``'s 4-D parameters in place to ``layout`` ("channels_last" or "contiguous")."""
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    return model.to(memory_format=fmt)


def layout_of(model: nn.Module, device: torch.device | str, dtype: torch.dtype = torch.float32) -> str | None:
    """The layout :func:`choose_layout` chose for ``model`` on ``device``/``dtype``, or None before a probe."""
    return _layouts.get(model, {}).get((str(torch.device(device)), str(dtype)))


def choose_layout(
    model: nn.Module,
    lr: Tensor,
    *,
    forward: Callable[[Tensor], Any] | None = None,
    tol: float = LAYOUT_TOLERANCE,
    rounds: int = 2,
    min_weights: int = PROBE_MIN_WEIGHTS,
) -> str:
    """Put ``model`` in the faster memory layout for inputs like ``lr`` and return it ("channels_last" or
    "contiguous"); the first call per model, device and dtype probes, later calls reuse the choice.

    ``forward`` (default ``model``) is what is timed, on :func:`probe_input` of ``lr`` under no-grad; each layout
    runs ``rounds`` times after one warm-up run, interleaved, and the minimum counts. channels_last is kept only
    when its output equals the default layout's within ``tol`` and it is at least 5 % faster. Networks with fewer
    than ``min_weights`` convolution weights are not probed (NCHW).
    """
    device, dtype = lr.device, lr.dtype
    key = (str(device), str(dtype))
    known = _layouts.setdefault(model, {}).get(key)
    if known is not None:
        return known
    if sum(p.numel() for p in model.parameters() if p.dim() == 4) < min_weights:
        _layouts[model][key] = "contiguous"
        return "contiguous"
    fn = forward or model
    x = probe_input(lr, int(getattr(model, "size_multiple", 1) or 1))
    x_cl = x.contiguous(memory_format=torch.channels_last)
    best = {"contiguous": float("inf"), "channels_last": float("inf")}
    outs: dict[str, Tensor] = {}
    with torch.no_grad():
        for r in range(rounds + 1):
            for layout, inp in (("contiguous", x), ("channels_last", x_cl)):
                to_layout(model, layout)
                t, out = _seconds(lambda: fn(inp), device)
                if r == 0:
                    outs[layout] = _first(out)
                else:
                    best[layout] = min(best[layout], t)
    ok = same_output(outs["contiguous"], outs["channels_last"], tol)
    choice = "channels_last" if ok and best["channels_last"] < _GAIN * best["contiguous"] else "contiguous"
    to_layout(model, choice)
    _layouts[model][key] = choice
    return choice


def in_layout(model: nn.Module, lr: Tensor) -> Tensor:
    """``lr`` in the layout chosen for ``model`` (unchanged when none was chosen or it is the default)."""
    if layout_of(model, lr.device, lr.dtype) == "channels_last" and lr.dim() == 4:
        return lr.contiguous(memory_format=torch.channels_last)
    return lr


# ----------------------------------------------------------------------------------------------------
# several samples of one LR


@dataclass
class SampleBatcher:
    """Chooses how many latent sets of one LR image to decode per call (see the module docstring).

    ``max_chunk`` bounds the batch (memory); ``chunks`` maps (device, LR shape) to the settled chunk size,
    ``probing`` holds an unfinished probe (next chunk, best chunk, its seconds per sample).
    """

    max_chunk: int = 16
    chunks: dict[tuple[str, tuple[int, ...]], int] = field(default_factory=dict)
    probing: dict[tuple[str, tuple[int, ...]], tuple[int, int, float]] = field(default_factory=dict)

    def decode(
        self,
        model: Any,
        lr: Tensor,
        latent_sets: Sequence[Sequence[Tensor]],
        cond: Any = None,
    ) -> list[Tensor]:
        """``[model.decode(lr, latents=set, cond=cond) for set in latent_sets]``, computed in chunks.

        Sets are concatenated along the batch dimension only for an LR batch of 1 (the conditional features
        broadcast); otherwise each set is decoded on its own.
        """
        sets = [list(zs) for zs in latent_sets]
        kw = {} if cond is None else {"cond": cond}
        if int(lr.shape[0]) != 1 or len(sets) < 2:
            return [model.decode(lr, latents=zs, **kw) for zs in sets]
        key = (str(lr.device), tuple(int(d) for d in lr.shape))
        settled = self.chunks.get(key)
        outs: list[Tensor] = []
        i = 0
        if settled is not None:
            while i < len(sets):
                outs.extend(self._run(model, lr, sets[i : i + settled], kw))
                i += settled
            return outs
        chunk, best_chunk, best_per = self.probing.get(key, (1, 1, float("inf")))
        while i < len(sets) and key not in self.chunks:
            per = float("inf")
            for _ in range(2):  # two chunks of this size (when there are enough sets); the faster one counts
                part = sets[i : i + chunk]
                if len(part) < chunk:  # a short last chunk says nothing about the full size
                    break
                t, res = _seconds(lambda: self._run(model, lr, part, kw), lr.device)
                outs.extend(res)
                i += len(part)
                per = min(per, t / len(part))
            if per == float("inf"):
                if chunk > len(sets):  # calls this size never fill a larger chunk: the best so far it is
                    self.chunks[key] = best_chunk
                break
            if per < _GAIN * best_per:
                best_chunk, best_per = chunk, per
            elif per * _GAIN > best_per:  # clearly slower per sample: larger chunks will not pay either
                self.chunks[key] = best_chunk
                break
            if chunk * 2 > self.max_chunk:
                self.chunks[key] = best_chunk
                break
            chunk *= 2
        if key not in self.chunks:  # not enough sets to finish probing: the next call goes on from here
            self.probing[key] = (chunk, best_chunk, best_per)
        c = self.chunks.get(key, best_chunk)
        while i < len(sets):
            outs.extend(self._run(model, lr, sets[i : i + c], kw))
            i += c
        return outs

    @staticmethod
    def _run(model: Any, lr: Tensor, part: Sequence[Sequence[Tensor]], kw: dict[str, Any]) -> list[Tensor]:
        if len(part) == 1:
            return [model.decode(lr, latents=list(part[0]), **kw)]
        n = [int(zs[0].shape[0]) for zs in part]
        joined = [torch.cat([zs[k] for zs in part]) for k in range(len(part[0]))]
        out = model.decode(lr, latents=joined, **kw)
        return list(out.split(n))


# ----------------------------------------------------------------------------------------------------
# training


def fused_optimizer(cls: type[torch.optim.Optimizer], params: Any, **kw: Any) -> torch.optim.Optimizer:
    """``cls(params, fused=True, **kw)`` where this torch and the parameters' device have the fused kernel (Adam,
    AdamW on CPU and CUDA: one kernel for every parameter instead of a Python loop), else ``cls(params, **kw)``.
    On this project's CPU the DF2K-4X flow's 22.8 M parameters take 85 ms per Adam step fused, 230 ms looped."""
    params = list(params)
    try:
        return cls(params, fused=True, **kw)  # type: ignore[call-arg]
    except (RuntimeError, TypeError, ValueError):
        return cls(params, **kw)


def fast_adam(params: Sequence[nn.Parameter], **kw: Any) -> torch.optim.Optimizer:
    """Adam with the fused kernel where this torch and device have it (one kernel for every parameter),
    else the multi-tensor (``foreach``) implementation."""
    params = list(params)
    try:
        return torch.optim.Adam(params, fused=True, **kw)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, foreach=True, **kw)


def lean_training(model: nn.Module, enabled: bool = True) -> int:
    """Switch on the training memory savings a network's modules offer (``fold_actnorm``: SRFlow's coupling
    convolutions with their ActNorm folded in while gradients are recorded — the same function, half the stored
    activations of the coupling networks); returns how many modules took it."""
    count = 0
    for m in model.modules():
        if hasattr(m, "fold_actnorm"):
            m.fold_actnorm = enabled
            count += 1
    return count


class TrainingStep:
    """One optimisation step of ``loss_fn(model)`` the fast way — what restorekit's trainer does: gradients set to
    None (not zero-filled) between steps, a fused Adam (:func:`fast_adam`), :func:`lean_training` — and the memory
    layout a one-time probe found faster for a forward + backward with the same loss (within ``1e-5``). ``note``
    says what was chosen."""

    def __init__(self, model: nn.Module, loss_fn: Callable[[nn.Module], Tensor], *, lr_like: Tensor,
                 autocast: Any = None, optimizer: Callable[[list[nn.Parameter]], torch.optim.Optimizer] | None = None,
                 rounds: int = 2, layout: str | None = None) -> None:
        self.model, self.loss_fn = model, loss_fn
        self.lean = lean_training(model)
        self.autocast = autocast if autocast is not None else torch.autocast(lr_like.device.type, enabled=False)
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = (optimizer or (lambda ps: fast_adam(ps, lr=1e-4)))(params)
        if isinstance(self.optimizer, torch.optim.Adam) and not (
            self.optimizer.defaults.get("fused") or self.optimizer.defaults.get("foreach")
        ):
            self.optimizer = fast_adam(params, lr=self.optimizer.defaults["lr"])
        self.layout = self._probe(lr_like.device, rounds) if layout is None else layout
        to_layout(model, self.layout)
        kind = "fused" if self.optimizer.defaults.get("fused") else "foreach"
        self.note = f"train layout={self.layout}, adam={kind}, set_to_none" + (", fold_actnorm" if self.lean else "")

    def _loss_backward(self) -> Tensor:
        with self.autocast:
            loss = self.loss_fn(self.model)
        loss.backward()
        return loss.detach()

    def _probe(self, device: torch.device, rounds: int) -> str:
        best = {"contiguous": float("inf"), "channels_last": float("inf")}
        losses: dict[str, float] = {}
        for r in range(rounds + 1):
            for layout in ("contiguous", "channels_last"):
                to_layout(self.model, layout)
                self.model.zero_grad(set_to_none=True)
                t, loss = _seconds(self._loss_backward, device)
                if r == 0:
                    losses[layout] = float(loss)
                else:
                    best[layout] = min(best[layout], t)
        self.model.zero_grad(set_to_none=True)
        a, b = losses["contiguous"], losses["channels_last"]
        same = abs(a - b) <= LAYOUT_TOLERANCE * max(1.0, abs(a))
        choice = "channels_last" if same and best["channels_last"] < _GAIN * best["contiguous"] else "contiguous"
        to_layout(self.model, choice)
        return choice

    def __call__(self) -> Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self._loss_backward()
        self.optimizer.step()
        return loss


def training_step(model: nn.Module, loss_fn: Callable[[nn.Module], Tensor], **kw: Any) -> TrainingStep:
    """See :class:`TrainingStep`."""
    return TrainingStep(model, loss_fn, **kw)


# ----------------------------------------------------------------------------------------------------
# CUDA switches


def set_tf32(enabled: bool) -> None:
    """``run.tf32``: allow (or forbid) TF32 in CUDA matrix products and cuDNN convolutions. Without it fp32 means
    IEEE fp32 everywhere (torch's own default lets cuDNN convolutions use TF32)."""
    mode = "tf32" if enabled else "ieee"
    if hasattr(torch.backends, "fp32_precision"):
        torch.backends.cuda.matmul.fp32_precision = mode
        torch.backends.cudnn.conv.fp32_precision = mode
    else:  # pragma: no cover - torch < 2.9
        torch.backends.cuda.matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled


def tf32_enabled() -> bool:
    """Whether CUDA matrix products may use TF32 now."""
    if hasattr(torch.backends, "fp32_precision"):
        return torch.backends.cuda.matmul.fp32_precision == "tf32"
    return bool(torch.backends.cuda.matmul.allow_tf32)  # pragma: no cover


def pinned(x: Tensor, device: torch.device) -> Tensor:
    """``x`` moved to ``device``; a CPU tensor bound for CUDA goes through pinned memory, asynchronously."""
    if device.type == "cuda" and x.device.type == "cpu":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


# ----------------------------------------------------------------------------------------------------
# torch.compile


def _compile_targets(model: nn.Module) -> list[nn.Module]:
    """What ``run.compile`` compiles: the model's forward, or for a flow (whose work is ``decode``, not
    ``forward``) each direct submodule with a forward of its own (SRFlow: the conditional RRDB)."""
    flow = all(callable(getattr(model, m, None)) for m in ("encode", "decode", "latent_shapes"))
    if not flow:
        return [model]
    return [c for c in model.children() if type(c).forward is not nn.Module.forward]


def _uncompile(targets: Sequence[nn.Module]) -> None:
    for t in targets:
        t._compiled_call_impl = None  # what nn.Module.compile() set


def maybe_compile(
    model: nn.Module, lr: Tensor, *, forward: Callable[[nn.Module, Tensor], Any] | None = None, rounds: int = 2,
    warn: Callable[[str], None] | None = None,
) -> tuple[nn.Module, str]:
    """``run.compile``: compile ``model`` in place (``nn.Module.compile``: its forward, or for a flow the
    submodules of :func:`_compile_targets`) and keep it only if the probe input runs faster; returns
    ``(model, note)`` where ``note`` says what happened in one line (also printed to stderr when compiling is
    not possible here)."""
    say = warn or (lambda msg: print(f"restore-run: {msg}", file=sys.stderr))
    run = forward or (lambda m, x: m(x))
    x = probe_input(lr, int(getattr(model, "size_multiple", 1) or 1))
    device = lr.device
    targets = _compile_targets(model)
    if not targets:
        return model, "run.compile: nothing to compile in this network; running uncompiled"
    best_plain = float("inf")
    with torch.no_grad():
        for _ in range(rounds):
            best_plain = min(best_plain, _seconds(lambda: run(model, x), device)[0])
        try:
            for t in targets:
                t.compile()
            run(model, x)  # compiles
        except Exception as exc:  # noqa: BLE001 - any backend failure means: run uncompiled
            _uncompile(targets)
            first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0][:200]
            why = f"{exc.__class__.__name__}: {first}"
            note = f"run.compile: torch.compile is not available here ({why}); running uncompiled"
            say(note)
            return model, note
        best_comp = float("inf")
        for _ in range(rounds):
            best_comp = min(best_comp, _seconds(lambda: run(model, x), device)[0])
    if best_comp < _GAIN * best_plain:
        return model, f"run.compile: compiled ({best_plain / best_comp:.2f}x on the probe)"
    _uncompile(targets)
    return model, f"run.compile: not faster here ({best_plain / best_comp:.2f}x on the probe); running uncompiled"


__all__ = [
    "LAYOUT_TOLERANCE",
    "PROBE_MIN_WEIGHTS",
    "TrainingStep",
    "fast_adam",
    "fused_optimizer",
    "lean_training",
    "training_step",
    "PROBE_SIDE",
    "SampleBatcher",
    "choose_layout",
    "in_layout",
    "layout_of",
    "maybe_compile",
    "probe_input",
    "pinned",
    "same_output",
    "set_tf32",
    "sync",
    "tf32_enabled",
    "to_layout",
]
