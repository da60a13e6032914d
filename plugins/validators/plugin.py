"""Hook implementations of the ``validators`` plugin (entry point ``validators = "restorekit_validators.plugin"``)."""

from __future__ import annotations

from typing import Any

from restorekit import ValidatorComponent, hookimpl

from .fidelity import PSNR, SSIM, PSNRParams, SSIMParams
from .gaussian import GaussianDistanceParams, build_gaussian_distance
from .likelihood import NLLParams, build_nll
from .lpips import LPIPSParams, build_lpips
from .srspace import DiversityParams, LRPSNRParams, build_diversity, build_lr_psnr


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
        ValidatorComponent(
            name="lr_psnr", params=LRPSNRParams, build=build_lr_psnr,
            summary="LR consistency (NTIRE 2021): PSNR of each output downscaled by MATLAB bicubic, uint8, RGB",
        ),
        ValidatorComponent(
            name="lpips", params=LPIPSParams, build=build_lpips,
            summary="Spatial LPIPS (AlexNet, v0.1 linear layers) of each output against the ground truth",
        ),
        ValidatorComponent(
            name="diversity", params=DiversityParams, build=build_diversity,
            summary="NTIRE 2021 diversity score of an image's N outputs (per-pixel LPIPS or L1 distance)",
        ),
        ValidatorComponent(
            name="nll", params=NLLParams, build=build_nll,
            summary="A flow's negative log-likelihood of held-out HR given LR, bits per dimension",
        ),
    ]
