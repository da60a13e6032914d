"""Hook implementations only: what this plugin offers to restorekit."""

from __future__ import annotations

from restorekit import GeneratorComponent, hookimpl

from .model import BicubicParams, build


@hookimpl
def restorekit_generators() -> list[GeneratorComponent]:
    return [
        GeneratorComponent(
            name="bicubic",
            params=BicubicParams,
            build=build,
            summary="Learning-free bicubic / bilinear / nearest upsampler (example plugin)",
        )
    ]
