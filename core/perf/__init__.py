"""Inference fast paths, each chosen by measuring it against the plain path on the real model and input.

* :func:`choose_layout` — channels_last or the default (NCHW) memory layout, whichever is faster on this device,
  kept only when both give the same output within ``1e-5`` (relative to the output's magnitude). The probe runs
  on a crop of the first input (at most :data:`PROBE_SIDE` LR pixels a side); the run keeps the choice.
* :class:`SampleBatcher` — how many latent sets of one LR image to decode as one batch. A batch shares the cached
  conditional features; on a CPU a large batch leaves the caches and becomes slower than a loop (8 samples of a
  64×64 LR on a 2-core CPU: 4.3 s batched vs 3.0 s looped), on a GPU batching wins. The batcher grows the chunk
  (1, 2, 4, …) until the time per sample is clearly (5 %) worse than the best so far or ``max_chunk`` is reached,
  measuring the decodes it has to do anyway (over as many calls as that takes), and remembers the best chunk per device
  and LR shape.
* :func:`fast_inference` / :func:`lean_training` — the module switches a generator declares
  (:class:`restorekit.Switches`) that compute the same function with less memory or arithmetic.
* :class:`FrozenLayouts` — in training, each frozen part of a network (SRFlow's RRDB in stage 2) in the layout
  the same probe finds faster for it, its outputs returned in its input's layout.
* :func:`maybe_compile` — ``run.compile = true``: ``torch.compile``, kept only when the compiled module is faster
  on the probe input; where the platform cannot compile, one line on stderr and the module runs uncompiled.

The plain path (NCHW, no caching, one decode per sample) is what ``restore-run --benchmark`` measures these
against, in the same process (``docs/performance.md``).

Where things live: :mod:`.layout` (the layout probe), :mod:`.sampling` (:class:`SampleBatcher`),
:mod:`.training` (fused optimisers), :mod:`.switches` (module switches),
:mod:`.frozen` (frozen parts of a trained network in their own faster layout), :mod:`.device` (``sync``, TF32, pinned copies), :mod:`.compile` (:func:`maybe_compile`). Every public name is
importable from ``restorekit.perf``.
"""

from __future__ import annotations

from .compile import maybe_compile
from .device import pinned, set_tf32, sync, tf32_enabled
from .frozen import FrozenLayouts, frozen_parts
from .layout import (
    LAYOUT_TOLERANCE,
    PROBE_MIN_WEIGHTS,
    PROBE_SIDE,
    choose_layout,
    in_layout,
    probe_input,
    same_output,
    to_layout,
)
from .sampling import SampleBatcher
from .switches import fast_inference, lean_training, set_switches
from .training import fused_optimizer

__all__ = [
    "FrozenLayouts",
    "LAYOUT_TOLERANCE",
    "PROBE_MIN_WEIGHTS",
    "fast_inference",
    "frozen_parts",
    "fused_optimizer",
    "lean_training",
    "PROBE_SIDE",
    "SampleBatcher",
    "choose_layout",
    "in_layout",
    "maybe_compile",
    "probe_input",
    "pinned",
    "same_output",
    "set_switches",
    "set_tf32",
    "sync",
    "tf32_enabled",
    "to_layout",
]
