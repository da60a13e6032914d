"""The network (a plain nn.Module) and its params model."""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from restorekit import Params


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


def build(params: BicubicParams) -> Upsampler:
    return Upsampler(scale=params.scale, mode=params.mode)
