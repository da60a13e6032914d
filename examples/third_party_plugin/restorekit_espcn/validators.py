"""A validator: ``validator(model, samples, ctx) -> ValidationResult``."""

from __future__ import annotations

from typing import Any, Iterable

import torch
import torch.nn.functional as F
from pydantic import Field
from restorekit import Params, Sample, ValidationContext, ValidationResult


class MAEParams(Params):
    clamp: bool = Field(True, description="Clamp the SR image to [0, 1] before measuring.")


class MAE:
    """Mean absolute error (in [0, 1] units) of ``model(lq)`` against ``hq``, per image and averaged."""

    def __init__(self, params: MAEParams) -> None:
        self.params = params

    @torch.no_grad()
    def __call__(self, model: Any, samples: Iterable[Sample], ctx: ValidationContext) -> ValidationResult:
        rows: list[dict[str, Any]] = []
        for sample in samples:
            lq, hq = sample.lq.to(ctx.device), sample.hq.to(ctx.device)
            m = getattr(model, "size_multiple", 1)
            h, w = lq.shape[-2:]
            padded = F.pad(lq, (0, (-w) % m, 0, (-h) % m), mode="replicate")  # the model's size rule
            sr = model(padded)[..., : h * ctx.scale, : w * ctx.scale].float()
            if self.params.clamp:
                sr = sr.clamp(0, 1)
            rows.append({"name": sample.name, "mae": (sr - hq.float()).abs().mean().item()})
        mean = sum(r["mae"] for r in rows) / max(len(rows), 1)
        return ValidationResult(metrics={"mae": mean}, per_image=rows)
