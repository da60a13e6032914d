"""The ``rrdb`` generator's params model, its presets and its factory."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator
from restorekit import PresetParams

from .arch import RRDBNet

PRESETS: dict[str, dict[str, Any]] = {
    "esrgan-x4": {"in_nc": 3, "out_nc": 3, "nf": 64, "nb": 23, "gc": 32, "scale": 4, "variant": "esrgan"},
    "srflow-rrdb": {"in_nc": 3, "out_nc": 3, "nf": 64, "nb": 23, "gc": 32, "scale": 4, "variant": "srflow"},
    "realesrgan-x4plus": {"in_nc": 3, "out_nc": 3, "nf": 64, "nb": 23, "gc": 32, "scale": 4, "variant": "esrgan"},
}
"""Named params sets: ``esrgan-x4`` (ESRGAN / BSRGAN x4), ``srflow-rrdb`` (the RRDB of the SRFlow release, SRFlow
wiring of the long skip), ``realesrgan-x4plus`` (Real-ESRGAN x4plus: ESRGAN wiring)."""


class RRDBParams(PresetParams):
    """Hyper-parameters of the RRDB network (ESRGAN generator); see ``docs/srflow-architecture.md`` §2.

    ``preset`` fills in every field the params do not set (explicit fields win).
    """

    PRESETS = PRESETS

    in_nc: int = Field(3, ge=1, description="Channels of the input image (3 for RGB).")
    out_nc: int = Field(3, ge=1, description="Channels of the output image (3 for RGB).")
    nf: int = Field(64, ge=1, description="Feature channels of the trunk (ESRGAN: 64).")
    nb: int = Field(23, ge=1, description="Number of RRDB blocks in the trunk (ESRGAN: 23).")
    gc: int = Field(32, ge=1, description="Growth channels of each dense block (ESRGAN: 32).")
    scale: Literal[1, 2, 4, 8, 16] = Field(
        4, description="Upscaling factor: 1, 2, 4, 8 or 16 (one nearest-x2 + conv stage per factor 2)."
    )
    variant: Literal["esrgan", "srflow"] = Field(
        "esrgan",
        description="Long skip around the trunk: 'esrgan' F = conv_first(x) + trunk_conv(T) (ESRGAN, BasicSR, "
        "Real-ESRGAN); 'srflow' F = T + trunk_conv(T) (the SRFlow repository). Checkpoints do not record it.",
    )
    pixel_unshuffle: bool = Field(
        False,
        description="Real-ESRGAN x2/x1 layout: the input is pixel-unshuffled by 4/scale and the network "
        "upsamples by 4 (needs scale 1 or 2; LR sizes must be multiples of 4/scale).",
    )
    bicubic_skip: bool = Field(
        False,
        description="Add the bicubic upsampling of the input to the output (a global residual; conv_last starts "
        "at zero, so the untrained network is bicubic). Off for every published checkpoint; the bundled models use it.",
    )
    preset: str | None = Field(
        None, description=f"A named params set that fills unset fields: {', '.join(sorted(PRESETS))}."
    )
    gradient_checkpointing: bool = Field(
        False, description="Recompute the trunk blocks in the backward pass (less memory, slower training)."
    )


    @model_validator(mode="after")
    def _check_unshuffle(self) -> "RRDBParams":
        if self.pixel_unshuffle and self.scale not in (1, 2):
            raise ValueError(f"pixel_unshuffle needs scale 1 or 2, got scale {self.scale}")
        return self

    def arch_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :class:`RRDBNet` these params describe."""
        return {
            "in_nc": self.in_nc, "out_nc": self.out_nc, "nf": self.nf, "nb": self.nb, "gc": self.gc,
            "scale": self.scale, "variant": self.variant, "pixel_unshuffle": self.pixel_unshuffle,
            "bicubic_skip": self.bicubic_skip,
        }


def build_rrdb(params: RRDBParams) -> RRDBNet:
    """Build an :class:`RRDBNet` (random weights) from validated params."""
    net = RRDBNet(**params.arch_kwargs())
    net.gradient_checkpointing = params.gradient_checkpointing
    return net
