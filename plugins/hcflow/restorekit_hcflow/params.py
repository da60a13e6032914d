"""The ``hcflow`` generator's params model, presets and factory."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator
from restorekit import PresetParams

from .arch import level_steps
from .model import HCFlowNet

PRESETS: dict[str, dict[str, Any]] = {
    "hcflow-df2k-4x": {
        "scale": 4, "steps_per_level": 26, "cond_steps_per_level": [13, 13], "main_coupling_hidden": 64,
        "cond_coupling_hidden": 64, "cond_rrdb_blocks": [7, 7], "cond_features": 64, "cond_growth": 32, "quant": 64,
    },
    "hcflow-celeba-8x": {
        "scale": 8, "steps_per_level": 26, "cond_steps_per_level": [13, 13, 13], "main_coupling_hidden": 64,
        "cond_coupling_hidden": 64, "cond_rrdb_blocks": [5, 5], "cond_features": 64, "cond_growth": 32, "quant": 256,
    },
}
"""The published HCFlow SR models: ``SR_DF2K_X4_HCFlow{,+,++}.pth`` and ``SR_CelebA_X8_HCFlow{,+,++}.pth`` (the three
variants of each share one architecture; only their training losses differ)."""

DEFAULT_QUANT = {4: 64, 8: 256}
"""The published models' dequantisation bins per scale (not readable from a checkpoint)."""


class HCFlowParams(PresetParams):
    """Hyper-parameters of HCFlow-SR (``docs/hcflow.md`` maps them to the official option keys)."""

    PRESETS = PRESETS

    scale: Literal[4, 8] = Field(4, description="Upscaling factor: 4 (2 levels) or 8 (3 levels), the official wirings.")
    steps_per_level: int | list[int] = Field(
        26, description="Flow steps per level, main and conditional together (flowDownsampler.K); one int or one per level."
    )
    cond_steps_per_level: list[int] | None = Field(
        None, description="Steps inside each level's conditional flow (splitOff.after_flowstep); None: half of each "
        "level's steps, as the published models (13 of 26).",
    )
    main_coupling_hidden: int = Field(64, ge=1, description="Coupling CNN width in the main flow.")
    cond_coupling_hidden: int = Field(64, ge=1, description="Coupling CNN width in the conditional flows.")
    cond_rrdb_blocks: list[int] = Field(
        default_factory=lambda: [7, 7], description="RRDBs in trunk0 and trunk1 of every conditional-feature extractor."
    )
    cond_features: int = Field(64, ge=1, description="Extractor width nf (the conditional feature has 2·nf channels).")
    cond_growth: int = Field(32, ge=1, description="Growth channels of the residual dense blocks.")
    quant: int | None = Field(
        None, ge=1, description="Dequantisation bins (HR + U[0,1)/quant); None: 64 at 4x (DF2K), 256 at 8x (CelebA)."
    )
    preset: str | None = Field(None, description=f"Named params set filling unset fields: {', '.join(PRESETS)}.")

    @model_validator(mode="after")
    def _check(self) -> "HCFlowParams":
        level_steps(self.scale, self.steps_per_level, self.cond_steps_per_level, self.cond_rrdb_blocks)
        return self

    def arch_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :class:`HCFlowNet`, defaults resolved."""
        steps, cond = level_steps(self.scale, self.steps_per_level, self.cond_steps_per_level, self.cond_rrdb_blocks)
        return {
            **self.model_dump(exclude={"preset"}), "steps_per_level": steps, "cond_steps_per_level": cond,
            "quant": self.quant if self.quant is not None else DEFAULT_QUANT[self.scale],
        }


def build_hcflow(params: HCFlowParams) -> HCFlowNet:
    """Build an :class:`HCFlowNet` (random weights, the official initialisation) from validated params."""
    return HCFlowNet(**params.arch_kwargs())


__all__ = ["DEFAULT_QUANT", "PRESETS", "HCFlowParams", "build_hcflow"]
