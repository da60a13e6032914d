"""The HCFlow SR network (Liang et al., ICCV 2021), written from ``hcflow-architecture.md`` (see ``docs/hcflow.md``).

One invertible flow between an HR image and ``(y, z_0, …, z_{L-1})``: ``y`` (3 channels at LR size) is the flow's own
LR estimate, ``z_l`` the latent split off at level ``l`` (level 0 finest, H/2; level L-1 coarsest, H/scale). Each
``z_l`` has a diagonal Gaussian prior computed by level ``l``'s conditional flow from the kept channels and the
features of all coarser levels (the coarsest level sees ``y`` only).

restorekit's latents are the *standardised* ones, ``eps_l = (z_l − mean_l) · exp(−logsig_l)`` (the official sampler's
noise), so that N(0, T²) latents are samples at temperature T. :class:`HCFlowArch` is a plain ``nn.Module`` that knows
nothing of restorekit; wrong inputs raise ValueError.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from restorekit_srflow import latent_batch
from torch import Tensor, nn

from .layers import RRDB, FlowStep, Split, Squeeze, ZeroConv2d, gaussian_logp, interleaved_split, scaled_xavier_

LR_LOGSCALE = -6.0
"""Log-sigma of the Gaussian that ties the flow's quantised LR estimate to the given LR (a stand-in for a Dirac)."""


def level_channels(levels: int) -> tuple[list[int], list[int], list[int]]:
    """Per level: channels after the squeeze, kept channels, latent channels (§4)."""
    channels, keep, latent = [], [], []
    c = 3
    for level in range(levels):
        c *= 4
        k = 3 if level == levels - 1 else c // 2
        channels.append(c)
        keep.append(k)
        latent.append(c - k)
        c = k
    return channels, keep, latent


def level_steps(
    scale: int, steps_per_level: int | Sequence[int], cond_steps_per_level: Sequence[int] | None,
    cond_rrdb_blocks: Sequence[int],
) -> tuple[list[int], list[int]]:
    """Flow steps and conditional steps per level (one int: the same at every level; no conditional steps: half of
    each level's, as the published models); a ValueError naming the field when the geometry does not fit ``scale``
    (the check of both :class:`HCFlowArch` and ``HCFlowParams``)."""
    if scale not in (4, 8):
        raise ValueError(f"scale: must be 4 or 8 (the official wirings), got {scale}")
    levels = {4: 2, 8: 3}[scale]
    steps = [steps_per_level] * levels if isinstance(steps_per_level, int) else list(steps_per_level)
    if len(steps) != levels or any(k < 1 for k in steps):
        raise ValueError(f"steps_per_level: scale {scale} needs {levels} positive values, got {steps}")
    cond = [k // 2 for k in steps] if cond_steps_per_level is None else list(cond_steps_per_level)
    if len(cond) != levels or any(not 0 <= c <= k for c, k in zip(cond, steps)):
        raise ValueError(
            f"cond_steps_per_level: scale {scale} needs {levels} values between 0 and steps_per_level {steps}, "
            f"got {cond}"
        )
    if len(cond_rrdb_blocks) != 2 or any(b < 0 for b in cond_rrdb_blocks):
        raise ValueError(f"cond_rrdb_blocks must be [trunk0, trunk1] (two counts >= 0), got {list(cond_rrdb_blocks)}")
    return steps, cond


def cond_input_channels(levels: int, nf: int) -> list[int]:
    """Input width of each level's conditional-feature extractor: kept channels + 2nf per coarser level."""
    _, keep, _ = level_channels(levels)
    return [3 if level == levels - 1 else keep[level] + 2 * nf * (levels - 1 - level) for level in range(levels)]


class CondFlow(nn.Module):
    """Level ``l``'s conditional flow: an RRDB feature extractor, conditional flow steps and the prior head (§3.10)."""

    def __init__(self, c_in: int, latent: int, steps: int, hidden: int, nf: int, gc: int, blocks: Sequence[int]):
        super().__init__()
        self.conv_first = nn.Conv2d(c_in, nf, 3, padding=1)
        self.RRDB_trunk0 = scaled_xavier_(nn.Sequential(*[RRDB(nf=nf, gc=gc) for _ in range(blocks[0])]))
        self.RRDB_trunk1 = scaled_xavier_(nn.Sequential(*[RRDB(nf=nf, gc=gc) for _ in range(blocks[1])]))
        self.trunk_conv1 = nn.Conv2d(nf, nf, 3, padding=1)
        self.additional_flow_steps = nn.ModuleList([FlowStep(latent, hidden, 2 * nf) for _ in range(steps)])
        self.f = ZeroConv2d(2 * nf, 2 * latent)

    def features(self, u: Tensor) -> Tensor:
        """F = [f1, trunk_conv1(trunk1(f1)) + f0] with f0 = conv_first(u), f1 = trunk0(f0): 2nf channels."""
        f0 = self.conv_first(u)
        f1 = self.RRDB_trunk0(f0)
        return torch.cat([f1, self.trunk_conv1(self.RRDB_trunk1(f1)) + f0], 1)

    def prior(self, feature: Tensor) -> tuple[Tensor, Tensor]:
        """(mean, log-sigma) of the level's latent."""
        return interleaved_split(self.f(feature))

    def encode(self, a: Tensor, feature: Tensor, logdet: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The split-off part → (z, logdet with the steps and the prior's log-density, mean, log-sigma)."""
        z: Tensor = a
        for step in self.additional_flow_steps:
            z, out = step(z, logdet, False, feature)
            assert out is not None
            logdet = out
        mean, logs = self.prior(feature)
        return z, logdet + gaussian_logp(z, mean, logs), mean, logs

    def decode(self, z: Tensor, feature: Tensor) -> Tensor:
        """A latent (prior space) → the split-off part."""
        for step in reversed(self.additional_flow_steps):
            z = step(z, None, True, feature)[0]
        return z


class Encoded(NamedTuple):
    """What :meth:`HCFlowArch.encode` returns.

    ``latents``: standardised latents per level (finest first, coarsest last); ``nll``: bits per pixel (official:
    divided by H·W, not 3·H·W), LR term included, (B,); ``logdet``: the flow's log-det (dequantisation constant,
    steps and latent log-densities, no LR term), (B,); ``flow_lr``: the flow's raw LR estimate ``y`` (decoding the
    latents with it inverts the flow exactly); ``lr_logp``: the LR term (B,); ``lr_quantized``: ``y`` clamped and
    quantised to 1/255 (the official forward's first output); ``prior_means`` / ``prior_logs`` / ``z``: per level.
    """

    latents: list[Tensor]
    nll: Tensor
    logdet: Tensor
    flow_lr: Tensor
    lr_logp: Tensor
    lr_quantized: Tensor
    prior_means: list[Tensor]
    prior_logs: list[Tensor]
    z: list[Tensor]

    @property
    def nll_per_dim(self) -> Tensor:
        """The NLL in bits per dimension (divided by 3·H·W, the generative-modelling convention): ``nll / 3``."""
        return self.nll / 3.0


class HCFlowFlow(nn.Module):
    """The ``flow`` submodule: ``layers`` (squeeze, main steps, split per level) and ``level{l}_condFlow``."""

    def __init__(
        self,
        levels: int,
        main_steps: Sequence[int],
        cond_steps: Sequence[int],
        main_hidden: int,
        cond_hidden: int,
        nf: int,
        gc: int,
        blocks: Sequence[int],
    ) -> None:
        super().__init__()
        channels, keep, latent = level_channels(levels)
        inputs = cond_input_channels(levels, nf)
        layers: list[nn.Module] = []
        for level in range(levels):
            layers.append(Squeeze())
            layers.extend(FlowStep(channels[level], main_hidden) for _ in range(main_steps[level]))
            layers.append(Split(keep[level]))
        self.layers = nn.ModuleList(layers)
        for level in range(levels):
            cond = CondFlow(inputs[level], latent[level], cond_steps[level], cond_hidden, nf, gc, blocks)
            self.add_module(f"level{level}_condFlow", cond)

    def cond_flow(self, level: int) -> CondFlow:
        module = getattr(self, f"level{level}_condFlow")
        assert isinstance(module, CondFlow)
        return module


class HCFlowArch(nn.Module):
    """HCFlow-SR (``HCFlowNet_SR``). State-dict keys are the official ones (``flow.layers.{i}.…``,
    ``flow.level{l}_condFlow.…``).

    * ``encode(hr, lr)`` → :class:`Encoded` (standardised latents per level, NLL with the LR term);
    * ``decode(lr, latents)`` → SR clamped to [0, 1]; latents in encode order;
    * ``conditional_features(lr)``: the coarsest level's feature and prior (computed from the LR alone; the finer
      levels depend on the latents);
    * ``latent_shapes(lr_shape)``: ``(m_l, h·2^{L−1−l}, w·2^{L−1−l})`` per level.
    """

    def __init__(
        self,
        scale: int = 4,
        steps_per_level: int | Sequence[int] = 26,
        cond_steps_per_level: Sequence[int] | None = None,
        main_coupling_hidden: int = 64,
        cond_coupling_hidden: int = 64,
        cond_rrdb_blocks: Sequence[int] = (7, 7),
        cond_features: int = 64,
        cond_growth: int = 32,
        quant: int = 64,
    ) -> None:
        super().__init__()
        steps, cond_steps = level_steps(scale, steps_per_level, cond_steps_per_level, cond_rrdb_blocks)
        levels = len(steps)
        main = [k - c for k, c in zip(steps, cond_steps)]
        self.arch_params: dict[str, Any] = {
            "scale": scale, "steps_per_level": steps, "cond_steps_per_level": cond_steps,
            "main_coupling_hidden": main_coupling_hidden, "cond_coupling_hidden": cond_coupling_hidden,
            "cond_rrdb_blocks": list(cond_rrdb_blocks), "cond_features": cond_features, "cond_growth": cond_growth,
            "quant": quant,
        }
        self.scale = scale
        self.levels = levels
        self.quant = quant
        self.size_multiple = 1
        self.flow = HCFlowFlow(levels, main, cond_steps, main_coupling_hidden, cond_coupling_hidden, cond_features,
                               cond_growth, cond_rrdb_blocks)
        self.latent_channels = level_channels(levels)[2]

    # ------------------------------------------------------------------------------------------------
    # shapes

    def latent_shapes(self, lr_shape: Sequence[int]) -> list[tuple[int, int, int]]:
        h, w = int(lr_shape[-2]), int(lr_shape[-1])
        return [(m, h << (self.levels - 1 - l), w << (self.levels - 1 - l)) for l, m in enumerate(self.latent_channels)]

    def _check_sizes(self, lr: Tensor, hr: Tensor | None = None) -> None:
        if lr.dim() != 4 or lr.shape[1] != 3:
            raise ValueError(f"hcflow: the LR must be a (B, 3, h, w) batch, got {tuple(lr.shape)}")
        if hr is None:
            return
        if hr.dim() != 4 or hr.shape[1] != 3:
            raise ValueError(f"hcflow: the HR must be a (B, 3, H, W) batch, got {tuple(hr.shape)}")
        want = (int(lr.shape[-2]) * self.scale, int(lr.shape[-1]) * self.scale)
        if tuple(hr.shape[-2:]) != want:
            raise ValueError(f"hcflow: HR {tuple(hr.shape[-2:])} is not {self.scale}x the LR {tuple(lr.shape[-2:])}")
        if lr.shape[0] not in (1, hr.shape[0]):
            raise ValueError(f"hcflow: LR batch {lr.shape[0]} does not match HR batch {hr.shape[0]}")

    # ------------------------------------------------------------------------------------------------
    # the per-level conditioning

    def _cond_input(self, level: int, kept: Tensor, features: dict[int, Tensor]) -> Tensor:
        """Level ``level``'s extractor input: the kept part, then coarser levels' features upsampled, nearest first."""
        if level == self.levels - 1:
            return kept
        parts = [kept]
        for coarser in range(level + 1, self.levels):
            parts.append(F.interpolate(features[coarser], scale_factor=2 ** (coarser - level), mode="nearest"))
        return torch.cat(parts, 1)

    def conditional_features(self, lr: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The coarsest level's (feature, prior mean, prior log-sigma) for ``lr`` (what ``decode(cond=)`` reuses)."""
        self._check_sizes(lr)
        cond = self.flow.cond_flow(self.levels - 1)
        feature = cond.features(lr)
        mean, logs = cond.prior(feature)
        return feature, mean, logs

    # ------------------------------------------------------------------------------------------------
    # forward direction

    def encode(self, hr: Tensor, lr: Tensor, add_noise: bool = False, noise: Tensor | None = None) -> Encoded:
        """HR → (flow LR, latents), NLL against ``lr`` (§5).

        ``add_noise``: dequantise with ``hr + u / quant`` (u uniform in [0, 1), or ``noise`` if given), as the
        official forward always does; ``logdet`` starts at ``−H·W·ln quant`` either way (the official constant).
        ``nll = −(logdet + lr_logp) / (ln 2 · H · W)`` where ``lr_logp`` scores the flow's clamped, 1/255-quantised
        LR estimate under N(lr, exp(−6)²); in training the quantisation passes gradients straight through.
        """
        self._check_sizes(lr, hr)
        batch = int(hr.shape[0])
        pixels = int(hr.shape[-2]) * int(hr.shape[-1])
        x = hr
        if add_noise or noise is not None:
            u = torch.rand_like(hr) if noise is None else noise.to(hr)
            x = hr + u / self.quant
        logdet = torch.full((batch,), -math.log(self.quant) * pixels, device=hr.device, dtype=hr.dtype)
        kept: list[Tensor] = []
        split_off: list[Tensor] = []
        for layer in self.flow.layers:
            if isinstance(layer, Split):
                x, a = layer(x)
                kept.append(x)
                split_off.append(a)
            else:
                x, out = layer(x, logdet)
                assert out is not None
                logdet = out
        y = x
        features: dict[int, Tensor] = {}
        zs: list[Tensor] = [torch.empty(0)] * self.levels
        means, logss, latents = list(zs), list(zs), list(zs)
        for level in reversed(range(self.levels)):
            cond = self.flow.cond_flow(level)
            features[level] = cond.features(self._cond_input(level, kept[level], features))
            z, logdet, mean, logs = cond.encode(split_off[level], features[level], logdet)
            zs[level], means[level], logss[level] = z, mean, logs
            latents[level] = (z - mean) * torch.exp(-logs)
        quantized = torch.round(y.clamp(0, 1) * 255.0) / 255.0
        if torch.is_grad_enabled():
            quantized = y + (quantized - y).detach()
        lr_logp = gaussian_logp(quantized, lr.to(y), torch.full_like(quantized, LR_LOGSCALE))
        nll = -(logdet + lr_logp) / (math.log(2.0) * pixels)
        return Encoded(latents, nll, logdet, y, lr_logp, quantized.clamp(0, 1), means, logss, zs)

    # ------------------------------------------------------------------------------------------------
    # reverse direction

    def decode(
        self,
        lr: Tensor,
        latents: Sequence[Tensor],
        *,
        cond: tuple[Tensor, Tensor, Tensor] | None = None,
        clamp: bool = True,
    ) -> Tensor:
        """LR (in the ``y`` slot) and standardised latents → SR (§6), clamped to [0, 1] unless ``clamp=False``.

        ``latents`` in encode order (finest first); their batch may be B for an LR batch of 1. ``cond``:
        :meth:`conditional_features` of this ``lr``.
        """
        self._check_sizes(lr)
        batch = latent_batch("hcflow", "finest level first", latents, self.latent_shapes(lr.shape), lr)
        if cond is None and lr.shape[0] != batch:  # B latent sets for one LR: its features once, not B times
            cond = self.conditional_features(lr)
        x = lr.expand(batch, -1, -1, -1) if lr.shape[0] != batch else lr
        features: dict[int, Tensor] = {}
        ends = [i for i, layer in enumerate(self.flow.layers) if isinstance(layer, Split)]
        for level in reversed(range(self.levels)):
            flow = self.flow.cond_flow(level)
            if level == self.levels - 1 and cond is not None:
                feature, mean, logs = (t.expand(batch, -1, -1, -1) if t.shape[0] != batch else t for t in cond)
            else:
                feature = flow.features(self._cond_input(level, x, features))
                mean, logs = flow.prior(feature)
            features[level] = feature
            z = mean + torch.exp(logs) * latents[level].to(mean)
            x = torch.cat([x, flow.decode(z, feature)], 1)
            start = ends[level - 1] + 1 if level else 0
            for index in range(ends[level] - 1, start - 1, -1):
                x = self.flow.layers[index](x, None, True)[0]
        return x.clamp(0, 1) if clamp else x


__all__ = [
    "LR_LOGSCALE", "CondFlow", "Encoded", "HCFlowArch", "HCFlowFlow", "cond_input_channels", "level_channels",
    "level_steps",
]
