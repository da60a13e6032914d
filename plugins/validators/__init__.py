"""restorekit_validators: validators for restorekit (PSNR, SSIM, and the flow's Gaussian distance).

The fidelity metrics are exported here; the ``gaussian_distance`` validator lives in
:mod:`restorekit_validators.gaussian` and is not imported by this package, so the fidelity metrics work alone.
"""

from .fidelity import PSNR, SSIM, FidelityParams, PSNRParams, SSIMParams, psnr, rgb_to_y, ssim, super_resolve

__all__ = [
    "PSNR",
    "SSIM",
    "FidelityParams",
    "PSNRParams",
    "SSIMParams",
    "psnr",
    "rgb_to_y",
    "ssim",
    "super_resolve",
]
