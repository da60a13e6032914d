"""Hook implementations of the ``validators`` plugin (entry point ``validators = "restorekit_validators.plugin"``)."""

from __future__ import annotations

from typing import Any

from restorekit import ValidatorComponent, hookimpl

from .fidelity import PSNR, SSIM, PSNRParams, SSIMParams
from .gaussian import GaussianDistanceParams, build_gaussian_distance


@hookimpl
def restorekit_validators() -> list[ValidatorComponent[Any]]:
    return [
        ValidatorComponent(
            name="psnr", params=PSNRParams, build=PSNR,
            summary="PSNR (dB) of the clamped SR image against HQ; RGB or Y channel, border crop",
        ),
        ValidatorComponent(
            name="ssim", params=SSIMParams, build=SSIM,
            summary="SSIM (Gaussian 11x11, sigma 1.5) of the clamped SR image against HQ; RGB or Y channel",
        ),
        ValidatorComponent(
            name="gaussian_distance", params=GaussianDistanceParams, build=build_gaussian_distance,
            summary="Distance of a flow's latents of the validation images from the standard Gaussian",
        ),
    ]
