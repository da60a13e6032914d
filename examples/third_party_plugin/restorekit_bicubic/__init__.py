"""A learning-free upsampler, packaged as a restorekit plugin."""

from .model import BicubicParams, Upsampler, build

__all__ = ["BicubicParams", "Upsampler", "build"]
