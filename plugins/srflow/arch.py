"""SRFlowNet: the SRFlow generator (docs/srflow-architecture.md §3–§7), a plain ``nn.Module``.

Submodule names reproduce the official checkpoint keys: ``RRDB.*`` (the conditional RRDBNet, SRFlow wiring),
``flowUpsamplerNet.layers.<i>.*`` and the unused ``flowUpsamplerNet.f.0.*``.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from restorekit.components import EncodeResult
from restorekit.errors import UserError
from restorekit_rrdb import RRDBNet
from torch import Tensor, nn

from .layers import FlowStep, Split2d, Squeeze, gaussian_logp, sum_per_sample


def geometry_error(scale: int, L: int, fea_up0: bool, fea_up_minus1: bool) -> str | None:
    """Why ``L`` levels cannot be conditioned at this scale (each level needs a feature at LR·scale/2^level)."""
    for level in range(1, L + 1):
        r = scale / 2**level
        if r >= 1 or (r == 0.5 and fea_up0) or (r == 0.25 and fea_up_minus1):
            continue
        need = {0.5: "fea_up0", 0.25: "fea_up_minus1"}.get(r)
        if need:
            return f"level {level} works at LR x {r:g} and needs {need} = true"
        return f"L = {L} is too deep for scale {scale}: level {level} would work at LR x {r:g} (at most L = {int(math.log2(scale)) + 2})"
    return None


class LevelCond(NamedTuple):
    """Conditional maps of one LR batch, one per flow level (index 0 = level 1), plus the RRDB's own SR image."""

    maps: list[Tensor]


class FlowUpsamplerNet(nn.Module):
    """The flow: per level squeeze, additional steps, conditional steps, optional split."""

    def __init__(
        self, *, out_nc: int, L: int, K: int, additional: int, cond_channels: int, hidden: int,
        affine_eps: float, consume_ratio: float, logs_eps: float, split_levels: Sequence[int],
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList()
        self.level_of: list[int] = []
        c = out_nc
        self.latent_channels: list[int] = []
        for level in range(1, L + 1):
            c *= 4
            self._add(Squeeze(), level)
            for _ in range(additional):
                self._add(FlowStep(c), level)
            for _ in range(K):
                self._add(FlowStep(c, cond_channels, hidden, affine_eps), level)
            if level in split_levels:
                split = Split2d(c, consume_ratio, logs_eps)
                self._add(split, level)
                self.latent_channels.append(split.consume)
                c = split.keep
        self.top_channels = c
        # built by the official network and never run; kept so official checkpoints load and round-trip
        self.f = nn.Sequential(nn.Conv2d(cond_channels, 96, 3, padding=1))

    def _add(self, layer: nn.Module, level: int) -> None:
        self.layers.append(layer)
        self.level_of.append(level)


class SRFlowNet(nn.Module):
    """SRFlow: a conditional normalising flow between HR images and latents, conditioned on RRDB features of LR.

    ``encode(hr, lr)`` → latents (split latents first, top z last), NLL in bits per pixel, logdet;
    ``decode(lr, latents | temperature)`` → SR image; ``model(lr)`` → the temperature-0 SR image of any size.
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
    ) -> None:
        super().__init__()
        if scale not in (2, 4, 8, 16):
            raise ValueError(f"SRFlowNet: scale must be 2, 4, 8 or 16, got {scale}")
        if any(not 0 <= b < nb for b in stack_blocks):
            raise ValueError(f"SRFlowNet: stack_blocks {list(stack_blocks)} must lie in 0..{nb - 1}")
        self.scale, self.L, self.K = scale, L, K
        self.quant = quant
        self.stack_blocks = list(stack_blocks)
        self.fea_up0, self.fea_up_minus1 = fea_up0, fea_up_minus1
        self.arch_params: dict[str, Any] = dict(
            scale=scale, in_nc=in_nc, out_nc=out_nc, nf=nf, nb=nb, gc=gc, K=K, L=L, stack_blocks=list(stack_blocks),
            hidden_channels=hidden_channels, additional_flow_no_affine=additional_flow_no_affine,
            affine_eps=affine_eps, quant=quant, fea_up0=fea_up0, fea_up_minus1=fea_up_minus1,
            split_consume_ratio=split_consume_ratio, split_logs_eps=split_logs_eps,
            split_correct_levels=split_correct_levels,
        )
        err = geometry_error(scale, L, fea_up0, fea_up_minus1)
        if err:
            raise ValueError(f"SRFlowNet: {err}")
        # each level l reads the feature at resolution LR * scale / 2^l
        self.level_ratio = [scale / 2**level for level in range(1, L + 1)]
        self.size_multiple = max(1, 2**L // scale)
        self.cond_channels = nf * (1 + len(self.stack_blocks))
        last_split = L - 1 if split_correct_levels else L - 2
        self.RRDB = RRDBNet(in_nc=in_nc, out_nc=out_nc, nf=nf, nb=nb, gc=gc, scale=scale, variant="srflow")
        self.flowUpsamplerNet = FlowUpsamplerNet(
            out_nc=out_nc, L=L, K=K, additional=additional_flow_no_affine, cond_channels=self.cond_channels,
            hidden=hidden_channels, affine_eps=affine_eps, consume_ratio=split_consume_ratio,
            logs_eps=split_logs_eps, split_levels=list(range(1, last_split + 1)),
        )
        self.gradient_checkpointing = False

    # ------------------------------------------------------------------------------------------------
    # conditional features

    def conditional_features(self, lr: Tensor) -> LevelCond:
        """The conditional map of every flow level for ``lr`` (reusable across samples of one LR batch)."""
        rrdb = self.RRDB(lr, return_features=True, block_ids=self.stack_blocks)
        feats: dict[float, Tensor] = {1.0: rrdb.last_lr_fea}
        for factor, fea in rrdb.fea_up.items():
            feats[float(factor)] = fea
        F0 = rrdb.last_lr_fea
        if self.fea_up0:
            feats[0.5] = F.interpolate(F0, scale_factor=0.5, mode="bilinear", align_corners=False)
        if self.fea_up_minus1:
            feats[0.25] = F.interpolate(F0, scale_factor=0.25, mode="bilinear", align_corners=False)
        stacked = torch.cat([rrdb.blocks[b] for b in self.stack_blocks], 1) if self.stack_blocks else None
        maps = []
        for r in self.level_ratio:
            fea = feats[float(r)]
            if stacked is not None:
                fea = torch.cat([fea, F.interpolate(stacked, size=fea.shape[-2:], mode="nearest")], 1)
            maps.append(fea)
        return LevelCond(maps)

    def rrdb_forward(self, lr: Tensor) -> Tensor:
        """The conditional RRDB's own SR image (for pre-training it with a pixel loss)."""
        return self.RRDB(lr)  # type: ignore[return-value]

    # ------------------------------------------------------------------------------------------------
    # sizes

    def _check_sizes(self, lr: Tensor, hr: Tensor | None = None) -> None:
        h, w = lr.shape[-2:]
        m = self.size_multiple
        if h % m or w % m:
            def near(v: int) -> str:
                lo = (v // m) * m
                return f"{lo} or {lo + m}" if lo else f"{m}"

            raise UserError(
                f"srflow: LR size {h}x{w} is not allowed by L={self.L} at x{self.scale}: height and width must be "
                f"multiples of {m} (nearest: {near(h)} x {near(w)})"
            )
        if hr is not None and tuple(hr.shape[-2:]) != (h * self.scale, w * self.scale):
            raise UserError(
                f"srflow: HR size {tuple(hr.shape[-2:])} must be {self.scale}x the LR size {(h, w)}"
            )

    def latent_shapes(self, lr_shape: Sequence[int]) -> list[tuple[int, int, int]]:
        """Per-sample latent shapes (C, H, W) for an LR of shape (..., h, w), in encode order (top z last)."""
        h, w = int(lr_shape[-2]) * self.scale, int(lr_shape[-1]) * self.scale
        shapes = []
        for level, layer in zip(self.flowUpsamplerNet.level_of, self.flowUpsamplerNet.layers):
            if isinstance(layer, Split2d):
                shapes.append((layer.consume, h >> level, w >> level))
        shapes.append((self.flowUpsamplerNet.top_channels, h >> self.L, w >> self.L))
        return shapes

    # ------------------------------------------------------------------------------------------------
    # encode / decode

    def _run_layer(self, layer: nn.Module, *args: Any, **kwargs: Any) -> Any:
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled() and isinstance(layer, FlowStep):
            from torch.utils.checkpoint import checkpoint

            return checkpoint(layer, *args, use_reentrant=False, **kwargs)
        return layer(*args, **kwargs)

    def encode(
        self, hr: Tensor, lr: Tensor, add_noise: bool = False, noise: Tensor | None = None,
        cond: LevelCond | None = None,
    ) -> EncodeResult:
        """HR → latents given LR. ``add_noise``: dequantise with ``hr + (u - 0.5)/quant`` (``noise`` = u, or
        uniform) and add ``-H·W·ln quant`` to logdet. NLL in bits per pixel (official definition)."""
        self._check_sizes(lr, hr)
        cond = cond if cond is not None else self.conditional_features(lr)
        b = hr.shape[0]
        hw = hr.shape[-2] * hr.shape[-1]
        logdet = torch.zeros(b, device=hr.device, dtype=hr.dtype)
        x = hr
        if add_noise:
            u = noise if noise is not None else torch.rand_like(hr)
            x = x + (u - 0.5) / self.quant
            logdet = logdet - hw * math.log(self.quant)
        latents: list[Tensor] = []
        for level, layer in zip(self.flowUpsamplerNet.level_of, self.flowUpsamplerNet.layers):
            if isinstance(layer, Split2d):
                x, logdet, eps = layer(x, logdet)
                latents.append(eps)
            elif isinstance(layer, FlowStep):
                x, logdet = self._run_layer(layer, x, logdet, cond=cond.maps[level - 1])
            else:
                x, logdet = layer(x, logdet)
        latents.append(x)
        objective = logdet + sum_per_sample(gaussian_logp(x))
        nll = -objective / (math.log(2.0) * hw)
        return EncodeResult(latents, nll, logdet)

    def _draw(
        self, shape: tuple[int, ...], temperature: float | Tensor, generator: torch.Generator | None,
        ref: Tensor, batch: int,
    ) -> Tensor:
        full = (batch, *shape)
        if isinstance(temperature, Tensor):
            t = temperature.to(device=ref.device, dtype=ref.dtype)
            if t.dim() == 2:
                t = t[None, None]
            t = F.interpolate(t, size=shape[-2:], mode="area") if tuple(t.shape[-2:]) != tuple(shape[-2:]) else t
            z = torch.randn(full, generator=generator, device=ref.device, dtype=ref.dtype)
            return z * t
        if temperature == 0:
            return torch.zeros(full, device=ref.device, dtype=ref.dtype)
        return torch.randn(full, generator=generator, device=ref.device, dtype=ref.dtype) * float(temperature)

    def decode(
        self,
        lr: Tensor,
        latents: Sequence[Tensor] | None = None,
        temperature: float | Tensor = 0.0,
        generator: torch.Generator | None = None,
        *,
        cond: LevelCond | None = None,
        return_logdet: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Latents (used as given) or N(0, T²) samples → SR image. ``temperature`` may be a map (B|1,1,H,W),
        resized to each latent level. The top z is drawn first, then the splits' eps, deepest first."""
        self._check_sizes(lr)
        cond = cond if cond is not None else self.conditional_features(lr)
        b = lr.shape[0]
        shapes = self.latent_shapes(lr.shape)
        if latents is None:
            z = self._draw(shapes[-1], temperature, generator, lr, b)
            eps_list: list[Tensor | None] = [None] * (len(shapes) - 1)
        else:
            if len(latents) != len(shapes):
                raise UserError(f"srflow: decode needs {len(shapes)} latents, got {len(latents)}")
            for i, (lat, shp) in enumerate(zip(latents, shapes)):
                if tuple(lat.shape[1:]) != shp:
                    raise UserError(f"srflow: latent {i} has shape {tuple(lat.shape[1:])}, expected {shp}")
            z = latents[-1]
            eps_list = list(latents[:-1])
        logdet = torch.zeros(b, device=lr.device, dtype=lr.dtype)
        x = z
        split_idx = len(eps_list)
        layers = self.flowUpsamplerNet.layers
        levels = self.flowUpsamplerNet.level_of
        for i in range(len(layers) - 1, -1, -1):
            layer, level = layers[i], levels[i]
            if isinstance(layer, Split2d):
                split_idx -= 1
                eps = eps_list[split_idx]
                if eps is None:
                    eps = self._draw(shapes[split_idx], temperature, generator, lr, b)
                x, logdet, _ = layer(x, logdet, reverse=True, eps=eps)
            elif isinstance(layer, FlowStep):
                x, logdet = layer(x, logdet, reverse=True, cond=cond.maps[level - 1])
            else:
                x, logdet = layer(x, logdet, reverse=True)
        return (x, logdet) if return_logdet else x

    def forward(self, lr: Tensor, temperature: float | Tensor = 0.0, generator: torch.Generator | None = None) -> Tensor:
        """SR for any LR size: reflection-pad (bottom/right) to a valid size, decode, crop back."""
        h, w = lr.shape[-2:]
        m = self.size_multiple
        ph, pw = (-h) % m, (-w) % m
        x = F.pad(lr, (0, pw, 0, ph), mode="reflect" if min(h, w) > max(ph, pw) else "replicate") if ph or pw else lr
        if isinstance(temperature, Tensor) and (ph or pw):
            temperature = F.pad(temperature, (0, pw * self.scale, 0, ph * self.scale), mode="replicate")
        sr = self.decode(x, temperature=temperature, generator=generator)
        return sr[..., : h * self.scale, : w * self.scale]  # type: ignore[index]
