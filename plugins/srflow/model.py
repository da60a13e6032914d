"""SRFlowNet: the SRFlow architecture as restorekit serves it.

:class:`SRFlowNet` is :class:`~restorekit_srflow.arch.SRFlowArch` (same parameters, same state dict) with what
the bare architecture leaves to restorekit: random latents from :func:`restorekit.sample_latents` (the sampler
``restore-run`` uses too, so one seed gives one sample everywhere), any LR size in ``model(lr)`` through
:func:`restorekit.run_padded`, ``encode`` results as :class:`restorekit.EncodeResult`, and the architecture's
ValueErrors about wrong inputs as one-line :class:`restorekit.UserError`\\ s.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from restorekit import (
    NAN_LADDER,
    EncodeResult,
    ExportGraph,
    UserError,
    as_temperature,
    decode_finite,
    run_padded,
    sample_latents,
    temperature_at,
)
from torch import Tensor

from .arch import LevelCond, SRFlowArch


class SRFlowNet(SRFlowArch):
    """SRFlow for restorekit (see the module docstring); built by :func:`restorekit_srflow.build_srflow`."""

    def sample_latents(self, lr: Tensor, temperature: float | Tensor, generator: torch.Generator | None) -> list[Tensor]:
        """N(0, T²) latents for ``lr`` drawn with ``generator`` by :func:`restorekit.sample_latents`."""
        return sample_latents(self.latent_shapes(lr.shape), temperature, generator, batch=int(lr.shape[0]),
                              device=lr.device, dtype=lr.dtype)

    def encode(self, hr: Tensor, lr: Tensor, add_noise: bool = False, noise: Tensor | None = None, *,
               cond: LevelCond | None = None) -> EncodeResult:
        try:
            return EncodeResult(*super().encode(hr, lr, add_noise, noise, cond=cond))
        except ValueError as exc:
            raise UserError(str(exc)) from None

    nan_ladder: tuple[float, ...] | None = NAN_LADDER
    """The NaN ladder of :meth:`decode` and ``model(lr, ...)`` in eval mode (``None``: return raw decodes)."""

    def decode(self, lr: Tensor, latents: Sequence[Tensor] | None = None, temperature: float | Tensor = 0.0,
               generator: torch.Generator | None = None, *, cond: LevelCond | None = None,
               return_logdet: bool = False, nan_ladder: Sequence[float] | None | str = "model") -> Any:
        """SRFlowArch's decode; in eval mode an image that is not finite is decoded again from the same latents at
        the lower temperatures of ``nan_ladder`` (default: the ``nan_ladder`` attribute, ``(0.5, 0.0)``, as
        ``restore-run``), with a :class:`restorekit.NonFiniteDecodeWarning`; given latents count as temperature 1.
        ``nan_ladder=None`` returns the raw decode (``restore-run`` runs the same ladder itself and records it)."""
        ladder = (self.nan_ladder if nan_ladder == "model" else nan_ladder) if not self.training else None
        try:
            if ladder is None or return_logdet:
                return super().decode(lr, latents, temperature, generator, cond=cond, return_logdet=return_logdet)
            self._check_sizes(lr)
            temp = as_temperature(temperature)
            if latents is None:  # the N(0, 1) draw that the temperature scales (the same numbers as before)
                zero = not isinstance(temp, Tensor) and temp == 0.0
                base = list(self.sample_latents(lr, 0.0 if zero else 1.0, generator))
            else:
                base, temp = list(latents), 1.0

            def run(zs: Sequence[Tensor], index: int | None) -> Tensor:
                one = index is not None and lr.shape[0] > 1
                x = lr[index : index + 1] if one else lr  # type: ignore[operator]
                return super(SRFlowNet, self).decode(x, zs, cond=None if one else cond)  # type: ignore[no-any-return]

            return decode_finite(run, base, temp, ladder, what="srflow decode")
        except ValueError as exc:
            raise UserError(str(exc)) from None

    def forward(self, lr: Tensor, temperature: float | Tensor = 0.0, generator: torch.Generator | None = None) -> Tensor:
        """SR for any LR size: pad at the bottom/right to a size the levels allow, decode at ``temperature``
        (default 0: the mean image), crop back to ``scale ×`` the original size. Not clamped. In eval mode the NaN
        ladder of :meth:`decode` applies.

        A temperature map is taken at the original HR size (other sizes are resized to it) and padded likewise.
        """
        h, w, s = int(lr.shape[-2]), int(lr.shape[-1]), self.scale
        temp = as_temperature(temperature)

        def run(x: Tensor) -> Tensor:
            t = temp
            ph, pw = int(x.shape[-2]) - h, int(x.shape[-1]) - w
            if isinstance(t, Tensor) and (ph or pw):
                t = F.pad(temperature_at(t, (h * s, w * s)), (0, pw * s, 0, ph * s), mode="replicate")
            return self.decode(x, temperature=t, generator=generator)  # type: ignore[no-any-return]

        return run_padded(run, lr, multiple=self.size_multiple, scale=s)

    def export_graph(self, kind: str) -> ExportGraph:
        """What ``restore-run export`` / :func:`restorekit.export_model` export (:class:`restorekit.Exportable`): the
        ``sample`` graph ``(lr, *latents) → sr``, the temperature-0 ``mean`` graph ``lr → sr``, or the ``encode``
        graph ``(hr, lr) → latents`` (see :mod:`restorekit_srflow.export`)."""
        from .export import export_graph

        return export_graph(self, kind)


__all__ = ["SRFlowNet"]
