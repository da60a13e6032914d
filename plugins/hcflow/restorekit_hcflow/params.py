"""The ``hcflow`` generator's params model, presets and factory."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator
from restorekit import PresetParams

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
        levels = {4: 2, 8: 3}[self.scale]
        steps = [self.steps_per_level] * levels if isinstance(self.steps_per_level, int) else self.steps_per_level
        if len(steps) != levels or any(k < 1 for k in steps):
            raise ValueError(f"steps_per_level: scale {self.scale} needs {levels} positive values, got {steps}")
        cond = self.cond_steps_per_level if self.cond_steps_per_level is not None else [k // 2 for k in steps]
        if len(cond) != levels or any(not 0 <= c <= k for c, k in zip(cond, steps)):
            raise ValueError(
                f"cond_steps_per_level: scale {self.scale} needs {levels} values between 0 and steps_per_level "
                f"{steps}, got {cond}"
            )
        if len(self.cond_rrdb_blocks) != 2 or any(b < 0 for b in self.cond_rrdb_blocks):
            raise ValueError(f"cond_rrdb_blocks must be [trunk0, trunk1] (two counts >= 0), got {self.cond_rrdb_blocks}")
        return self

    def arch_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :class:`HCFlowNet`, defaults resolved."""
        levels = {4: 2, 8: 3}[self.scale]
        steps = [self.steps_per_level] * levels if isinstance(self.steps_per_level, int) else list(self.steps_per_level)
        return {
            "scale": self.scale,
            "steps_per_level": steps,
            "cond_steps_per_level": self.cond_steps_per_level or [k // 2 for k in steps],
            "main_coupling_hidden": self.main_coupling_hidden,
            "cond_coupling_hidden": self.cond_coupling_hidden,
            "cond_rrdb_blocks": list(self.cond_rrdb_blocks),
            "cond_features": self.cond_features,
            "cond_growth": self.cond_growth,
            "quant": self.quant if self.quant is not None else DEFAULT_QUANT[self.scale],
        }



def build_hcflow(params: HCFlowParams) -> HCFlowNet:
    """Build an :class:`HCFlowNet` (random weights, the official initialisation) from validated params."""
    return HCFlowNet(**params.arch_kwargs())


__all__ = ["DEFAULT_QUANT", "PRESETS", "HCFlowParams", "build_hcflow"]
