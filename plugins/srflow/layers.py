"""Flow layers of SRFlow (see docs/srflow-architecture.md §5): ActNorm, invertible 1x1 convolution, squeeze,
conditional affine coupling, split with a learned prior. Plain ``nn.Module``s, no restorekit imports.

Every layer maps ``(x, logdet)`` to ``(y, logdet)``; ``reverse=True`` runs the inverse and subtracts the term.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LOG_2PI = math.log(2 * math.pi)


def gaussian_logp(x: Tensor, mean: Tensor | None = None, logs: Tensor | None = None) -> Tensor:
    """Per-element log N(x; mean, exp(logs)); standard normal when mean/logs are None."""
    if mean is None:
        return -0.5 * (x * x + LOG_2PI)
    return -0.5 * (2 * logs + (x - mean) ** 2 * torch.exp(-2 * logs) + LOG_2PI)


def sum_per_sample(x: Tensor) -> Tensor:
    return x.flatten(1).sum(1)


class ActNorm(nn.Module):
    """Per-channel affine ``y = (x + bias) * exp(logs)`` with data-dependent initialisation.

    ``initialized`` is an explicit state: loading parameters from a checkpoint sets it; a fresh module
    initialises from the first tensor it sees in training mode (either direction). Evaluation never
    initialises.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.logs = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.initialized = False

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if prefix + "bias" in state_dict:
            self.initialized = True

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        bias = -x.mean(dim=(0, 2, 3), keepdim=True)
        var = ((x + bias) ** 2).mean(dim=(0, 2, 3), keepdim=True)
        self.bias.data.copy_(bias)
        self.logs.data.copy_(torch.log(1.0 / (var.sqrt() + 1e-6)))
        self.initialized = True

    def _maybe_init(self, x: Tensor) -> None:
        if not self.initialized and self.training:
            self.initialize(x)

    def forward(self, x: Tensor, logdet: Tensor | None = None, reverse: bool = False) -> tuple[Tensor, Tensor | None]:
        self._maybe_init(x)
        hw = x.shape[2] * x.shape[3]
        if not reverse:
            y = (x + self.bias) * torch.exp(self.logs)
            if logdet is not None:
                logdet = logdet + hw * self.logs.sum()
        else:
            y = x * torch.exp(-self.logs) - self.bias
            if logdet is not None:
                logdet = logdet - hw * self.logs.sum()
        return y, logdet


class InvConv1x1(nn.Module):
    """Invertible 1x1 convolution with a plain C×C weight; the inverse is computed in float64 then cast."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        q, _ = torch.linalg.qr(torch.randn(channels, channels))
        self.weight = nn.Parameter(q)
        self._inv_cache: tuple[Any, Tensor] | None = None

    def _inverse(self) -> Tensor:
        w = self.weight
        key = (w._version, w.data_ptr(), w.device, w.dtype)
        if not torch.is_grad_enabled() and self._inv_cache is not None and self._inv_cache[0] == key:
            return self._inv_cache[1]
        inv = torch.linalg.inv(w.double()).to(w.dtype)
        if not torch.is_grad_enabled():
            self._inv_cache = (key, inv)
        return inv

    def forward(self, x: Tensor, logdet: Tensor | None = None, reverse: bool = False) -> tuple[Tensor, Tensor | None]:
        c = self.weight.shape[0]
        hw = x.shape[2] * x.shape[3]
        dlogdet = hw * torch.linalg.slogdet(self.weight.double())[1].to(x.dtype) if logdet is not None else None
        if not reverse:
            y = F.conv2d(x, self.weight.view(c, c, 1, 1))
            if logdet is not None:
                logdet = logdet + dlogdet
        else:
            y = F.conv2d(x, self._inverse().view(c, c, 1, 1))
            if logdet is not None:
                logdet = logdet - dlogdet
        return y, logdet


class Squeeze(nn.Module):
    """Space-to-depth by 2 (``pixel_unshuffle``); no parameters, logdet 0."""

    def forward(self, x: Tensor, logdet: Tensor | None = None, reverse: bool = False) -> tuple[Tensor, Tensor | None]:
        return (F.pixel_shuffle(x, 2) if reverse else F.pixel_unshuffle(x, 2)), logdet


class Conv2dActNorm(nn.Conv2d):
    """Convolution without bias followed by an ActNorm (its logdet is not part of the flow's)."""

    def __init__(self, cin: int, cout: int, kernel: int) -> None:
        super().__init__(cin, cout, kernel, padding=kernel // 2, bias=False)
        nn.init.normal_(self.weight, 0.0, 0.05)
        self.actnorm = ActNorm(cout)

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        return self.actnorm(super().forward(x))[0]


class ZeroConv2d(nn.Conv2d):
    """3x3 convolution with bias, output scaled per channel by ``exp(3 * logs)``; zero-initialised."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(cin, cout, 3, padding=1)
        self.logs = nn.Parameter(torch.zeros(cout, 1, 1))
        nn.init.zeros_(self.weight)
        nn.init.zeros_(self.bias)

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        return super().forward(x) * torch.exp(3 * self.logs)


def coupling_net(cin: int, cout: int, hidden: int) -> nn.Sequential:
    """conv3+ActNorm → ReLU → conv1+ActNorm → ReLU → zero-conv (indices 0, 2, 4 as in the official keys)."""
    return nn.Sequential(
        Conv2dActNorm(cin, hidden, 3), nn.ReLU(inplace=False), Conv2dActNorm(hidden, hidden, 1),
        nn.ReLU(inplace=False), ZeroConv2d(hidden, cout),
    )


class CondAffineCoupling(nn.Module):
    """SRFlow's conditional affine coupling (``CondAffineSeparatedAndCond``), §5.5.

    A feature-conditional affine on all channels, then a self-conditional affine on the second half.
    shift = even channels, scale = sigmoid(odd + 2) + eps; the shift is added before scaling.
    """

    def __init__(self, channels: int, cond_channels: int, hidden: int = 64, eps: float = 1e-4) -> None:
        super().__init__()
        self.c1 = channels // 2
        self.c2 = channels - self.c1
        self.eps = eps
        self.fAffine = coupling_net(self.c1 + cond_channels, 2 * self.c2, hidden)
        self.fFeatures = coupling_net(cond_channels, 2 * channels, hidden)

    def _shift_scale(self, g: Tensor) -> tuple[Tensor, Tensor]:
        return g[:, 0::2], torch.sigmoid(g[:, 1::2] + 2.0) + self.eps

    def forward(
        self, x: Tensor, cond: Tensor, logdet: Tensor | None = None, reverse: bool = False,
        features_out: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        shift_f, scale_f = self._shift_scale(features_out if features_out is not None else self.fFeatures(cond))
        if not reverse:
            x = (x + shift_f) * scale_f
            x1, x2 = x[:, : self.c1], x[:, self.c1 :]
            shift_a, scale_a = self._shift_scale(self.fAffine(torch.cat([x1, cond], 1)))
            x2 = (x2 + shift_a) * scale_a
            if logdet is not None:
                logdet = logdet + sum_per_sample(torch.log(scale_f)) + sum_per_sample(torch.log(scale_a))
            return torch.cat([x1, x2], 1), logdet
        y1, y2 = x[:, : self.c1], x[:, self.c1 :]
        shift_a, scale_a = self._shift_scale(self.fAffine(torch.cat([y1, cond], 1)))
        y2 = y2 / scale_a - shift_a
        out = torch.cat([y1, y2], 1) / scale_f - shift_f
        if logdet is not None:
            logdet = logdet - sum_per_sample(torch.log(scale_a)) - sum_per_sample(torch.log(scale_f))
        return out, logdet


class FlowStep(nn.Module):
    """ActNorm → invertible 1x1 conv (→ conditional coupling when ``cond_channels`` is given)."""

    def __init__(
        self, channels: int, cond_channels: int | None = None, hidden: int = 64, eps: float = 1e-4
    ) -> None:
        super().__init__()
        self.actnorm = ActNorm(channels)
        self.invconv = InvConv1x1(channels)
        self.affine = CondAffineCoupling(channels, cond_channels, hidden, eps) if cond_channels is not None else None

    def forward(
        self, x: Tensor, logdet: Tensor | None = None, reverse: bool = False, cond: Tensor | None = None,
        features_out: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        if not reverse:
            x, logdet = self.actnorm(x, logdet)
            x, logdet = self.invconv(x, logdet)
            if self.affine is not None:
                x, logdet = self.affine(x, cond, logdet, features_out=features_out)
            return x, logdet
        if self.affine is not None:
            x, logdet = self.affine(x, cond, logdet, reverse=True, features_out=features_out)
        x, logdet = self.invconv(x, logdet, reverse=True)
        return self.actnorm(x, logdet, reverse=True)


class Split2d(nn.Module):
    """Factor out the last ``consume`` channels with a learned Gaussian prior conditioned on the kept ones."""

    def __init__(self, channels: int, consume_ratio: float = 0.5, logs_eps: float = 0.0) -> None:
        super().__init__()
        self.consume = int(round(channels * consume_ratio))
        self.keep = channels - self.consume
        self.logs_eps = logs_eps
        self.conv = ZeroConv2d(self.keep, 2 * self.consume)

    def prior(self, x1: Tensor) -> tuple[Tensor, Tensor]:
        g = self.conv(x1)
        return g[:, 0::2], g[:, 1::2]

    def forward(
        self, x: Tensor, logdet: Tensor | None = None, reverse: bool = False, eps: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Encode: returns (kept half, logdet, eps). Decode: ``x`` is the kept half, ``eps`` the latent."""
        if not reverse:
            x1, x2 = x[:, : self.keep], x[:, self.keep :]
            mean, logs = self.prior(x1)
            eps_out = (x2 - mean) / (torch.exp(logs) + self.logs_eps)
            if logdet is not None:
                logdet = logdet + sum_per_sample(gaussian_logp(x2, mean, logs))
            return x1, logdet, eps_out
        mean, logs = self.prior(x)
        x2 = mean + (torch.exp(logs) + self.logs_eps) * eps
        if logdet is not None:
            logdet = logdet - sum_per_sample(gaussian_logp(x2, mean, logs))
        return torch.cat([x, x2], 1), logdet, None
