"""Validators that judge outputs: drawing a network's N outputs per image (the same draws as ``restore-run``),
handing them to :class:`~restorekit.SampleScorer` validators, and averaging their per-image numbers.

* :func:`draw_outputs`: a network's outputs for one LR batch at one temperature. For a flow, sample ``i`` uses the
  latents :func:`restorekit.sample_latents` draws on a CPU generator seeded ``seed + i`` (scaled by the temperature,
  decoded on the LR padded to ``size_multiple``), exactly as ``restore-run``'s ``sample`` mode; temperature 0 is
  one image. A network that is not a flow gives one output (``model(lr)``) at any temperature.
  :func:`draw_sweep`: the same at several temperatures, the conditional features computed once.
* :func:`score_images`: a scorer over :class:`~restorekit.SRSamples` items: one row per image, dataset value = the
  mean of each column over images (the NTIRE 2021 protocol averages per-image values).
* :class:`ScoringValidator`: a base class whose ``__call__(model, samples, ctx)`` (the :class:`~restorekit.Validator`
  protocol, as training validation calls it) draws ``ctx.samples`` outputs at ``ctx.temperature`` and scores them.
"""

from __future__ import annotations

import contextlib
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
    return next(draw_sweep(model, lq, temperatures=[temperature], samples=samples, seed=seed, scale=scale))


def draw_sweep(model: Any, lq: Tensor, *, temperatures: Sequence[float], samples: int = 1, seed: int = 0,
               scale: int | None = None) -> Iterator[list[Tensor]]:
    """:func:`draw_outputs` at each of ``temperatures`` in turn, the same draws (sample ``i`` at every temperature
    is the latent drawn with ``seed + i``, scaled by it). A flow's conditional features of ``lq`` are computed
    once for the whole sweep; one temperature's outputs are held at a time. Any other network is run once and
    its output given at every temperature."""
    s = int(scale if scale is not None else getattr(model, "scale", 1) or 1)
    if not isinstance(model, FlowModel):
        out = [run_padded(model, lq, scale=s).float().clamp(0.0, 1.0)]
        for _ in temperatures:
            yield out
        return
    from .perf import SampleBatcher

    h, w = int(lq.shape[-2]), int(lq.shape[-1])
    lr_pad, _ = pad_to_multiple(lq, max(1, int(getattr(model, "size_multiple", 1) or 1)))
    shapes = [tuple(int(d) for d in sh) for sh in model.latent_shapes(tuple(int(d) for d in lr_pad.shape))]
    one = [(1,) + sh[-3:] for sh in shapes]
    cond = model.conditional_features(lr_pad)
    batcher = SampleBatcher()  # as restore-run's flow decoder: several latent sets per call where that is faster
    noise: list[list[Tensor]] = []
    for t in temperatures:
        count = 1 if t == 0 else max(1, int(samples))
        while len(noise) < count:  # CPU draws, as restore-run
            z = sample_latents(one, 1.0, torch.Generator().manual_seed(seed + len(noise)))
            noise.append([torch.cat([x] * lq.shape[0]).to(lq.device) for x in z])
        outs = batcher.decode(model, lr_pad, [scale_latents(noise[i], float(t)) for i in range(count)], cond)
        yield [o[..., : h * s, : w * s].float().clamp(0.0, 1.0) for o in outs]


def sr_samples(model: Any, samples: Iterable[Sample], ctx: ValidationContext) -> Iterator[SRSamples]:
    """Each sample's :class:`~restorekit.SRSamples` at ``ctx.temperature`` with ``ctx.samples`` draws."""
    return sr_sweep(model, samples, [ctx.temperature], ctx)


def sr_sweep(model: Any, samples: Iterable[Sample], temperatures: Sequence[float],
             ctx: ValidationContext) -> Iterator[SRSamples]:
    """For each sample in turn, its :class:`~restorekit.SRSamples` at each of ``temperatures`` (``ctx.samples``
    draws; :func:`draw_sweep`: the conditional features once per image)."""
    for sample in samples:
        lq = sample.lq.to(ctx.device)
        hq = sample.hq.to(ctx.device)
        draws = draw_sweep(model, lq, temperatures=temperatures, samples=ctx.samples, seed=ctx.seed,
                           scale=int(getattr(model, "scale", ctx.scale)))
        for t in temperatures:
            try:
                srs = next(draws)
            except ValueError as exc:  # the model's output is not scale x its input
                raise UserError(f"sample {sample.name!r}: the model {exc}") from None
            yield SRSamples(sample.name, lq, hq, srs, float(t))


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


@contextlib.contextmanager
def judging(model: Any) -> Iterator[None]:
    """A validator's view of ``model``: eval mode and no gradients inside, its training mode restored after."""
    was_training = bool(getattr(model, "training", False))
    if isinstance(model, torch.nn.Module):
        model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        if isinstance(model, torch.nn.Module):
            model.train(was_training)


class ScoringValidator:
    """Base of validators that judge outputs: implement ``score(item, ctx)``; calling the validator as a
    :class:`~restorekit.Validator` draws the outputs (:func:`draw_outputs`, eval mode, no gradients) and averages."""

    def score(self, item: SRSamples, ctx: ValidationContext) -> dict[str, float]:
        raise NotImplementedError

    def __call__(self, model: Any, samples: Iterable[Sample], ctx: ValidationContext) -> ValidationResult:
        with judging(model):
            return score_images(self, sr_samples(model, samples, ctx), ctx)


__all__ = ["ScoringValidator", "draw_outputs", "draw_sweep", "judging", "mean_rows", "score_images", "sr_samples", "sr_sweep"]
