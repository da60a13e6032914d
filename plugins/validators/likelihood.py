"""The ``nll`` validator: how likely a flow finds held-out HR images given their LR, in bits per dimension.

One convention, the one of likelihood models of 8-bit images (RealNVP, Glow): the HR image's 8-bit values are
dequantised with uniform noise, ``x = hr + (u - 0.5) / 256`` (``u`` uniform in [0, 1) per sub-pixel, drawn with a
fixed seed), the flow gives the density ``p(x | lr)`` of ``x`` on the [0, 1] scale (``EncodeResult.nll`` without the
flow's own noise: ``-log2 p(x | lr) / (H·W)``), and

    nll = -log2 p(x | lr) / (C·H·W) + 8

bits per dimension: the code length of the 8-bit image under the flow, per sub-pixel. 8 is what storing the raw
bytes costs (a uniform density on [0, 1]); lower is better. docs/evaluation.md works one example through. One value
per image; the dataset value is the mean over images. It does not depend on the temperature.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
from pydantic import Field
from restorekit import (FlowModel, Params, Sample, UserError, ValidationContext, ValidationResult, judging,
                        mean_rows)

from .gaussian import crop_to_multiple


class NLLParams(Params):
    """Params of the ``nll`` validator."""

    add_noise: bool = Field(True, description="Dequantise the HR values with uniform noise of one 8-bit step "
                            "(fixed seed); false: the density at the 8-bit values themselves (not a code length).")
    bits: int = Field(8, ge=0, le=16, description="Bit depth of the HR images: the noise is one step of 2^bits "
                      "levels and `bits` is added (0: the density of the [0, 1] scale, no noise).")
    seed: int = Field(0, description="Seed of the dequantisation noise, drawn anew per image (an image gets the same noise in any order).")


class NLL:
    """The ``nll`` validator (needs a flow: ``model.encode(hr, lr)``); metric ``nll`` in bits per dimension."""

    def __init__(self, params: NLLParams | None = None) -> None:
        self.params = params or NLLParams()

    def bits_per_dim(self, model: Any, hq: torch.Tensor, lq: torch.Tensor, generator: torch.Generator) -> float:
        """One image's (``hq`` (1, C, H, W) in [0, 1], ``lq`` its LR) bits per dimension under ``model``."""
        levels = 2 ** self.params.bits
        if self.params.add_noise and self.params.bits:
            u = torch.rand(hq.shape, generator=generator, dtype=torch.float64).to(hq)
            hq = hq + (u - 0.5) / levels
        enc = model.encode(hq, lq, add_noise=False)
        return float(enc.nll.double().mean()) / hq.shape[1] + self.params.bits

    def __call__(self, model: Any, samples: Iterable[Sample], ctx: ValidationContext) -> ValidationResult:
        if not isinstance(model, FlowModel):
            raise UserError(f"nll: the validated network ({type(model).__name__}) is not a flow (no encode/decode)")
        scale = int(getattr(model, "scale", ctx.scale))
        multiple = max(1, int(getattr(model, "size_multiple", 1) or 1))
        rows: list[dict[str, Any]] = []
        with judging(model):
            for sample in samples:
                lq, hq = crop_to_multiple("nll", sample, multiple, scale)
                generator = torch.Generator().manual_seed(self.params.seed)  # per image: the same noise in any order
                value = self.bits_per_dim(model, hq.to(ctx.device), lq.to(ctx.device), generator)
                rows.append({"name": sample.name, "nll": value})
        return ValidationResult(mean_rows(rows), rows)


def build_nll(params: NLLParams) -> NLL:
    return NLL(params)
