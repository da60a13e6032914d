"""restorekit-espcn: an example restorekit plugin.

* generator ``espcn``: ESPCN (Shi et al., CVPR 2016, "Real-Time Single Image and Video Super-Resolution Using an
  Efficient Sub-Pixel Convolutional Neural Network"), a small learnable sub-pixel CNN;
* generator ``bicubic``: a learning-free bicubic / bilinear / nearest upsampler (a baseline);
* loss ``gradient``: L1 distance between the image gradients (edges) of two state entries;
* validator ``mae``: mean absolute error of the SR image against HQ.
"""

from .losses import GradientLoss, GradientLossParams
from .model import ESPCN, BicubicParams, ESPCNParams, Upsampler, build_bicubic, build_espcn
from .validators import MAE, MAEParams

__all__ = [
    "ESPCN",
    "MAE",
    "BicubicParams",
    "ESPCNParams",
    "GradientLoss",
    "GradientLossParams",
    "MAEParams",
    "Upsampler",
    "build_bicubic",
    "build_espcn",
]
