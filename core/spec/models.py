"""The ``[run]``, ``[networks.*]``, ``[data.*]`` and ``[validators.*]`` tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from .base import MAX_DEVICE_INDEX, MAX_SEED, Downsampler, Mode, PathList, Precision, SpecModel


# run




class RunSpec(SpecModel):
    mode: Mode = Field(description="What to do: train, eval (validators over data.val) or infer.")
    seed: int = Field(
        0, ge=0, le=MAX_SEED, description="Seed of every random generator (torch, numpy, python, data order)."
    )
    device: str = Field("auto", description="auto (CUDA when available), cpu, cuda or cuda:N.")
    precision: Precision = Field("fp32", description="Compute precision; bf16/fp16 use autocast.")
    output_dir: Path = Field(Path("runs/restorekit"), description="Where checkpoints, logs and images go.")
    deterministic: bool = Field(False, description="Ask torch for deterministic algorithms.")
    compile: bool = Field(
        False, description="Try torch.compile on the inference network; kept only where it is measurably faster "
        "(one line on stderr where the platform cannot compile)."
    )
    tf32: bool = Field(
        False, description="CUDA: allow TF32 in matrix products and convolutions (faster on Ampere and newer, "
        "about 1e-3 relative precision)."
    )
    max_pixels: int = Field(
        100_000_000,
        ge=1,
        description="Images with more pixels (width x height, read from the file header before decoding) are "
        "refused: reported and skipped, never decoded (decompression bombs).",
    )

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v in ("auto", "cpu", "cuda"):
            return v
        if v.startswith("cuda:") and v[5:].isascii() and v[5:].isdigit():
            if len(v) - 5 > 3 or int(v[5:]) > MAX_DEVICE_INDEX:
                raise ValueError(f"device index {v[5:]} is out of range (0..{MAX_DEVICE_INDEX})")
            return v
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {v!r}")



# networks




class UnfreezeSpec(SpecModel):
    """When a frozen network (``trainable = false``) starts training. Exactly one rule."""

    after_steps: int | None = Field(None, ge=0, description="Unfreeze after this many optimizer steps.")
    after_fraction: float | None = Field(
        None, ge=0.0, le=1.0, description="Unfreeze after this fraction of train.steps."
    )
    metric: str | None = Field(
        None,
        description="Unfreeze when this validation metric (e.g. 'gaussian.nll') stops improving.",
    )
    patience: int = Field(3, ge=1, description="Validations without improvement before unfreezing.")
    metric_mode: Literal["min", "max"] = Field("min", description="Whether lower or higher is better.")
    min_delta: float = Field(0.0, ge=0.0, description="Improvement smaller than this does not count.")

    @model_validator(mode="after")
    def _one_rule(self) -> "UnfreezeSpec":
        rules = [r for r in (self.after_steps, self.after_fraction, self.metric) if r is not None]
        if len(rules) != 1:
            raise ValueError("give exactly one of after_steps, after_fraction, metric")
        return self


class NetworkSpec(SpecModel):
    component: str | None = Field(
        None, description="Generator component name, e.g. 'rrdb' or 'srflow' (default: the model's)."
    )
    preset: str | None = Field(None, description="Named params set offered by the component.")
    params: dict[str, Any] = Field(
        default_factory=dict, description="The component's params (validated by its own model)."
    )
    checkpoint: Path | None = Field(None, description="Weights to load (.pth, .safetensors).")
    model: str | None = Field(
        None,
        description="A model of the catalogue instead of a checkpoint, e.g. 'srflow-df2k-4x' (restore-run "
        "--list-models); downloaded once into the cache.",
    )
    strict: bool = Field(True, description="Every checkpoint tensor must match a parameter.")
    trainable: bool = Field(True, description="Whether the optimizer updates this network from step 0.")
    unfreeze: UnfreezeSpec | None = Field(None, description="Rule that switches trainable on.")
    init_submodules: dict[str, Path] = Field(
        default_factory=dict,
        description="Load other checkpoints into sub-modules after `checkpoint`: {RRDB = \"rrdb.safetensors\"} puts a "
        "standalone RRDB (any layout an installed generator detects) into SRFlow's conditional RRDB (stage 1 -> 2).",
    )
    trainable_only: list[str] | None = Field(
        None,
        description="Train only parameters whose names start with one of these prefixes "
        "(e.g. ['flowUpsamplerNet'] for SRFlow stage 2); the rest follow `unfreeze`.",
    )

    @model_validator(mode="after")
    def _weights(self) -> "NetworkSpec":
        if self.model is not None and self.checkpoint is not None:
            raise ValueError("give either model (a catalogue name) or checkpoint (a file), not both (on the command "
                             "line, --set of one removes the other)")
        if self.component is None and self.model is None:
            raise ValueError("component is required (or give model, a catalogue name)")
        return self



# data




class Range(SpecModel):
    p: float = Field(0.0, ge=0.0, le=1.0, description="Probability of applying the corruption.")
    low: float = Field(description="Lower end of the uniform range.")
    high: float = Field(description="Upper end of the uniform range.")

    @model_validator(mode="after")
    def _ordered(self) -> "Range":
        if self.high < self.low:
            raise ValueError("high must be >= low")
        return self


class CorruptSpec(SpecModel):
    """Corruptions applied to the LQ image (restoration training), deterministic under the run seed."""

    blur: Range | None = Field(None, description="Gaussian blur, sigma in pixels.")
    noise: Range | None = Field(None, description="Gaussian noise, sigma in [0,1] units.")
    jpeg: Range | None = Field(None, description="JPEG re-encoding, quality 1..100.")


class DatasetSpec(SpecModel):
    hq: PathList = Field(description="HQ image folders (recursive), files or globs.")
    lq: Path | None = Field(None, description="Paired LQ folder (same relative names) instead of a downsampler.")
    scale: int | None = Field(None, ge=1, description="LR = HR / scale. Default: the generator's scale.")
    target_size: int = Field(96, ge=8, description="Square HR crop size for training.")
    crop: int = Field(0, ge=0, description="Validation: centre crop of this HR size (0 = full images).")
    downsampler: Downsampler = Field("bicubic", description="How LR is made from HR (antialiased).")
    batch_size: int = Field(4, ge=1, description="Images per batch (per process).")
    workers: int = Field(0, ge=0, description="DataLoader worker processes.")
    small_images: Literal["skip", "pad"] = Field("skip", description="Images smaller than the crop.")
    flip: bool = Field(True, description="Random horizontal flips.")
    rot90: bool = Field(True, description="Random 90-degree rotations.")
    max_images: int | None = Field(None, ge=1, description="Use at most this many images.")
    corrupt: CorruptSpec = Field(default_factory=CorruptSpec, description="LQ corruptions.")

    @field_validator("hq", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, (str, Path)) else v


class DataSpec(SpecModel):
    train: DatasetSpec | None = Field(None, description="Training images.")
    val: DatasetSpec | None = Field(None, description="Validation images (validators, eval mode).")



# validators


# validators


class ValidatorSpec(SpecModel):
    component: str = Field(description="Validator component name, e.g. 'psnr' or 'gaussian_distance'.")
    network: str = Field("generator", description="The network being validated.")
    params: dict[str, Any] = Field(default_factory=dict, description="The validator's params.")
