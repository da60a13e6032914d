"""Hook implementations only: what this plugin offers to restorekit."""

from __future__ import annotations

from typing import Any

from restorekit import GeneratorComponent, LossComponent, ValidatorComponent, hookimpl

from .losses import GradientLoss, GradientLossParams
from .model import BicubicParams, ESPCNParams, build_bicubic, build_espcn
from .validators import MAE, MAEParams


@hookimpl
def restorekit_generators() -> list[GeneratorComponent[Any]]:
    return [
        GeneratorComponent(name="espcn", params=ESPCNParams, build=build_espcn,
                           summary="ESPCN sub-pixel CNN (Shi et al. 2016), learnable, x1-x8 (example plugin)",
                           exportable=True),
        GeneratorComponent(name="bicubic", params=BicubicParams, build=build_bicubic,
                           summary="Learning-free bicubic / bilinear / nearest upsampler (example plugin)"),
    ]


@hookimpl
def restorekit_losses() -> list[LossComponent[Any]]:
    return [LossComponent(name="gradient", params=GradientLossParams, build=GradientLoss,
                          summary="L1/L2 between image gradients of two state keys (example plugin)")]


@hookimpl
def restorekit_validators() -> list[ValidatorComponent[Any]]:
    return [ValidatorComponent(name="mae", params=MAEParams, build=MAE,
                               summary="Mean absolute error of the SR image against HQ (example plugin)")]
