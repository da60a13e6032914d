"""Inference: inputs → generator → outputs, for every ``[infer]`` mode, with tiling, the NaN guard and reports.

Modes (``infer.mode``):

* ``sr`` — ``model(lr)`` for any generator; a flow decodes at ``temperatures[0]`` (0 by default: the mean image).
* ``sample`` — flows: every temperature × ``samples`` random samples; sample ``s`` uses seed ``run.seed + s``.
* ``feed_through`` — flows: the input is an HR image; its downsampled LR is decoded with random latents at every
  temperature × sample (the official playground's "feed_through").
* ``restore`` — flows: the input is a degraded HR image; encode it (LR made with ``downsampler``), normalise the
  latents (:func:`restorekit.latents.normalize_latents`), scale them by each temperature, decode.
* ``latent_transfer`` — flows: the ``reference`` HR image's latents, centre-cropped to each target's latent sizes,
  decoded with the target's LR (targets are LR images, or HR with ``input_is_hr``).
* ``interpolate`` — flows: ``frames`` images from zero latents (or the ``reference``'s) to the input's latents,
  plus an animated GIF.

Outputs go to ``infer.output_dir`` (default ``<run.output_dir>/infer``) with ``summary.json`` (and ``samples.json``,
one record per output image: temperature, sample, seed, fallback). With ``input_is_hr`` the sr/sample/feed_through/
restore modes also write ``comparison.png`` and ``metrics.md``/``metrics.json`` (PSNR/SSIM, RGB and Y, vs HR).
See ``docs/inference.md``.

Modules: :mod:`.inputs` (finding and reading inputs), :mod:`.slots` (each mode's outputs), :mod:`.modes` (the
:class:`~restorekit.infer.modes.Runner`: model, modes, tiling, NaN ladder), :mod:`.sink` (writing outputs, records,
the summary), :mod:`.reports` (metrics and comparison grid), :mod:`.imaging` (bicubic, quantisation, GIF).
"""

from __future__ import annotations

from typing import Any, Mapping

from ..errors import UserError, one_line
from ..plan import Plan
from .imaging import quantize, upsample_bicubic, write_gif
from .inputs import InputItem, Prepared, collect_inputs
from .inputs import shard as shard_items
from .modes import Runner
from .records import check_existing
from .reports import image_metrics
from .sink import Fallback, InferSummary, OutputSink
from .slots import Slot, make_slots


def infer(plan: Plan, networks: Mapping[str, Any] | None = None, *, shard: bool = True) -> InferSummary:
    """Run ``plan``'s ``[infer]`` table (networks built from the plan, or the given trained ``networks``).

    Under torchrun (``WORLD_SIZE`` > 1) each rank takes its share of the inputs unless ``shard`` is false.

    User mistakes found before any output is written (bad options, no inputs, an output that would overwrite an
    input, a wrong mode for the network) raise :class:`UserError`. Per-image problems (unreadable file, a decode
    that stays non-finite) are reported in the summary, the other images are still written, and ``exit_code``
    is 1.
    """
    from tqdm import tqdm

    r = Runner(plan, networks)
    spec = r.spec
    items = shard_items(r.items, r.rank, r.world) if shard else r.items
    sink = OutputSink(r.output)

    def process(batch: list[Prepared]) -> None:
        try:
            outcomes = r.run_batch(batch)
        except (RuntimeError, ValueError, UserError) as exc:
            if len(batch) > 1:  # find the culprit: one image at a time
                for p in batch:
                    process([p])
                return
            hint = " (try [infer.tile])" if "out of memory" in str(exc).lower() else ""
            sink.fail(batch[0].item.path, one_line(exc) + hint)
            return
        for p, o in zip(batch, outcomes):
            sink.finish(p, o)

    if not spec.overwrite:  # before any work: existing outputs must be this request's (all ranks decide alike)
        check_existing(r.output, r.items, (spec.reference, spec.temperature_map))
    buckets: dict[tuple[int, ...], list[Prepared]] = {}  # inputs of one size run as one batch
    bar = tqdm(total=len(items), desc=f"infer {spec.mode}", unit="img", disable=None if r.rank == 0 else True)
    try:
        for item in items:
            paths = r.output.paths(item)
            todo = [(sl, p) for sl, p in paths if spec.overwrite or not p.exists()]
            sink.summary.skipped += [p for sl, p in paths if (sl, p) not in todo]
            if not todo:
                sink.existing_only(item, paths)
                bar.update(1)
                continue
            try:
                prep = r.reader.prepare(item, todo)
            except UserError as exc:
                sink.fail(item.path, exc.about(item.path))
                bar.update(1)
                continue
            key = tuple(prep.lr.shape) + ((tuple(prep.hr.shape)) if prep.hr is not None else ())
            bucket = buckets.setdefault(key, [])
            bucket.append(prep)
            if len(bucket) >= spec.batch_size:
                del buckets[key]
                process(bucket)
                bar.update(len(bucket))
        for bucket in list(buckets.values()):
            process(bucket)
            bar.update(len(bucket))
    finally:
        bar.close()

    summary = sink.close()
    print(summary.text())
    return summary


__all__ = [
    "Fallback",
    "InferSummary",
    "InputItem",
    "Slot",
    "collect_inputs",
    "image_metrics",
    "infer",
    "make_slots",
    "quantize",
    "upsample_bicubic",
    "write_gif",
]
