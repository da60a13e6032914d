"""The networks (plain nn.Modules that know nothing of restorekit) and their params models."""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from pydantic import Field
from restorekit import Params
from torch import Tensor, nn


class ESPCNParams(Params):
    scale: int = Field(3, ge=1, le=8, description="Upscaling factor.")
    channels: int = Field(3, ge=1, description="Image channels in and out.")
    features: tuple[int, int] = Field((64, 32), description="Channels of the two hidden convolutions.")
    residual: bool = Field(True, description="Add the bicubic upsampling of the input (the net learns the residual).")


class ESPCN(nn.Module):
    """conv 5x5 → tanh → conv 3x3 → tanh → conv 3x3 to channels·scale² → pixel shuffle (+ bicubic skip)."""

    def __init__(self, *, scale: int = 3, channels: int = 3, features: tuple[int, int] = (64, 32),
                 residual: bool = True) -> None:
        super().__init__()
        self.scale = scale
        self.size_multiple = 1
        self.residual = residual
        self.arch_params = {"scale": scale, "channels": channels, "features": list(features), "residual": residual}
        f1, f2 = features
        self.body = nn.Sequential(
            nn.Conv2d(channels, f1, 5, padding=2), nn.Tanh(),
            nn.Conv2d(f1, f2, 3, padding=1), nn.Tanh(),
            nn.Conv2d(f2, channels * scale * scale, 3, padding=1),
            nn.PixelShuffle(scale),
        )

    def forward(self, lr: Tensor) -> Tensor:
        out = self.body(lr)
        if self.residual:
            out = out + F.interpolate(lr, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return out


def build_espcn(params: ESPCNParams) -> ESPCN:
    return ESPCN(scale=params.scale, channels=params.channels, features=params.features, residual=params.residual)


class BicubicParams(Params):
    scale: int = Field(4, ge=1, le=16, description="Upscaling factor.")
    mode: Literal["bicubic", "bilinear", "nearest"] = Field("bicubic", description="Interpolation.")


class Upsampler(nn.Module):
    """``model(lr)`` → interpolated SR image, clamped to [0, 1]. No parameters."""

    def __init__(self, *, scale: int = 4, mode: str = "bicubic") -> None:
        super().__init__()
        self.scale = scale
        self.mode = mode
        self.size_multiple = 1
        self.arch_params = {"scale": scale, "mode": mode}

    def forward(self, lr: Tensor) -> Tensor:
        kwargs = {} if self.mode == "nearest" else {"align_corners": False}
        return F.interpolate(lr, scale_factor=self.scale, mode=self.mode, **kwargs).clamp(0, 1)


def build_bicubic(params: BicubicParams) -> Upsampler:
    return Upsampler(scale=params.scale, mode=params.mode)
