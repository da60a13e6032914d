"""The ``[infer]`` table."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ..nonfinite import NAN_LADDER
from .base import Downsampler, PathList, SpecModel


InferMode = Literal["sr", "sample", "restore", "latent_transfer", "interpolate", "feed_through"]
FLOW_MODES = frozenset({"sample", "restore", "latent_transfer", "interpolate", "feed_through"})
"""Inference modes that need a flow network (encode/decode)."""


class TileSpec(SpecModel):
    size: int = Field(ge=8, description="Tile size in LR pixels.")
    overlap: int = Field(8, ge=0, description="Overlap between tiles in LR pixels (blended).")

    @model_validator(mode="after")
    def _overlap(self) -> "TileSpec":
        if self.size <= self.overlap:
            raise ValueError(f"size ({self.size}) must be larger than overlap ({self.overlap})")
        return self


class InferSpec(SpecModel):
    network: str = Field("generator", description="The network used.")
    mode: InferMode = Field("sr", description="sr, sample, restore, latent_transfer, interpolate, feed_through.")
    inputs: PathList = Field(description="Input files, folders (recursive) or globs.")
    output_dir: Path | None = Field(None, description="Default: <run.output_dir>/infer.")
    format: Literal["png", "tiff", "jpg", "webp"] = Field("png", description="Output format.")
    overwrite: bool = Field(False, description="Replace existing outputs.")
    batch_size: int = Field(1, ge=1, description="Same-size images per batch.")
    tile: TileSpec | None = Field(None, description="Tiled inference for large images.")
    temperatures: list[float] = Field(default_factory=lambda: [0.0], description="Flows: temperatures.")
    temperature_map: Path | None = Field(
        None, description="Flows: grayscale image scaling the temperature per pixel."
    )
    samples: int = Field(1, ge=1, description="Flows: samples per image and temperature.")
    nan_ladder: list[float] = Field(
        default_factory=lambda: list(NAN_LADDER),
        description="Flows: temperatures retried, in order, when a decode is not finite.",
    )
    input_is_hr: bool = Field(
        False, description="restore/latent tools: inputs are HR images (LR made by the downsampler)."
    )
    downsampler: Downsampler = Field("bicubic", description="How LR is made when input_is_hr.")
    reference: Path | None = Field(None, description="latent_transfer: the reference image.")
    frames: int = Field(8, ge=2, description="interpolate: frames.")
    interpolation: Literal["linear", "slerp"] = Field("slerp", description="interpolate: path.")
    gif: bool = Field(True, description="interpolate: also write an animated GIF.")

    @field_validator("inputs", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, (str, Path)) else v

    @field_validator("temperatures")
    @classmethod
    def _temperatures(cls, v: list[float]) -> list[float]:
        return check_temperatures(v)

    @field_validator("nan_ladder")
    @classmethod
    def _ladder(cls, v: list[float]) -> list[float]:
        return _finite_non_negative(v)


def check_temperatures(v: list[float]) -> list[float]:
    """At least one temperature, each finite and >= 0, none twice."""
    if not v:
        raise ValueError("give at least one temperature")
    _finite_non_negative(v)
    return no_duplicates(v, "values")


def no_duplicates(v: list[Any], what: str) -> list[Any]:
    """``v`` unchanged, or a ValueError naming the repeated entries (``duplicate <what> [...]``)."""
    dups = sorted({x for x in v if v.count(x) > 1})
    if dups:
        raise ValueError(f"duplicate {what} {dups}")
    return v


def _finite_non_negative(values: list[float]) -> list[float]:
    bad = [t for t in values if not math.isfinite(t) or t < 0]
    if bad:
        raise ValueError(f"must be finite and >= 0 (got {bad[0]})")
    return values
