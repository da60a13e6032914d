"""Latent tools for SRFlow, as pure functions on lists of latent tensors (split latents first, top z last).

They are the flow-agnostic implementations of :mod:`restorekit.latents` (the core owns them, so that every flow
plugin and the ``restore-run`` latent modes share one implementation), re-exported here so that SRFlow users find
them next to the network:

* :func:`sample_latents` ``(shapes, temperature=1.0, generator=None, *, batch=None, device=None, dtype=float32)``:
  N(0, T²) latents; per-sample ``(C, h, w)`` shapes — what :meth:`SRFlowNet.latent_shapes` returns — get ``batch``;
  ``temperature`` a float or an HR-size map, area-resized per level;
* :func:`normalize_latents` ``(latents, eps=1e-6)``: every channel standardised over space, then every location over
  channels (SRFlow's restoration of degraded images);
* :func:`transfer_latents` ``(ref_latents, target_shapes)``: aligned centre crops of a reference's latents; a
  reference smaller than the target is a one-line :class:`~restorekit.UserError`;
* :func:`interpolate_latents` ``(a, b, n, mode="linear" | "slerp")``: ``n`` latent lists from ``a`` to ``b``;
* :func:`scale_latents`, :func:`temperature_at`, :func:`zeros_like_latents`, :func:`latent_norm`.
"""

from __future__ import annotations

from restorekit import (
    Latents,
    Temperature,
    interpolate_latents,
    latent_norm,
    normalize_latents,
    sample_latents,
    scale_latents,
    temperature_at,
    transfer_latents,
    zeros_like_latents,
)

__all__ = [
    "Latents",
    "Temperature",
    "interpolate_latents",
    "latent_norm",
    "normalize_latents",
    "sample_latents",
    "scale_latents",
    "temperature_at",
    "transfer_latents",
    "zeros_like_latents",
]
