"""HCFlow's building blocks (``docs/hcflow.md``; the prose spec is ``hcflow-architecture.md`` §3).

Every flow layer takes and returns ``(x, logdet)``; ``logdet`` is a (B,) tensor or None (not tracked). Parameter
names follow the official state dict, so a published checkpoint loads without renaming.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

LOG_2PI = math.log(2.0 * math.pi)


def sum_per_sample(x: Tensor) -> Tensor:
    """Sum over every dimension but the batch: (B, ...) → (B,)."""
    return x.reshape(x.shape[0], -1).sum(1)


def gaussian_logp(x: Tensor, mean: Tensor, logs: Tensor) -> Tensor:
    """Per-sample log-density of a diagonal Gaussian N(mean, exp(logs)²) at ``x``: (B,)."""
    return sum_per_sample(-0.5 * (2.0 * logs + (x - mean) ** 2 * torch.exp(-2.0 * logs) + LOG_2PI))


def half_split(x: Tensor) -> tuple[Tensor, Tensor]:
    """First floor(C/2) channels | the rest (coupling inputs)."""
    c = x.shape[1] // 2
    return x[:, :c], x[:, c:]


def interleaved_split(x: Tensor) -> tuple[Tensor, Tensor]:
    """Even channels | odd channels (network outputs: shift | scale, mean | log-sigma)."""
    return x[:, 0::2], x[:, 1::2]


def squeeze2(x: Tensor) -> Tensor:
    """(B, C, H, W) → (B, 4C, H/2, W/2) with ``out[:, 4c + 2i + j] = in[:, c, i::2, j::2]`` (pixel unshuffle)."""
    return F.pixel_unshuffle(x, 2)


def unsqueeze2(x: Tensor) -> Tensor:
    """The inverse of :func:`squeeze2` (pixel shuffle)."""
    return F.pixel_shuffle(x, 2)


class Squeeze(nn.Module):
    """A parameter-free entry of ``flow.layers`` (factor 2, log-det 0)."""

    def forward(self, x: Tensor, logdet: Tensor | None = None, reverse: bool = False) -> tuple[Tensor, Tensor | None]:
        return (unsqueeze2(x) if reverse else squeeze2(x)), logdet


class Split(nn.Module):
    """A parameter-free entry of ``flow.layers``: the network keeps the first ``keep`` channels, the rest go to the
    level's conditional flow."""

    def __init__(self, keep: int) -> None:
        super().__init__()
        self.keep = keep

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x[:, : self.keep], x[:, self.keep :]


class ActNorm(nn.Module):
    """Per-channel ``(x + bias) · exp(logs)``; data-initialised on the first training-mode call (§3.2).

    ``initialized`` is a plain attribute (the official state dict has no buffers); loading a state dict sets it.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.logs = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.initialized = False

    def _load_from_state_dict(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super()._load_from_state_dict(*args, **kwargs)
        self.initialized = True

    @torch.no_grad()
    def _data_init(self, x: Tensor) -> None:
        if bool((self.bias != 0).any()):
            self.initialized = True
            return
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        std = ((x - mean) ** 2).mean(dim=(0, 2, 3), keepdim=True).sqrt()
        self.bias.copy_(-mean)
        self.logs.copy_(torch.log(1.0 / (std + 1e-6)))
        self.initialized = True

    def forward(self, x: Tensor, logdet: Tensor | None = None, reverse: bool = False) -> tuple[Tensor, Tensor | None]:
        if self.training and not self.initialized and not reverse:
            self._data_init(x.detach())
        term = None if logdet is None else logdet.new_tensor(0) + self.logs.sum() * (x.shape[2] * x.shape[3])
        if reverse:
            x = x * torch.exp(-self.logs) - self.bias
            return x, None if logdet is None else logdet - term
        x = (x + self.bias) * torch.exp(self.logs)
        return x, None if logdet is None else logdet + term


class InvConv1x1(nn.Module):
    """Invertible 1×1 convolution with a plain (C, C) matrix (no LU); init: Q of a QR of a normal matrix."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        q, _ = np.linalg.qr(np.random.randn(channels, channels))
        self.weight = nn.Parameter(torch.from_numpy(q.astype(np.float32)))

    def forward(self, x: Tensor, logdet: Tensor | None = None, reverse: bool = False) -> tuple[Tensor, Tensor | None]:
        c = self.weight.shape[0]
        if logdet is not None:
            term = torch.linalg.slogdet(self.weight.float())[1].to(logdet) * (x.shape[2] * x.shape[3])
            logdet = logdet - term if reverse else logdet + term
        w = torch.linalg.inv(self.weight.double()).to(self.weight.dtype) if reverse else self.weight
        return F.conv2d(x, w.reshape(c, c, 1, 1)), logdet


class ZeroConv(nn.Module):
    """3×3 convolution whose output is scaled by ``exp(3 · logs)`` per channel; all zeros at init."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(c_out, c_in, 3, 3))
        self.bias = nn.Parameter(torch.zeros(c_out))
        self.logs = nn.Parameter(torch.zeros(c_out, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight, self.bias, padding=1) * torch.exp(3.0 * self.logs)


class ConvActNorm(nn.Module):
    """A bias-free convolution followed by an ActNorm (which adds nothing to any log-det)."""

    def __init__(self, c_in: int, c_out: int, kernel: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(c_out, c_in, kernel, kernel))
        nn.init.xavier_normal_(self.weight)
        with torch.no_grad():
            self.weight.mul_(0.1)
        self.actnorm = ActNorm(c_out)

    def forward(self, x: Tensor) -> Tensor:
        x = F.conv2d(x, self.weight, padding=self.weight.shape[-1] // 2)
        return self.actnorm(x)[0]


class FCN(nn.Module):
    """The coupling network: conv3×3+ActNorm, ReLU, conv1×1+ActNorm, ReLU, zero conv."""

    def __init__(self, c_in: int, c_out: int, hidden: int) -> None:
        super().__init__()
        self.conv1 = ConvActNorm(c_in, hidden, 3)
        self.conv2 = ConvActNorm(hidden, hidden, 1)
        self.conv3 = ZeroConv(hidden, c_out)

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


def _scaled_xavier(conv: nn.Conv2d) -> nn.Conv2d:
    nn.init.xavier_normal_(conv.weight)
    with torch.no_grad():
        conv.weight.mul_(0.1)
        assert conv.bias is not None
        conv.bias.zero_()
    return conv


class RDB(nn.Module):
    """Residual dense block: five 3×3 convolutions on the growing concatenation, ``0.2 · x5 + x``."""

    def __init__(self, nf: int, gc: int) -> None:
        super().__init__()
        for i in range(4):
            setattr(self, f"conv{i + 1}", _scaled_xavier(nn.Conv2d(nf + i * gc, gc, 3, padding=1)))
        self.conv5 = _scaled_xavier(nn.Conv2d(nf + 4 * gc, nf, 3, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        feats = [x]
        for i in range(4):
            conv = getattr(self, f"conv{i + 1}")
            feats.append(F.leaky_relu(conv(torch.cat(feats, 1)), 0.2))
        return 0.2 * self.conv5(torch.cat(feats, 1)) + x


class RRDB(nn.Module):
    """Three RDBs and a scaled residual: ``0.2 · RDB3(RDB2(RDB1(x))) + x``."""

    def __init__(self, nf: int, gc: int) -> None:
        super().__init__()
        self.RDB1 = RDB(nf, gc)
        self.RDB2 = RDB(nf, gc)
        self.RDB3 = RDB(nf, gc)

    def forward(self, x: Tensor) -> Tensor:
        return 0.2 * self.RDB3(self.RDB2(self.RDB1(x))) + x


__all__ = [
    "FCN",
    "RDB",
    "RRDB",
    "ActNorm",
    "AffineCoupling",
    "ConvActNorm",
    "FlowStep",
    "InvConv1x1",
    "Split",
    "Squeeze",
    "ZeroConv",
    "gaussian_logp",
    "half_split",
    "interleaved_split",
    "squeeze2",
    "sum_per_sample",
    "unsqueeze2",
]
