"""Validators that judge outputs: drawing a network's N outputs per image (the same draws as ``restore-run``),
handing them to :class:`~restorekit.SampleScorer` validators, and averaging their per-image numbers.

* :func:`draw_outputs`: a network's outputs for one LR batch at one temperature. For a flow, sample ``i`` uses the
  latents :func:`restorekit.sample_latents` draws on a CPU generator seeded ``seed + i`` (scaled by the temperature,
  decoded on the LR padded to ``size_multiple``), exactly as ``restore-run``'s ``sample`` mode; temperature 0 is
  one image. A network that is not a flow gives one output (``model(lr)``) at any temperature.
* :func:`score_images`: a scorer over :class:`~restorekit.SRSamples` items: one row per image, dataset value = the
  mean of each column over images (the NTIRE 2021 protocol averages per-image values).
* :class:`ScoringValidator`: a base class whose ``__call__(model, samples, ctx)`` (the :class:`~restorekit.Validator`
  protocol, as training validation calls it) draws ``ctx.samples`` outputs at ``ctx.temperature`` and scores them.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Iterator, Sequence

import torch
from torch import Tensor

from .components import FlowModel, Sample, SRSamples, ValidationContext, ValidationResult
from .errors import UserError
from .latents import sample_latents, scale_latents
from .padding import pad_to_multiple, run_padded


def draw_outputs(model: Any, lq: Tensor, *, temperature: float = 0.0, samples: int = 1, seed: int = 0,
                 scale: int | None = None) -> list[Tensor]:
    """The outputs of ``model`` for ``lq`` (B, C, h, w): ``samples`` draws at ``temperature`` for a flow (one at
    temperature 0 or for any other network), each (B, C, s·h, s·w) float, clamped to [0, 1] (NaN stays NaN)."""
    s = int(scale if scale is not None else getattr(model, "scale", 1) or 1)
    if not isinstance(model, FlowModel):
        return [run_padded(model, lq, scale=s).float().clamp(0.0, 1.0)]
    from .tiling import flow_decoder

    h, w = int(lq.shape[-2]), int(lq.shape[-1])
    lr_pad, _ = pad_to_multiple(lq, max(1, int(getattr(model, "size_multiple", 1) or 1)))
    shapes = [tuple(int(d) for d in sh) for sh in model.latent_shapes(tuple(int(d) for d in lr_pad.shape))]
    one = [(1,) + sh[-3:] for sh in shapes]
    count = 1 if temperature == 0 else max(1, int(samples))
    sets = []
    for i in range(count):
        noise = sample_latents(one, 1.0, torch.Generator().manual_seed(seed + i))  # CPU draws, as restore-run
        batch = [torch.cat([z] * lq.shape[0]).to(lq.device) for z in noise]
        sets.append(scale_latents(batch, float(temperature)))
    outs = flow_decoder(model)(lr_pad, sets)
    return [o[..., : h * s, : w * s].float().clamp(0.0, 1.0) for o in outs]


def sr_samples(model: Any, samples: Iterable[Sample], ctx: ValidationContext) -> Iterator[SRSamples]:
    """Each sample's :class:`~restorekit.SRSamples` at ``ctx.temperature`` with ``ctx.samples`` draws."""
    for sample in samples:
        lq = sample.lq.to(ctx.device)
        try:
            srs = draw_outputs(model, lq, temperature=ctx.temperature, samples=ctx.samples, seed=ctx.seed,
                               scale=int(getattr(model, "scale", ctx.scale)))
        except ValueError as exc:  # the model's output is not scale x its input
            raise UserError(f"sample {sample.name!r}: the model {exc}") from None
        yield SRSamples(sample.name, lq, sample.hq.to(ctx.device), srs, float(ctx.temperature))


def mean_rows(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """The mean of every numeric column present in all rows (``name`` and other text skipped)."""
    if not rows:
        return {}
    keys = [k for k, v in rows[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    keys = [k for k in keys if all(k in r for r in rows)]
    return {k: math.fsum(float(r[k]) for r in rows) / len(rows) for k in keys}


def score_images(scorer: Any, items: Iterable[SRSamples], ctx: ValidationContext) -> ValidationResult:
    """``scorer.score`` over the items: one row per image (``name`` + numbers), and their means."""
    rows = [{"name": item.name, **scorer.score(item, ctx)} for item in items]
    return ValidationResult(mean_rows(rows), rows)


class ScoringValidator:
    """Base of validators that judge outputs: implement ``score(item, ctx)``; calling the validator as a
    :class:`~restorekit.Validator` draws the outputs (:func:`draw_outputs`, eval mode, no gradients) and averages."""

    def score(self, item: SRSamples, ctx: ValidationContext) -> dict[str, float]:
        raise NotImplementedError

    def __call__(self, model: Any, samples: Iterable[Sample], ctx: ValidationContext) -> ValidationResult:
        was_training = bool(getattr(model, "training", False))
        if isinstance(model, torch.nn.Module):
            model.eval()
        try:
            with torch.no_grad():
                return score_images(self, sr_samples(model, samples, ctx), ctx)
        finally:
            if isinstance(model, torch.nn.Module):
                model.train(was_training)


__all__ = ["ScoringValidator", "draw_outputs", "mean_rows", "score_images", "sr_samples"]
