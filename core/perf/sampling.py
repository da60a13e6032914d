"""Several samples of one LR: :class:`SampleBatcher` chooses by measuring how many latent sets to decode
per call."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import Tensor

from ..nonfinite import raw_decode_kwargs
from .device import _GAIN, Timer, _seconds


@dataclass
class SampleBatcher:
    """Chooses how many latent sets of one LR image to decode per call (see the module docstring).

    ``max_chunk`` bounds the batch (memory); ``chunks`` maps (device, LR shape) to the settled chunk size,
    ``probing`` holds an unfinished probe (next chunk, best chunk, its seconds per sample); ``timer`` measures a
    call (``timer(fn, device) -> (seconds, fn())``; a fake clock in tests).
    """

    max_chunk: int = 16
    timer: Timer = _seconds
    chunks: dict[tuple[str, tuple[int, ...]], int] = field(default_factory=dict)
    probing: dict[tuple[str, tuple[int, ...]], tuple[int, int, float]] = field(default_factory=dict)

    def decode(
        self,
        model: Any,
        lr: Tensor,
        latent_sets: Sequence[Sequence[Tensor]],
        cond: Any = None,
    ) -> list[Tensor]:
        """``[model.decode(lr, latents=set, cond=cond) for set in latent_sets]``, computed in chunks; raw (a model
        that applies the NaN ladder itself gets ``nan_ladder=None``: the caller has its own, see restorekit.nonfinite).

        Sets are concatenated along the batch dimension only for an LR batch of 1 (the conditional features
        broadcast); otherwise each set is decoded on its own.
        """
        sets = [list(zs) for zs in latent_sets]
        kw = raw_decode_kwargs(model) if cond is None else {"cond": cond, **raw_decode_kwargs(model)}
        if int(lr.shape[0]) != 1 or len(sets) < 2:
            return [model.decode(lr, latents=zs, **kw) for zs in sets]
        key = (str(lr.device), tuple(int(d) for d in lr.shape))
        settled = self.chunks.get(key)
        outs: list[Tensor] = []
        i = 0
        if settled is not None:
            while i < len(sets):
                outs.extend(self._run(model, lr, sets[i : i + settled], kw))
                i += settled
            return outs
        chunk, best_chunk, best_per = self.probing.get(key, (1, 1, float("inf")))
        while i < len(sets) and key not in self.chunks:
            per = float("inf")
            for _ in range(2):  # two chunks of this size (when there are enough sets); the faster one counts
                part = sets[i : i + chunk]
                if len(part) < chunk:  # a short last chunk says nothing about the full size
                    break
                t, res = self.timer(lambda: self._run(model, lr, part, kw), lr.device)
                outs.extend(res)
                i += len(part)
                per = min(per, t / len(part))
            if per == float("inf"):
                if chunk > len(sets):  # calls this size never fill a larger chunk: the best so far it is
                    self.chunks[key] = best_chunk
                break
            if per < _GAIN * best_per:
                best_chunk, best_per = chunk, per
            elif per * _GAIN > best_per:  # clearly slower per sample: larger chunks will not pay either
                self.chunks[key] = best_chunk
                break
            if chunk * 2 > self.max_chunk:
                self.chunks[key] = best_chunk
                break
            chunk *= 2
        if key not in self.chunks:  # not enough sets to finish probing: the next call goes on from here
            self.probing[key] = (chunk, best_chunk, best_per)
        c = self.chunks.get(key, best_chunk)
        while i < len(sets):
            outs.extend(self._run(model, lr, sets[i : i + c], kw))
            i += c
        return outs

    @staticmethod
    def _run(model: Any, lr: Tensor, part: Sequence[Sequence[Tensor]], kw: dict[str, Any]) -> list[Tensor]:
        if len(part) == 1:
            return [model.decode(lr, latents=list(part[0]), **kw)]
        n = [int(zs[0].shape[0]) for zs in part]
        joined = [torch.cat([zs[k] for zs in part]) for k in range(len(part[0]))]
        out = model.decode(lr, latents=joined, **kw)
        return list(out.split(n))


__all__ = ["SampleBatcher"]
