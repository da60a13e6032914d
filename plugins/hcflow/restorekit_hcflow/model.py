"""HCFlowNet: the HCFlow architecture as restorekit serves it.

:class:`HCFlowNet` is :class:`~restorekit_hcflow.arch.HCFlowArch` (same parameters, same state dict) with what the
bare architecture leaves to restorekit: random latents from :func:`restorekit.sample_latents` (it draws the last
latent first, then the others from the second-to-last down, which is HCFlow's own order, coarsest level first; so a
seed reproduces the official sampler's noise), ``encode`` results as :class:`restorekit.EncodeResult` (with the
flow's own LR as ``flow_lr``), and the architecture's ValueErrors about wrong inputs as one-line
:class:`restorekit.UserError`\\ s.
"""

from __future__ import annotations

from typing import Sequence

import torch
from restorekit import EncodeResult, UserError, sample_latents
from torch import Tensor

from .arch import Encoded, HCFlowArch

Cond = tuple[Tensor, Tensor, Tensor]


class HCFlowNet(HCFlowArch):
    """HCFlow for restorekit (see the module docstring); built by :func:`restorekit_hcflow.build_hcflow`."""

    def sample_latents(self, lr: Tensor, temperature: float | Tensor, generator: torch.Generator | None) -> list[Tensor]:
        """N(0, T²) latents for ``lr`` drawn with ``generator`` by :func:`restorekit.sample_latents`."""
        return sample_latents(self.latent_shapes(lr.shape), temperature, generator, batch=int(lr.shape[0]),
                              device=lr.device, dtype=lr.dtype)

    def encode_full(self, hr: Tensor, lr: Tensor, add_noise: bool = False, noise: Tensor | None = None) -> Encoded:
        """Everything the forward direction computes (:class:`~restorekit_hcflow.arch.Encoded`: priors, the LR
        term, the quantised LR estimate, …)."""
        try:
            return super().encode(hr, lr, add_noise, noise)
        except ValueError as exc:
            raise UserError(str(exc)) from None

    def encode(self, hr: Tensor, lr: Tensor, add_noise: bool = False, noise: Tensor | None = None) -> EncodeResult:  # type: ignore[override]
        """HR → :class:`restorekit.EncodeResult` (standardised latents finest level first, NLL in bits per pixel with
        the LR term, the flow's log-det, ``flow_lr``: the flow's raw LR estimate)."""
        enc = self.encode_full(hr, lr, add_noise, noise)
        return EncodeResult(enc.latents, enc.nll, enc.logdet, enc.flow_lr)

    def decode(  # type: ignore[override]
        self,
        lr: Tensor,
        latents: Sequence[Tensor] | None = None,
        temperature: float | Tensor = 0.0,
        generator: torch.Generator | None = None,
        *,
        cond: Cond | None = None,
        clamp: bool = True,
    ) -> Tensor:
        """SR from ``lr`` and ``latents`` (used as given), or from latents drawn at ``temperature`` with
        ``generator``; temperature 0 gives the prior means (deterministic). Clamped to [0, 1] as in the official
        code unless ``clamp=False``."""
        try:
            if latents is None:
                self._check_sizes(lr)
                latents = self.sample_latents(lr, temperature, generator)
            return super().decode(lr, latents, cond=cond, clamp=clamp)
        except ValueError as exc:
            raise UserError(str(exc)) from None

    def conditional_features(self, lr: Tensor) -> Cond:
        try:
            return super().conditional_features(lr)
        except ValueError as exc:
            raise UserError(str(exc)) from None

    def forward(self, lr: Tensor, temperature: float | Tensor = 0.0, generator: torch.Generator | None = None) -> Tensor:
        """SR at ``temperature`` (default 0: the prior means) for any LR size."""
        return self.decode(lr, temperature=temperature, generator=generator)


__all__ = ["HCFlowNet"]
