"""HCFlow's building blocks (``docs/hcflow.md``; the prose spec is ``hcflow-architecture.md`` §3).

The generic ones come from the public API of restorekit's own plugins (both shipped in the ``restorekit``
distribution): ActNorm, the invertible 1×1 convolution, squeeze, the convolutions of the coupling network and the
Gaussian log-density from ``restorekit_srflow``, the residual-in-residual dense block from ``restorekit_rrdb``. Where
HCFlow's reference differs, a subclass or an initialiser here says how. What is HCFlow's own: the split, the
atan-scaled affine coupling and its network, the flow step.

Every flow layer takes and returns ``(x, logdet)``; ``logdet`` is a (B,) tensor or None (not tracked). Parameter
names follow the official state dict, so a published checkpoint loads without renaming.
"""

from __future__ import annotations

import numpy as np
import restorekit_srflow as srflow
import torch
import torch.nn.functional as F
from restorekit_rrdb import RRDB
from restorekit_srflow import Conv2dActNorm, Squeeze, ZeroConv2d, sum_per_sample
from torch import Tensor, nn


def gaussian_logp(x: Tensor, mean: Tensor, logs: Tensor) -> Tensor:
    """Per-sample log-density of a diagonal Gaussian N(mean, exp(logs)²) at ``x``: (B,)."""
    return sum_per_sample(srflow.gaussian_logp(x, mean, logs))


def half_split(x: Tensor) -> tuple[Tensor, Tensor]:
    """First floor(C/2) channels | the rest (coupling inputs)."""
    c = x.shape[1] // 2
    return x[:, :c], x[:, c:]


def interleaved_split(x: Tensor) -> tuple[Tensor, Tensor]:
    """Even channels | odd channels (network outputs: shift | scale, mean | log-sigma)."""
    return x[:, 0::2], x[:, 1::2]


def scaled_xavier_(module: nn.Module) -> nn.Module:
    """HCFlow's initialisation (§8) of every convolution in ``module``: weights Xavier-normal × 0.1, biases 0."""
    for conv in module.modules():
        if isinstance(conv, nn.Conv2d):
            nn.init.xavier_normal_(conv.weight)
            with torch.no_grad():
                conv.weight.mul_(0.1)
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)
    return module


class Split(nn.Module):
    """A parameter-free entry of ``flow.layers``: the network keeps the first ``keep`` channels, the rest go to the
    level's conditional flow."""

    def __init__(self, keep: int) -> None:
        super().__init__()
        self.keep = keep

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x[:, : self.keep], x[:, self.keep :]


class ActNorm(srflow.ActNorm):
    """SRFlow's ActNorm (§3.2), initialised from data by a training-mode encode only, as HCFlow's reference."""

    init_on_decode = False


class InvConv1x1(srflow.InvConv1x1):
    """SRFlow's invertible 1×1 convolution (its inverse cached) with HCFlow's reference numbers (§3.3): ``ln|det W|``
    in float32, and the initial rotation drawn from numpy's generator (which restorekit seeds with the run)."""

    @staticmethod
    def initial_weight(channels: int) -> Tensor:
        q, _ = np.linalg.qr(np.random.randn(channels, channels))
        return torch.from_numpy(q.astype(np.float32))

    @staticmethod
    def logabsdet(w: Tensor) -> Tensor:
        return torch.linalg.slogdet(w.float())[1].to(w.dtype)


class FCN(nn.Module):
    """The coupling network: conv3×3+ActNorm, ReLU, conv1×1+ActNorm, ReLU, zero conv."""

    def __init__(self, c_in: int, c_out: int, hidden: int) -> None:
        super().__init__()
        self.conv1 = scaled_xavier_(Conv2dActNorm(c_in, hidden, 3))
        self.conv2 = scaled_xavier_(Conv2dActNorm(hidden, hidden, 1))
        self.conv3 = ZeroConv2d(hidden, c_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv3(F.relu(self.conv2(F.relu(self.conv1(x)))))


class AffineCoupling(nn.Module):
    """``z_b' = (z_b + shift) · exp(0.318 · atan(2 · raw))`` with (shift, raw) from ``f([z_a, cond])``."""

    def __init__(self, channels: int, hidden: int, cond_channels: int = 0) -> None:
        super().__init__()
        keep = channels // 2
        self.f = FCN(keep + cond_channels, 2 * (channels - keep), hidden)

    def forward(
        self, x: Tensor, logdet: Tensor | None = None, reverse: bool = False, cond: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        za, zb = half_split(x)
        h = self.f(za if cond is None else torch.cat([za, cond], 1))
        shift, raw = interleaved_split(h)
        s = 0.318 * torch.atan(2.0 * raw)
        if reverse:
            zb = zb * torch.exp(-s) - shift
            logdet = None if logdet is None else logdet - sum_per_sample(s)
        else:
            zb = (zb + shift) * torch.exp(s)
            logdet = None if logdet is None else logdet + sum_per_sample(s)
        return torch.cat([za, zb], 1), logdet


class FlowStep(nn.Module):
    """ActNorm → invertible 1×1 convolution → affine coupling (reverse: the other way round)."""

    def __init__(self, channels: int, hidden: int, cond_channels: int = 0) -> None:
        super().__init__()
        self.actnorm = ActNorm(channels)
        self.permute = InvConv1x1(channels)
        self.affine = AffineCoupling(channels, hidden, cond_channels)

    def forward(
        self, x: Tensor, logdet: Tensor | None = None, reverse: bool = False, cond: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        if reverse:
            x, logdet = self.affine(x, logdet, True, cond)
            x, logdet = self.permute(x, logdet, True)
            return self.actnorm(x, logdet, True)
        x, logdet = self.actnorm(x, logdet)
        x, logdet = self.permute(x, logdet)
        return self.affine(x, logdet, False, cond)


__all__ = [
    "FCN",
    "RRDB",
    "ActNorm",
    "AffineCoupling",
    "Conv2dActNorm",
    "FlowStep",
    "InvConv1x1",
    "Split",
    "Squeeze",
    "ZeroConv2d",
    "gaussian_logp",
    "half_split",
    "interleaved_split",
    "scaled_xavier_",
    "sum_per_sample",
]
