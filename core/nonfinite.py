"""The NaN ladder: a flow decode that is not finite is redone at lower temperatures, one image at a time.

A flow sampled far from its training distribution (high temperature, an unusual image) can decode to NaN or inf
pixels. ``restore-run`` and the Python API (``model(lr, temperature=T)``, ``model.decode(...)`` of a flow in eval
mode, e.g. :class:`restorekit_srflow.SRFlowNet`) handle it the same way, through :func:`first_finite`: the affected
image is decoded again from the same latents scaled to each rung of the ladder below its temperature
(``infer.nan_ladder``, default :data:`NAN_LADDER`, always ending at 0: the mean image), and the first finite one is
kept and reported — in ``restore-run``'s records and summary, and by :class:`NonFiniteDecodeWarning` in Python.
When even the mean image is not finite, the run records an error and Python raises one :class:`UserError`.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from .errors import UserError
from .latents import Latents, Temperature, scale_latents

NAN_LADDER: tuple[float, ...] = (0.5, 0.0)
"""The default rungs (``infer.nan_ladder``): temperatures tried, in order, after a non-finite decode."""


class NonFiniteDecodeWarning(RuntimeWarning):
    """A flow decode was not finite and the image was decoded again at a lower temperature (the NaN ladder)."""


def ladder_below(temperature: float, ladder: Sequence[float]) -> list[float]:
    """The rungs of ``ladder`` below ``temperature``, in order, ending at 0 (the mean image) when ``temperature``
    is above 0."""
    rungs = [float(x) for x in ladder if x < temperature]
    if temperature > 0 and (not rungs or rungs[-1] != 0.0):
        rungs.append(0.0)
    return rungs


def first_finite(decode: Callable[[float], Tensor | None], rungs: Sequence[float]) -> tuple[Tensor, float] | None:
    """``(image, rung)`` of the first rung whose ``decode(rung)`` is finite (``decode`` returns None, or a tensor
    with a non-finite value, for a failed decode); None when every rung fails."""
    for rung in rungs:
        out = decode(rung)
        if out is not None and bool(torch.isfinite(out).all()):
            return out, rung
    return None


def nonfinite_rows(x: Tensor) -> list[int]:
    """Batch indices of ``x`` holding a NaN or inf."""
    return [int(i) for i in (~torch.isfinite(x).flatten(1).all(1)).nonzero().flatten()]


def _tname(t: float) -> str:
    return f"{t:g}"


def decode_finite(
    decode: Callable[[Latents, int | None], Tensor],
    base: Sequence[Tensor],
    temperature: Temperature,
    ladder: Sequence[float] | None,
    *,
    what: str = "decode",
) -> Tensor:
    """The Python API's NaN ladder: ``decode(scale_latents(base, temperature), None)``, then every batch image
    that is not finite decoded again by ``decode(latents_b, b)`` from its own ``base`` latents scaled to the rungs of
    ``ladder`` below its temperature (a temperature map is scaled so that its highest value is the rung), with one
    :class:`NonFiniteDecodeWarning` naming the image and the temperature used. ``ladder=None`` returns the first
    decode as it is. Raises :class:`UserError` when an image is not finite even at temperature 0."""
    out = decode(scale_latents(base, temperature), None)
    if ladder is None:
        return out
    bad = nonfinite_rows(out)
    if not bad:
        return out
    out = out.clone()
    for b in bad:
        zb = [z[b : b + 1] if z.shape[0] > 1 else z for z in base]
        if isinstance(temperature, Tensor):
            tb = temperature[b : b + 1] if temperature.shape[0] > 1 else temperature
            top = float(tb.max())
            at: Callable[[float], Temperature] = (lambda r, tb=tb, top=top: tb * (r / top) if top > 0 else tb * 0.0)
        else:
            top = float(temperature)
            at = float
        rungs = ladder_below(top, ladder)
        found = first_finite(lambda r: decode(scale_latents(zb, at(r)), b), rungs)
        tried = ", ".join(_tname(t) for t in [top, *rungs])
        if found is None:
            raise UserError(f"{what}: image {b} of the batch is not finite at temperatures {tried} (the NaN ladder); "
                            "the model or its input is broken (check the input is in [0, 1])")
        out[b] = found[0][0]
        warnings.warn(
            f"{what}: image {b} of the batch was not finite at temperature {_tname(top)}; returned its decode at "
            f"temperature {_tname(found[1])} instead (the NaN ladder {', '.join(map(_tname, ladder))}; "
            "nan_ladder=None returns the raw output)",
            NonFiniteDecodeWarning,
            stacklevel=3,
        )
    return out


def raw_decode_kwargs(model: Any) -> dict[str, Any]:
    """``{"nan_ladder": None}`` when ``model.decode`` applies the NaN ladder itself (it takes ``nan_ladder``), so
    that callers with their own ladder and records (``restore-run``) see the raw decode; else ``{}``."""
    decode = getattr(model, "decode", None)
    if decode is None:
        return {}
    try:
        return {"nan_ladder": None} if "nan_ladder" in inspect.signature(decode).parameters else {}
    except (TypeError, ValueError):
        return {}


__all__ = [
    "NAN_LADDER",
    "NonFiniteDecodeWarning",
    "decode_finite",
    "first_finite",
    "ladder_below",
    "nonfinite_rows",
    "raw_decode_kwargs",
]
