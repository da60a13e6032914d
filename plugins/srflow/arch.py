"""SRFlowArch: the SRFlow generator (docs/srflow-architecture.md §3–§7) as a plain ``nn.Module``.

It knows nothing of restorekit: wrong inputs raise ValueError, and random latents come from its
:meth:`SRFlowArch.sample_latents` hook, which ``restorekit_srflow.SRFlowNet`` (model.py) fills with restorekit's one
sampler.

Submodule names reproduce the official checkpoint keys: ``RRDB.*`` (the conditional RRDBNet with the SRFlow
long-skip wiring), ``flowUpsamplerNet.layers.<i>.*`` (squeezes, additional steps, conditional steps and splits in
forward order) and the unused ``flowUpsamplerNet.f.0.*``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from restorekit_rrdb import RRDBNet, bicubic_upsample
from torch import Tensor, nn

from .layers import (
    ActNorm,
    CondMap,
    Conv2dActNorm,
    CouplingCond,
    FlowStep,
    Split2d,
    Squeeze,
    UpMap,
    gaussian_logp,
    sum_per_sample,
)

_FEATURE_NAMES = {0.5: "fea_up0", 0.25: "fea_up_minus1"}


def _initialised(layer: nn.Module) -> bool:
    """Whether every ActNorm inside ``layer`` has its parameters (from data or a checkpoint)."""
    return all(m.initialized for m in layer.modules() if isinstance(m, ActNorm))


def _fp16_autocast(x: Tensor) -> bool:
    """Whether an fp16 autocast is active for ``x``'s device. The flow then runs in fp32: its log-determinant and
    NLL are sums over every pixel (far above fp16's 65504), the couplings divide by scales down to ``affine_eps``
    and the split priors exponentiate — all overflow in fp16. bf16 has fp32's range and keeps autocast."""
    kind = x.device.type
    try:
        return torch.is_autocast_enabled(kind) and torch.get_autocast_dtype(kind) == torch.float16
    except (AttributeError, RuntimeError, TypeError):  # pragma: no cover - older torch
        return kind == "cuda" and torch.is_autocast_enabled() and torch.get_autocast_gpu_dtype() == torch.float16
SKIPS = ("none", "bicubic", "rrdb")


def geometry_error(scale: int, L: int, fea_up0: bool, fea_up_minus1: bool) -> str | None:
    """Why ``L`` levels cannot be conditioned at this scale, or None.

    Level ℓ works at HR/2^ℓ = LR·scale/2^ℓ and reads the conditional feature of that resolution (§3.3): the RRDB
    provides LR·2^m (m = 0 … log2 scale), ``fea_up0`` LR/2 and ``fea_up_minus1`` LR/4.
    """
    if L < 1:
        return f"L must be at least 1, got {L}"
    for level in range(1, L + 1):
        ratio = scale / 2**level
        if ratio >= 1 or (ratio == 0.5 and fea_up0) or (ratio == 0.25 and fea_up_minus1):
            continue
        need = _FEATURE_NAMES.get(ratio)
        if need is not None:
            return f"level {level} works at LR x {ratio:g} and needs {need} = true"
        deepest = int(math.log2(scale)) + (2 if fea_up0 and fea_up_minus1 else 1 if fea_up0 else 0)
        return f"L = {L} is too deep for scale {scale}: level {level} would work at LR x {ratio:g} (at most L = {deepest})"
    return None


def latent_batch(flow: str, order: str, latents: Sequence[Tensor], shapes: Sequence[Sequence[int]], lr: Tensor) -> int:
    """The batch of ``latents`` given to ``flow``'s decode, checked against the per-level ``shapes`` (``order``: which
    level comes first) and the LR's batch (1, or the same); a ValueError naming the wrong latent otherwise."""
    if len(latents) != len(shapes):
        raise ValueError(f"{flow}: decode needs {len(shapes)} latents ({order}), got {len(latents)}")
    batch = int(latents[-1].shape[0])
    for i, (lat, shape) in enumerate(zip(latents, shapes)):
        if tuple(lat.shape[1:]) != tuple(shape) or lat.shape[0] != batch:
            raise ValueError(
                f"{flow}: latent {i} has shape {tuple(lat.shape)}, expected ({batch}, {', '.join(map(str, shape))})"
            )
    if lr.shape[0] not in (1, batch):
        raise ValueError(f"{flow}: LR batch {lr.shape[0]} does not match latent batch {batch}")
    return batch


class Encoded(NamedTuple):
    """What :meth:`SRFlowArch.encode` returns (the fields of ``restorekit.EncodeResult``)."""

    latents: list[Tensor]
    nll: Tensor
    logdet: Tensor


@dataclass
class LevelCond:
    """The conditional maps of one LR batch, one per flow level (``levels[0]`` = level 1), from
    :meth:`SRFlowNet.conditional_features`.

    A level's map is a tensor, or — with ``SRFlowArch.factor_cond``, where its stacked-block part is a ×f
    nearest-neighbour upsampling — the same map kept factored (:class:`~restorekit_srflow.layers.UpMap`), which
    the couplings convolve faster; ``maps`` gives every level as a full tensor.

    Pass it as ``cond=`` to :meth:`SRFlowNet.decode` / :meth:`SRFlowNet.encode` to decode several latent sets for one
    LR batch. With ``cache=True`` the couplings' latent-independent terms (the whole ``fFeatures`` branch and the
    conditional half of ``fAffine``'s first convolution — most of the flow's arithmetic) are also kept here the
    first time a no-grad call computes them, and reused by later no-grad calls while the weights are unchanged.
    The cache holds about ``K·(2C + hidden)`` floats per pixel of each level: drop the object to free it.
    """

    levels: list[CondMap]
    cache: bool = True
    terms: dict[int, tuple[tuple[Any, ...], CouplingCond]] = field(default_factory=dict, repr=False)
    mean: Tensor | None = field(default=None, repr=False)
    """``skip = "rrdb"`` networks: the RRDB's SR image of this LR batch (the image the flow's residual is taken
    against)."""

    @property
    def maps(self) -> list[Tensor]:
        """Every level's map as a full tensor (a factored level's is built on each access)."""
        return [u.full() if isinstance(u, UpMap) else u for u in self.levels]

    @property
    def batch(self) -> int:
        u = self.levels[0]
        return int((u.dense if isinstance(u, UpMap) else u).shape[0])

    def map_for(self, level: int) -> CondMap:
        """What the couplings of ``level`` (1-based) read."""
        return self.levels[level - 1]

    def to_float(self) -> None:
        """Cast the maps (and ``mean``) to float32 in place, dropping cached terms of another dtype."""
        def cast(u: CondMap) -> CondMap:
            return UpMap(u.dense.float(), u.low.float(), u.factor) if isinstance(u, UpMap) else u.float()

        if any((u.dense if isinstance(u, UpMap) else u).dtype != torch.float32 for u in self.levels):
            self.levels = [cast(u) for u in self.levels]
            self.terms.clear()
        if self.mean is not None and self.mean.dtype != torch.float32:
            self.mean = self.mean.float()


class FlowUpsamplerNet(nn.Module):
    """The flow of §4: per level a squeeze, ``additional`` non-conditional steps, ``K`` conditional steps and,
    for the levels in ``split_levels``, a split. ``layers`` is the official flat list; ``level_of[i]`` gives the
    (1-based) level of ``layers[i]``."""

    def __init__(
        self, *, out_nc: int, L: int, K: int, additional: int, cond_channels: int, hidden: int,
        affine_eps: float, consume_ratio: float, logs_eps: float, split_levels: Sequence[int],
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList()
        self.level_of: list[int] = []
        self.split_channels: list[int] = []
        channels = out_nc
        for level in range(1, L + 1):
            channels *= 4
            self._append(Squeeze(), level)
            for _ in range(additional):
                self._append(FlowStep(channels), level)
            for _ in range(K):
                self._append(FlowStep(channels, cond_channels, hidden, affine_eps), level)
            if level in split_levels:
                split = Split2d(channels, consume_ratio, logs_eps)
                self._append(split, level)
                self.split_channels.append(split.consume)
                channels = split.keep
        self.top_channels = channels
        # The official network builds this convolution (96 outputs whatever the geometry) and never runs it;
        # it is kept so that official checkpoints load strictly and round-trip.
        self.f = nn.Sequential(nn.Conv2d(cond_channels, 96, 3, padding=1))

    def _append(self, layer: nn.Module, level: int) -> None:
        self.layers.append(layer)
        self.level_of.append(level)


class SRFlowArch(nn.Module):
    """SRFlow: a conditional normalising flow between HR images and Gaussian latents, conditioned on RRDB features
    of the LR image.

    * ``encode(hr, lr)`` → :class:`Encoded` (latents: split latents first, top z last; NLL in bits per pixel,
      official definition; logdet);
    * ``decode(lr, latents | temperature)`` → SR image (``return_logdet=True`` also returns the decode logdet);
    * ``model(lr)`` → the temperature-0 SR image (``SRFlowNet`` pads any LR size and crops back);
    * ``conditional_features(lr)`` → reusable conditional maps (``cond=`` of encode/decode);
    * ``rrdb_forward(lr)`` → the conditional RRDB's own SR image (stage-1 pre-training).

    ``skip`` (restorekit's bundled models; off for the published ones): the flow models a residual, ``HR − m(LR)``
    — encode subtracts ``m``, decode adds it back; an additive shift, so the log-determinant is unchanged — with
    ``m`` the bicubic upsampling (``"bicubic"``) or the conditional RRDB's own SR image (``"rrdb"``). Either way the
    RRDB gets a bicubic skip too (``RRDBNet(bicubic_skip=True)``).

    LR heights and widths must be multiples of ``size_multiple`` for encode/decode. Attributes for restorekit:
    ``scale``, ``size_multiple``, ``arch_params`` (the keyword arguments, JSON-able), ``gradient_checkpointing``.
    """

    def __init__(
        self,
        *,
        scale: int = 4,
        in_nc: int = 3,
        out_nc: int = 3,
        nf: int = 64,
        nb: int = 23,
        gc: int = 32,
        K: int = 16,
        L: int = 3,
        stack_blocks: Sequence[int] = (1, 8, 15, 22),
        hidden_channels: int = 64,
        additional_flow_no_affine: int = 2,
        affine_eps: float = 1e-4,
        quant: int = 32,
        fea_up0: bool = True,
        fea_up_minus1: bool = False,
        split_consume_ratio: float = 0.5,
        split_logs_eps: float = 0.0,
        split_correct_levels: bool = False,
        skip: str = "none",
    ) -> None:
        super().__init__()
        if scale not in (2, 4, 8, 16):
            raise ValueError(f"SRFlowNet: scale must be 2, 4, 8 or 16, got {scale}")
        blocks = [int(b) for b in stack_blocks]
        if any(not 0 <= b < nb for b in blocks):
            raise ValueError(f"SRFlowNet: stack_blocks {blocks} must lie in 0..{nb - 1}")
        err = geometry_error(scale, L, fea_up0, fea_up_minus1)
        if err:
            raise ValueError(f"SRFlowNet: {err}")
        self.scale, self.L, self.K = scale, L, K
        self.quant = quant
        self.stack_blocks = blocks
        self.fea_up0, self.fea_up_minus1 = fea_up0, fea_up_minus1
        self.arch_params: dict[str, Any] = dict(
            scale=scale, in_nc=in_nc, out_nc=out_nc, nf=nf, nb=nb, gc=gc, K=K, L=L, stack_blocks=list(blocks),
            hidden_channels=hidden_channels, additional_flow_no_affine=additional_flow_no_affine,
            affine_eps=float(affine_eps), quant=quant, fea_up0=fea_up0, fea_up_minus1=fea_up_minus1,
            split_consume_ratio=float(split_consume_ratio), split_logs_eps=float(split_logs_eps),
            split_correct_levels=split_correct_levels,
        )
        if skip not in SKIPS:
            raise ValueError(f"SRFlowNet: skip must be one of {', '.join(SKIPS)}, got {skip!r}")
        self.skip = skip
        self.arch_params["skip"] = skip
        # level l (1-based) works at LR * level_ratio[l-1] and reads the feature of that resolution
        self.level_ratio = [scale / 2**level for level in range(1, L + 1)]
        # HR = scale*LR must be divisible by 2^L, and the LR/2 (LR/4) features must have exactly the deepest
        # levels' sizes (floor(h/2) = h/2): both reduce to LR sizes that are multiples of 2^L/scale (or 1).
        self.size_multiple = max(1, 2**L // scale)
        self.cond_channels = nf * (1 + len(blocks))
        last_split = L - 1 if split_correct_levels else L - 2
        self.RRDB = RRDBNet(
            in_nc=in_nc, out_nc=out_nc, nf=nf, nb=nb, gc=gc, scale=scale, variant="srflow", bicubic_skip=skip != "none"
        )
        self.flowUpsamplerNet = FlowUpsamplerNet(
            out_nc=out_nc, L=L, K=K, additional=additional_flow_no_affine, cond_channels=self.cond_channels,
            hidden=hidden_channels, affine_eps=affine_eps, consume_ratio=split_consume_ratio,
            logs_eps=split_logs_eps, split_levels=list(range(1, last_split + 1)),
        )
        self._gradient_checkpointing = False

    factor_cond: bool = False
    """Fast path, off as built (set by restorekit's ``lean_training`` and ``fast_inference``): the couplings of the
    levels above LR convolve the upsampled stacked blocks of their conditional map at LR resolution
    (:class:`~restorekit_srflow.layers.UpMap`; ×2 at 2·LR, ×4 at the 4·LR level of 8x models): the same function —
    equal up to float rounding — with 4·min(f, 3)² instead of 9·f² multiply-adds per channel pair and LR pixel for those
    channels (256 of the 320 in the official models)."""

    # ------------------------------------------------------------------------------------------------
    # switches

    @property
    def gradient_checkpointing(self) -> bool:
        """Recompute RRDB blocks and flow steps in the backward pass (training with gradients only), and with
        ``lean_training`` the coupling networks' inner hidden maps (:attr:`Conv2dActNorm.recompute_hidden`)."""
        return self._gradient_checkpointing

    @gradient_checkpointing.setter
    def gradient_checkpointing(self, value: bool) -> None:
        self._gradient_checkpointing = bool(value)
        self.RRDB.gradient_checkpointing = bool(value)
        for m in self.flowUpsamplerNet.modules():  # memory first: the coupling tails' hidden maps recomputed too
            if isinstance(m, Conv2dActNorm):
                m.recompute_hidden = bool(value)

    def extra_repr(self) -> str:
        return (
            f"scale={self.scale}, L={self.L}, K={self.K}, stack_blocks={self.stack_blocks}, "
            f"cond_channels={self.cond_channels}, size_multiple={self.size_multiple}"
        )

    # ------------------------------------------------------------------------------------------------
    # conditional features

    def conditional_features(self, lr: Tensor, cache: bool = True) -> LevelCond:
        """The conditional map of every flow level for ``lr`` (§3): ``[feature, stacked blocks]`` per level.

        Reusable for every encode/decode of this LR batch (``cond=``); ``cache`` lets those calls also keep
        the couplings' latent-independent terms in it (see :class:`LevelCond`).
        """
        # only the upsampling stages some level reads (not fea_up4 at 4x, §3.3), and the SR image only for skip=rrdb
        up_to = int(max(1.0, *self.level_ratio))
        rrdb = self.RRDB(lr, return_features=True, block_ids=self.stack_blocks, up_to=up_to, image=self.skip == "rrdb")
        last = rrdb.last_lr_fea
        feats: dict[float, Tensor] = {1.0: last}
        for factor, fea in rrdb.fea_up.items():
            feats[float(factor)] = fea
        needed = set(self.level_ratio)
        for ratio in (0.5, 0.25):
            if ratio in needed:
                # bilinear, half-pixel centres, no antialiasing (= 2x2 mean for LR/2)
                feats[ratio] = F.interpolate(last, scale_factor=ratio, mode="bilinear", align_corners=False)
        stacked = torch.cat([rrdb.blocks[b] for b in self.stack_blocks], 1) if self.stack_blocks else None
        levels: list[CondMap] = []
        for ratio in self.level_ratio:
            fea = feats[ratio]
            if stacked is not None:
                # nearest: source pixel floor(i·h_S/h_out) — repeated squares above LR, the top-left pixel at LR/2
                size = (fea.shape[-2], fea.shape[-1])  # no int(): torch.export keeps these sizes symbolic
                if self.factor_cond:
                    f = int(size[0]) // int(stacked.shape[-2])
                    if f >= 2 and size == (f * int(stacked.shape[-2]), f * int(stacked.shape[-1])):
                        levels.append(UpMap(fea, F.pad(stacked, (1, 1, 1, 1)), f))
                        continue
                same = size == tuple(stacked.shape[-2:])
                fea = torch.cat([fea, stacked if same else F.interpolate(stacked, size=size, mode="nearest")], 1)
            levels.append(fea)
        return LevelCond(levels, cache=cache, mean=rrdb.out if self.skip == "rrdb" else None)

    def _skip_image(self, lr: Tensor, cond: LevelCond) -> Tensor:
        """The image the flow's residual is taken against (``skip``): bicubic(LR) or the RRDB's SR image."""
        if self.skip == "bicubic":
            return bicubic_upsample(lr, self.scale)
        if cond.mean is None:
            return self.rrdb_forward(lr)
        return cond.mean

    def rrdb_forward(self, lr: Tensor) -> Tensor:
        """The conditional RRDB's own SR image (its ``conv_last`` output; for pre-training it with a pixel loss)."""
        out = self.RRDB(lr)
        assert isinstance(out, Tensor)
        return out

    def _coupling_terms(self, index: int, step: FlowStep, cond: LevelCond, level: int) -> CouplingCond:
        affine = step.affine
        assert affine is not None
        u = cond.map_for(level)
        if not cond.cache or torch.is_grad_enabled():
            return affine.cond_terms(u)
        hit = cond.terms.get(index)
        if hit is not None and hit[0] == affine.cond_key():
            return hit[1]
        terms = affine.cond_terms(u)
        cond.terms[index] = (affine.cond_key(), terms)
        return terms

    # ------------------------------------------------------------------------------------------------
    # sizes

    def valid_lr_size(self, h: int, w: int) -> bool:
        """Whether an LR image of ``h × w`` can be encoded/decoded (both multiples of ``size_multiple``)."""
        m = self.size_multiple
        return h > 0 and w > 0 and h % m == 0 and w % m == 0

    def _check_sizes(self, lr: Tensor, hr: Tensor | None = None) -> None:
        if lr.dim() != 4:
            raise ValueError(f"srflow: LR must be a (B, C, h, w) batch, got shape {tuple(lr.shape)}")
        h, w = int(lr.shape[-2]), int(lr.shape[-1])
        m = self.size_multiple
        if not self.valid_lr_size(h, w):
            def near(v: int) -> str:
                lo = (v // m) * m
                return f"{lo} or {lo + m}" if lo else f"{m}"

            raise ValueError(
                f"srflow: LR size {h}x{w} is not allowed by L={self.L} at x{self.scale}: height and width must be "
                f"multiples of {m} (nearest: {near(h)} x {near(w)}); model(lr) pads any size"
            )
        if hr is not None and tuple(hr.shape[-2:]) != (h * self.scale, w * self.scale):
            raise ValueError(
                f"srflow: HR size {hr.shape[-2]}x{hr.shape[-1]} must be {self.scale}x the LR size {h}x{w} "
                f"({h * self.scale}x{w * self.scale})"
            )

    def latent_shapes(self, lr_shape: Sequence[int]) -> list[tuple[int, int, int]]:
        """Per-sample latent shapes ``(C, H, W)`` (no batch dimension) for an LR of shape ``(..., h, w)``, in
        encode order: split latents from the shallowest level, top z last."""
        hh, ww = int(lr_shape[-2]) * self.scale, int(lr_shape[-1]) * self.scale
        flow = self.flowUpsamplerNet
        shapes = [
            (layer.consume, hh >> level, ww >> level)
            for layer, level in zip(flow.layers, flow.level_of)
            if isinstance(layer, Split2d)
        ]
        shapes.append((flow.top_channels, hh >> self.L, ww >> self.L))
        return shapes

    # ------------------------------------------------------------------------------------------------
    # encode / decode

    def _step(self, index: int, layer: FlowStep, x: Tensor, logdet: Tensor, reverse: bool,
              cond: LevelCond, level: int) -> tuple[Tensor, Tensor]:
        # a step whose ActNorms still initialise from data runs unchecked once: the recomputation in backward
        # would otherwise see initialised layers and take other paths (e.g. the folded ActNorm)
        if self._gradient_checkpointing and self.training and torch.is_grad_enabled() and _initialised(layer):
            from torch.utils.checkpoint import checkpoint

            def run(x: Tensor, logdet: Tensor, *parts: Any) -> tuple[Tensor, Tensor]:
                # the coupling's conditional branch is recomputed in backward too
                u: CondMap = UpMap(*parts) if len(parts) == 3 else parts[0]
                terms = layer.affine.cond_terms(u) if layer.affine is not None else None
                return layer(x, logdet, reverse, None, terms)  # type: ignore[return-value]

            u = cond.map_for(level)
            parts = tuple(u) if isinstance(u, UpMap) else (u,)
            return checkpoint(run, x, logdet, *parts, use_reentrant=False)  # type: ignore[no-any-return]
        terms = self._coupling_terms(index, layer, cond, level) if layer.conditional else None
        return layer(x, logdet, reverse, None, terms)  # type: ignore[return-value]

    def _fp32_cond(self, lr: Tensor, cond: LevelCond | None, batch: int) -> LevelCond:
        """The conditional features (the RRDB runs under the caller's fp16 autocast), cast to fp32 in place so
        that a reused ``cond`` keeps its fp32 maps and cached terms."""
        cond = self._cond_for(lr, cond, batch)
        cond.to_float()
        return cond

    def _cond_for(self, lr: Tensor, cond: LevelCond | None, batch: int) -> LevelCond:
        cond = cond if cond is not None else self.conditional_features(lr, cache=False)
        if cond.batch not in (1, batch):
            raise ValueError(f"srflow: the conditional features have batch {cond.batch}, the images {batch}")
        return cond

    def encode(
        self,
        hr: Tensor,
        lr: Tensor,
        add_noise: bool = False,
        noise: Tensor | None = None,
        *,
        cond: LevelCond | None = None,
    ) -> Encoded:
        """HR → latents given LR (§6). Returns ``Encoded(latents, nll, logdet)``.

        ``add_noise``: dequantise with ``hr + (u − 0.5)/quant`` (u uniform in [0, 1) per sub-pixel, or ``noise``
        if given — ``noise = 0.5`` leaves only the log-determinant term) and add ``−H·W·ln quant`` to logdet.
        Off by default, as in the released training loop. ``nll = −(logdet + log N(z; 0, I)) / (ln 2 · H · W)``
        (bits per pixel, official definition); ``logdet`` includes the split priors, not the top-z term.
        An LR batch of 1 (or ``cond`` of batch 1) conditions every HR image of the batch.
        """
        self._check_sizes(lr, hr)
        batch = int(hr.shape[0])
        if lr.shape[0] not in (1, batch):
            raise ValueError(f"srflow: LR batch {lr.shape[0]} does not match HR batch {batch}")
        if _fp16_autocast(lr):  # the flow in fp32 (see _fp16_autocast), the RRDB features in fp16
            cond = self._fp32_cond(lr, cond, batch)
            with torch.autocast(lr.device.type, enabled=False):
                return self.encode(hr.float(), lr.float(), add_noise, noise, cond=cond)
        cond = self._cond_for(lr, cond, batch)
        pixels = int(hr.shape[-2]) * int(hr.shape[-1])
        logdet = torch.zeros(batch, device=hr.device, dtype=hr.dtype)
        x = hr - self._skip_image(lr, cond) if self.skip != "none" else hr
        if add_noise:
            u = torch.rand_like(hr) if noise is None else noise.to(hr)
            x = x + (u - 0.5) / self.quant
            logdet = logdet - pixels * math.log(self.quant)
        latents: list[Tensor] = []
        flow = self.flowUpsamplerNet
        for index, (layer, level) in enumerate(zip(flow.layers, flow.level_of)):
            if isinstance(layer, FlowStep):
                x, logdet = self._step(index, layer, x, logdet, False, cond, level)
            elif isinstance(layer, Split2d):
                x, logdet, eps = layer(x, logdet)
                assert eps is not None and logdet is not None
                latents.append(eps)
            else:
                x, logdet = layer(x, logdet)
            assert logdet is not None
        latents.append(x)
        objective = logdet + sum_per_sample(gaussian_logp(x))
        nll = -objective / (math.log(2.0) * pixels)
        return Encoded(latents, nll, logdet)

    def sample_latents(self, lr: Tensor, temperature: float | Tensor, generator: torch.Generator | None) -> list[Tensor]:
        """The latents :meth:`decode` uses when none are given, in encode order. The bare architecture knows only
        ``temperature = 0`` (zeros: the mean image); ``restorekit_srflow.SRFlowNet`` draws N(0, T²) latents with
        restorekit's sampler (top z first, then the splits deepest first, as the official sampler)."""
        if isinstance(temperature, Tensor) or float(temperature) != 0.0:
            raise ValueError("srflow: the bare SRFlowArch draws no random latents; pass latents, or use SRFlowNet")
        batch = int(lr.shape[0])
        return [torch.zeros((batch, *shape), device=lr.device, dtype=lr.dtype) for shape in self.latent_shapes(lr.shape)]

    def decode(
        self,
        lr: Tensor,
        latents: Sequence[Tensor] | None = None,
        temperature: float | Tensor = 0.0,
        generator: torch.Generator | None = None,
        *,
        cond: LevelCond | None = None,
        return_logdet: bool = False,
    ) -> Any:
        """Latents → SR image given LR (§7). Returns the image, or ``(image, logdet)`` with ``return_logdet``.

        ``latents`` (the order of :meth:`encode`, top z last) are used exactly as given — never scaled by the
        temperature; their batch may be a multiple-sample batch for an LR batch of 1. Without them the latents come
        from :meth:`sample_latents` (N(0, T²) drawn with ``generator``; ``T = 0`` gives zeros without drawing).
        ``temperature`` may be a map (B|1, 1, H, W) or (H, W) at HR size or any size: it is area-resized to each
        latent level. ``cond`` reuses
        :meth:`conditional_features` of this ``lr``. The logdet starts at 0 and subtracts every layer's term (it is
        minus the encode logdet for encoded latents). Not clamped.
        """
        self._check_sizes(lr)
        if _fp16_autocast(lr):  # the flow in fp32 (see _fp16_autocast), the RRDB features in fp16
            b = int(latents[-1].shape[0]) if latents is not None and len(latents) else int(lr.shape[0])
            cond = self._fp32_cond(lr, cond, b)
            with torch.autocast(lr.device.type, enabled=False):
                return self.decode(lr.float(), latents, temperature, generator, cond=cond, return_logdet=return_logdet)
        latents = list(latents) if latents is not None else self.sample_latents(lr, temperature, generator)
        batch = latent_batch("srflow", "top z last", latents, self.latent_shapes(lr.shape), lr)
        z = latents[-1].to(lr)
        eps_list = [e.to(lr) for e in latents[:-1]]
        cond = self._cond_for(lr, cond, batch)
        logdet = torch.zeros(batch, device=lr.device, dtype=lr.dtype)
        x = z
        split = len(eps_list)
        flow = self.flowUpsamplerNet
        for index in range(len(flow.layers) - 1, -1, -1):
            layer, level = flow.layers[index], flow.level_of[index]
            if isinstance(layer, FlowStep):
                x, logdet = self._step(index, layer, x, logdet, True, cond, level)
            elif isinstance(layer, Split2d):
                split -= 1
                x, logdet, _ = layer(x, logdet, reverse=True, eps=eps_list[split])
            else:
                x, logdet = layer(x, logdet, reverse=True)
            assert logdet is not None
        if self.skip != "none":
            x = x + self._skip_image(lr, cond)
        return (x, logdet) if return_logdet else x

    def forward(
        self, lr: Tensor, temperature: float | Tensor = 0.0, generator: torch.Generator | None = None
    ) -> Tensor:
        """:meth:`decode` at ``temperature`` (LR sizes multiples of ``size_multiple``; ``SRFlowNet.forward`` pads
        any size). Not clamped."""
        return self.decode(lr, temperature=temperature, generator=generator)  # type: ignore[no-any-return]
