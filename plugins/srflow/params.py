"""The ``srflow`` generator's params model, presets and factory."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator
from restorekit import PresetParams

from .arch import geometry_error
from .model import SRFlowNet

PRESETS: dict[str, dict[str, Any]] = {
    "srflow-df2k-4x": {"scale": 4, "nf": 64, "nb": 23, "gc": 32, "K": 16, "L": 3, "stack_blocks": [1, 8, 15, 22]},
    "srflow-df2k-8x": {"scale": 8, "nf": 64, "nb": 23, "gc": 32, "K": 16, "L": 4, "stack_blocks": [1, 3, 5, 7]},
    "srflow-celeba-8x": {"scale": 8, "nf": 64, "nb": 8, "gc": 32, "K": 16, "L": 4, "stack_blocks": [1, 3, 5, 7]},
}
"""The published SRFlow models (SRFlow_DF2K_4X.pth, SRFlow_DF2K_8X.pth, SRFlow_CelebA_8X.pth)."""


class SRFlowParams(PresetParams):
    """Hyper-parameters of SRFlow (``docs/srflow-architecture.md`` §12 maps the official option names)."""

    PRESETS = PRESETS

    scale: Literal[2, 4, 8, 16] = Field(4, description="Upscaling factor.")
    in_nc: int = Field(3, ge=1, description="LR image channels.")
    out_nc: int = Field(3, ge=1, description="HR image channels (the flow's input).")
    nf: int = Field(64, ge=1, description="RRDB feature width.")
    nb: int = Field(23, ge=1, description="RRDB trunk blocks.")
    gc: int = Field(32, ge=1, description="RRDB growth channels.")
    K: int = Field(16, ge=1, description="Conditional flow steps per level.")
    L: int = Field(3, ge=1, description="Flow levels (each squeezes by 2).")
    stack_blocks: list[int] = Field(
        default_factory=lambda: [1, 8, 15, 22],
        description="0-based RRDB trunk blocks whose outputs are stacked onto every conditional feature.",
    )
    hidden_channels: int = Field(64, ge=1, description="Width of the coupling networks.")
    additional_flow_no_affine: int = Field(2, ge=0, description="ActNorm + 1x1-conv steps at the start of each level.")
    affine_eps: float = Field(1e-4, gt=0, description="Added to sigmoid(.+2) in every coupling scale.")
    quant: int = Field(32, ge=1, description="Dequantisation level (noise (u-0.5)/quant, logdet -H·W·ln quant).")
    fea_up0: bool = Field(True, description="Provide the LR/2 conditional feature (read by the deepest official level).")
    fea_up_minus1: bool = Field(False, description="Provide the LR/4 conditional feature.")
    split_consume_ratio: float = Field(0.5, gt=0, lt=1, description="Fraction of channels factored out at a split.")
    split_logs_eps: float = Field(0.0, ge=0, description="Added to exp(logs) of the split prior.")
    split_correct_levels: bool = Field(
        False, description="Split at levels 1..L-1 instead of the official 1..L-2."
    )
    skip: Literal["none", "bicubic", "rrdb"] = Field(
        "none",
        description="The flow models HR minus an image of LR (an additive shift: zero log-determinant), added back "
        "when decoding: 'bicubic' its bicubic upsampling, 'rrdb' the conditional RRDB's own SR image; either way the "
        "RRDB gets a bicubic skip too. 'none' (the published models) models HR itself; the bundled model uses 'rrdb'.",
    )
    gradient_checkpointing: bool = Field(False, description="Recompute RRDB blocks and flow steps in backward.")
    preset: str | None = Field(None, description=f"Named params set filling unset fields: {', '.join(PRESETS)}.")


    @model_validator(mode="after")
    def _check(self) -> "SRFlowParams":
        bad = [b for b in self.stack_blocks if not 0 <= b < self.nb]
        if bad:
            raise ValueError(f"stack_blocks {bad} outside the trunk's blocks 0..{self.nb - 1}")
        err = geometry_error(self.scale, self.L, self.fea_up0, self.fea_up_minus1)
        if err:
            raise ValueError(err)
        channels = self.out_nc
        for level in range(1, (self.L - 1 if self.split_correct_levels else self.L - 2) + 1):
            channels *= 4
            consume = int(round(channels * self.split_consume_ratio))
            if not 0 < consume < channels:
                raise ValueError(
                    f"split_consume_ratio {self.split_consume_ratio} factors out {consume} of the {channels} "
                    f"channels at level {level}: a split needs at least one channel on each side"
                )
            channels -= consume
        return self

    def arch_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :class:`SRFlowNet` (everything but ``preset``/``gradient_checkpointing``)."""
        return self.model_dump(exclude={"preset", "gradient_checkpointing"})


def build_srflow(params: SRFlowParams) -> SRFlowNet:
    """Build an :class:`SRFlowNet` (random weights) from validated params."""
    net = SRFlowNet(**params.arch_kwargs())
    net.gradient_checkpointing = params.gradient_checkpointing  # also switches the RRDB's
    return net
