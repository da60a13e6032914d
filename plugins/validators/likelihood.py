"""The ``nll`` validator: how likely a flow finds held-out HR images given their LR, in bits per dimension.

For each validation image the flow encodes HR given LR (the LR cropped to the flow's ``size_multiple``, the HR to
match). Its :class:`~restorekit.EncodeResult` gives ``-log2 p(hr | lr)`` per pixel (``nll``, bits per H·W); ``nll``
here is that per dimension (divided by the channels): ``-log2 p(hr | lr) / (C·H·W)`` for the density of HR on the
[0, 1] scale. (Add 8 for the usual 8-bit convention, the density of the [0, 256) scale.) Lower is better; one
value per image, the dataset value is the mean over images. It does not depend on the temperature.
"""

from __future__ import annotations

from typing import Any, Iterable

from pydantic import Field
from restorekit import (FlowModel, Params, Sample, UserError, ValidationContext, ValidationResult, judging,
                        mean_rows)

from .gaussian import crop_to_multiple


class NLLParams(Params):
    """Params of the ``nll`` validator."""

    add_noise: bool = Field(False, description="Dequantisation noise on encode (the flow's own definition).")


class NLL:
    """The ``nll`` validator (needs a flow: ``model.encode(hr, lr)``); metric ``nll`` in bits per dimension."""

    def __init__(self, params: NLLParams | None = None) -> None:
        self.params = params or NLLParams()

    def __call__(self, model: Any, samples: Iterable[Sample], ctx: ValidationContext) -> ValidationResult:
        if not isinstance(model, FlowModel):
            raise UserError(f"nll: the validated network ({type(model).__name__}) is not a flow (no encode/decode)")
        scale = int(getattr(model, "scale", ctx.scale))
        multiple = max(1, int(getattr(model, "size_multiple", 1) or 1))
        rows: list[dict[str, Any]] = []
        with judging(model):
            for sample in samples:
                lq, hq = crop_to_multiple("nll", sample, multiple, scale)
                enc = model.encode(hq.to(ctx.device), lq.to(ctx.device), add_noise=self.params.add_noise)
                bits_per_dim = enc.nll.double() / hq.shape[1]
                rows.append({"name": sample.name, "nll": float(bits_per_dim.mean())})
        return ValidationResult(mean_rows(rows), rows)


def build_nll(params: NLLParams) -> NLL:
    return NLL(params)
