"""The fast paths, each the same function as the plain path and kept only where measured faster
(``docs/performance.md`` has what each wins, and when): :func:`choose_layout` (channels_last or NCHW, probed on a
crop of the real input, kept only when the outputs agree within ``1e-5``), :class:`SampleBatcher` (how many latent
sets of one LR image to decode per call), :func:`fast_inference` / :func:`lean_training` (the switches a generator
declares in its :class:`restorekit.Switches`), :class:`FrozenLayouts` (frozen parts of a trained network in their
own faster layout), :func:`maybe_compile` (``run.compile``) and :func:`fused_optimizer`. Every choice is kept by its
caller, never here.

Where things live: :mod:`.layout`, :mod:`.sampling`, :mod:`.switches`, :mod:`.frozen`, :mod:`.training`,
:mod:`.device` (``sync``, TF32, pinned copies), :mod:`.compile`. Every public name is importable from
``restorekit.perf``.
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
