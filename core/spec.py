"""The pipeline spec: pydantic models of ``pipeline.toml``, ``--set`` overrides and error formatting.

The spec is pure data: it knows field names and types, never plugins. Each component's ``params`` stay a
raw table here and are validated at plan time by that component's own params model.
"""

from __future__ import annotations

import difflib
import math
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping, Sequence

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import UserError

Mode = Literal["train", "eval", "infer"]
MAX_SEED = 2**63 - 1  # seeds (plus sample and rank offsets) stay inside torch's 64-bit generator seeds
MAX_DEVICE_INDEX = 127  # torch keeps device indices in 8 bits
NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def check_names(names: Any, what: str) -> Any:
    """Names of networks, steps, injectors, losses and validators are identifiers: they become file names
    (``<network>.safetensors``) and dotted ``--set`` keys, so ``../x`` or ``a.b`` can never be one."""
    for name in names:
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            raise ValueError(
                f"{what} name {name!r} is not an identifier (letters, digits and _, not starting with a digit)"
            )
    return names
Precision = Literal["fp32", "bf16", "fp16"]
PathList = Annotated[list[Path], Field(min_length=1)]


class SpecModel(BaseModel):
    """Base of every spec table: unknown keys are errors, values are frozen after validation."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# ----------------------------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------------------
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
            raise ValueError("give either model (a catalogue name) or checkpoint (a file), not both")
        if self.component is None and self.model is None:
            raise ValueError("component is required (or give model, a catalogue name)")
        return self


# ----------------------------------------------------------------------------------------------------
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


Downsampler = Literal["bicubic", "area", "bilinear"]


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


# ----------------------------------------------------------------------------------------------------
# steps: injectors and losses over a state dict


class Schedule(SpecModel):
    """When an injector or loss runs: every N steps, and only within [after, before)."""

    every: int = Field(1, ge=1, description="Run every N optimizer steps.")
    after: int = Field(0, ge=0, description="Run from this step on.")
    before: int | None = Field(None, ge=1, description="Stop running at this step.")


class InjectorSpec(Schedule):
    component: str = Field(description="Injector component name, e.g. 'generator'.")
    params: dict[str, Any] = Field(default_factory=dict, description="The injector's params.")


class LossSpec(Schedule):
    component: str = Field(description="Loss component name, e.g. 'pixel' or 'direct'.")
    weight: float = Field(1.0, description="Multiplies the loss.")
    params: dict[str, Any] = Field(default_factory=dict, description="The loss's params.")


class OptimizerSpec(SpecModel):
    kind: Literal["adam", "adamw"] = Field("adam", description="Adam or AdamW.")
    lr: float = Field(1e-4, gt=0, description="Learning rate.")
    betas: tuple[float, float] = Field((0.9, 0.99), description="Adam betas.")
    weight_decay: float = Field(0.0, ge=0, description="Weight decay.")


class StepSpec(Schedule):
    """One optimizer step: the injectors run in order, the losses are summed and back-propagated.

    ``every``/``after``/``before`` schedule the whole step; ``only`` restricts which parameters it updates, so the
    three SRFlow stages can be written as three steps (RRDB on L1, flow with the RRDB frozen, everything).
    """

    networks: list[str] = Field(min_length=1, description="Networks this step optimizes.")
    only: list[str] | None = Field(
        None,
        description="Update only parameters whose names start with one of these prefixes "
        "(e.g. ['RRDB.'] or ['flowUpsamplerNet.']); default: all trainable parameters.",
    )
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec, description="Optimizer per network.")
    injectors: dict[str, InjectorSpec] = Field(default_factory=dict, description="In order of the file.")
    losses: dict[str, LossSpec] = Field(min_length=1, description="Summed into the step's loss.")

    @field_validator("injectors", "losses")
    @classmethod
    def _names(cls, v: dict[str, Any], info: Any) -> dict[str, Any]:
        return check_names(v, info.field_name[:-1])


# ----------------------------------------------------------------------------------------------------
# train


class ScheduleSpec(SpecModel):
    kind: Literal["constant", "multistep", "cosine"] = Field("constant", description="LR schedule.")
    milestones: list[float] = Field(
        default_factory=list,
        description="multistep: absolute steps (>= 1) or fractions of train.steps (< 1).",
    )
    gamma: float = Field(0.5, gt=0, description="multistep: LR factor at each milestone.")
    warmup: int = Field(0, ge=0, description="Linear warmup steps.")
    min_lr: float = Field(0.0, ge=0, description="cosine: final LR.")

    @field_validator("milestones")
    @classmethod
    def _milestones(cls, v: list[float]) -> list[float]:
        bad = [m for m in v if not math.isfinite(m) or m < 0]
        if bad:
            raise ValueError(f"{bad[0]} is negative or not finite")
        return v


class TrainSpec(SpecModel):
    steps: int = Field(ge=1, description="Total optimizer steps.")
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec, description="LR schedule.")
    accumulate: int = Field(1, ge=1, description="Batches per optimizer step (gradient accumulation).")
    clip_grad: float | None = Field(None, gt=0, description="Clip the gradient norm to this value.")
    gradient_checkpointing: bool = Field(False, description="Trade compute for memory in the networks.")
    ema: float | None = Field(None, gt=0, lt=1, description="EMA decay of weights (e.g. 0.999).")
    val_every: int = Field(0, ge=0, description="Validate every N steps (0 = only at the end).")
    log_every: int = Field(10, ge=1, description="Log scalars every N steps.")
    image_every: int = Field(0, ge=0, description="Write image grids every N steps (0 = never).")
    image_temperatures: list[float] = Field(
        default_factory=lambda: [0.0, 0.8], description="Temperatures shown in image grids (flows)."
    )
    checkpoint_every: int = Field(0, ge=0, description="Save every N steps (0 = only at the end).")
    keep_last: int = Field(2, ge=1, description="Checkpoints kept, besides the best.")
    best_metric: str | None = Field(None, description="Validation metric that picks the best checkpoint.")
    best_mode: Literal["min", "max"] = Field("min", description="Lower or higher is better.")
    max_nonfinite: int = Field(10, ge=1, description="Stop after this many non-finite losses in a row.")
    tensorboard: bool = Field(True, description="Write TensorBoard event files.")
    resume: Literal["auto", "never"] | Path = Field(
        "never", description="'auto': continue from the newest checkpoint; or a checkpoint folder."
    )
    save_generator: list[str] = Field(
        default_factory=list,
        description="Networks written as standalone generator files at the end (loadable by restorekit.load).",
    )

    @field_validator("save_generator")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        return check_names(v, "network")


# ----------------------------------------------------------------------------------------------------
# validators


class ValidatorSpec(SpecModel):
    component: str = Field(description="Validator component name, e.g. 'psnr' or 'gaussian_distance'.")
    network: str = Field("generator", description="The network being validated.")
    params: dict[str, Any] = Field(default_factory=dict, description="The validator's params.")


# ----------------------------------------------------------------------------------------------------
# infer


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
        default_factory=lambda: [0.5, 0.0],
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
        if not v:
            raise ValueError("give at least one temperature")
        _finite_non_negative(v)
        dups = sorted({t for t in v if v.count(t) > 1})
        if dups:
            raise ValueError(f"duplicate values {dups}")
        return v

    @field_validator("nan_ladder")
    @classmethod
    def _ladder(cls, v: list[float]) -> list[float]:
        return _finite_non_negative(v)


def _finite_non_negative(values: list[float]) -> list[float]:
    bad = [t for t in values if not math.isfinite(t) or t < 0]
    if bad:
        raise ValueError(f"must be finite and >= 0 (got {bad[0]})")
    return values


# ----------------------------------------------------------------------------------------------------
# the whole pipeline


class PipelineSpec(SpecModel):
    run: RunSpec = Field(description="Mode, seed, device, precision, output folder.")
    networks: dict[str, NetworkSpec] = Field(min_length=1, description="Named networks.")
    data: DataSpec = Field(default_factory=DataSpec, description="Training and validation data.")
    steps: dict[str, StepSpec] = Field(default_factory=dict, description="Optimizer steps (train).")
    train: TrainSpec | None = Field(None, description="Training loop settings.")
    validators: dict[str, ValidatorSpec] = Field(default_factory=dict, description="Named validators.")
    infer: InferSpec | None = Field(None, description="Inference settings.")

    @field_validator("networks", "steps", "validators")
    @classmethod
    def _names(cls, v: dict[str, Any], info: Any) -> dict[str, Any]:
        return check_names(v, info.field_name[:-1])

    @model_validator(mode="after")
    def _mode_sections(self) -> "PipelineSpec":
        mode = self.run.mode
        if mode == "train":
            if self.train is None:
                raise ValueError("run.mode = 'train' needs a [train] table")
            if not self.steps:
                raise ValueError("run.mode = 'train' needs at least one [steps.<name>] table")
            if self.data.train is None:
                raise ValueError("run.mode = 'train' needs a [data.train] table")
        if mode == "infer" and self.infer is None:
            raise ValueError("run.mode = 'infer' needs an [infer] table")
        if mode == "eval" and (self.data.val is None or not self.validators):
            raise ValueError("run.mode = 'eval' needs [data.val] and at least one [validators.<name>]")
        names = set(self.networks)
        for sname, step in self.steps.items():
            for net in step.networks:
                if net not in names:
                    raise ValueError(f"steps.{sname}.networks: unknown network {net!r}{_avail(names)}")
        for vname, val in self.validators.items():
            if val.network not in names:
                raise ValueError(f"validators.{vname}.network: unknown network {val.network!r}{_avail(names)}")
        if self.infer is not None and self.infer.network not in names:
            raise ValueError(f"infer.network: unknown network {self.infer.network!r}{_avail(names)}")
        if self.infer is not None and self.infer.mode == "latent_transfer" and self.infer.reference is None:
            raise ValueError("infer.reference: latent_transfer needs a reference image")
        has_val = self.data.val is not None and bool(self.validators)
        if self.train is not None:
            for net in self.train.save_generator:
                if net not in names:
                    raise ValueError(f"train.save_generator: unknown network {net!r}{_avail(names)}")
            if self.train.best_metric is not None and not has_val and mode == "train":
                raise ValueError("train.best_metric needs [data.val] and at least one [validators.<name>]")
        for name, net_spec in self.networks.items():
            if net_spec.unfreeze is not None and net_spec.unfreeze.metric is not None and not has_val and mode == "train":
                raise ValueError(f"networks.{name}.unfreeze.metric needs [data.val] and at least one [validators.<name>]")
        return self


def _avail(names: set[str]) -> str:
    return f" (available: {', '.join(sorted(names))})"


# ----------------------------------------------------------------------------------------------------
# loading, overrides, errors


def did_you_mean(word: str, options: Any) -> str:
    match = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _unwrap(ann: Any, typing: Any) -> Any:
    origin = typing.get_origin(ann)
    args = typing.get_args(ann)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        for a in args:
            r = _unwrap(a, typing)
            if isinstance(r, tuple) or (isinstance(r, type) and issubclass(r, BaseModel)):
                return r
        return None
    if origin is dict:
        return ("dict", _unwrap(args[1], typing))
    return ann


def _walk_dicts(loc: tuple[Any, ...], model: type[BaseModel]) -> type[BaseModel] | None:
    """Resolve the owner model of the last element, skipping dict keys."""
    import typing

    current: Any = model
    i = 0
    while i < len(loc) - 1:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(str(loc[i]))
        if field is None:
            return None
        nxt = _unwrap(field.annotation, typing)
        if isinstance(nxt, tuple):
            nxt = nxt[1]
            i += 1  # skip the dict key
        current = nxt
        i += 1
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def format_validation_error(
    exc: ValidationError, source: str, prefix: str = "", model: type[BaseModel] | None = None
) -> str:
    """One line for the first error: ``file: dotted.path: message``; unknown keys get a suggestion."""
    err = exc.errors(include_url=False)[0]
    loc = tuple(err.get("loc", ()))
    path = ".".join(str(p) for p in loc)
    where = ".".join(p for p in (prefix, path) if p)
    msg = err.get("msg", "invalid value")
    if err.get("type") == "extra_forbidden" and loc:
        owner = _walk_dicts(loc, model) if model is not None else None
        hint = did_you_mean(str(loc[-1]), owner.model_fields) if owner is not None else ""
        msg = f"unknown field{hint}"
    elif "input" in err and err.get("type") not in ("missing",) and not isinstance(err["input"], (dict, list)):
        msg = f"{msg} (got {err['input']!r})"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    extra = len(exc.errors()) - 1
    more = f" [+{extra} more error{'s' if extra > 1 else ''}]" if extra > 0 else ""
    return f"{source}: {where + ': ' if where else ''}{msg}{more}"


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` → (['a','b','c'], value parsed as a TOML literal, else as a plain string)."""
    if "=" not in item:
        raise UserError(f"--set {item}: expected dotted.key=value")
    key, raw = item.split("=", 1)
    parts = [p.strip() for p in key.strip().split(".")]
    if not all(parts):
        raise UserError(f"--set {item}: empty key part")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        parts, value = parse_override(item)
        node = data
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise UserError(f"--set {item}: {p} is not a table")
            node = nxt
        node[parts[-1]] = value
    return data


def read_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: TOML syntax error: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read ({exc})") from None


def load_spec(path: str | Path, overrides: list[str] | None = None) -> PipelineSpec:
    """Read, override and validate a pipeline file; relative paths resolve against its folder (those given in
    ``overrides`` against the working directory)."""
    p = Path(path)
    data = apply_overrides(read_toml(p), list(overrides or []))
    spec = spec_from_dict(data, source=str(p))
    overridden = [".".join(parse_override(o)[0]) for o in overrides or []]
    return resolve_paths(spec, p.parent, overridden)


def spec_from_dict(
    data: Mapping[str, Any], *, source: str = "pipeline", base_dir: Path | None = None
) -> PipelineSpec:
    try:
        spec = PipelineSpec.model_validate(dict(data))
    except ValidationError as exc:
        raise UserError(format_validation_error(exc, source, model=PipelineSpec)) from None
    return resolve_paths(spec, base_dir) if base_dir is not None else spec


def resolve_paths(spec: PipelineSpec, base: Path, overridden: Sequence[str] = ()) -> PipelineSpec:
    """Relative paths in the spec are relative to the pipeline file's folder (globs included); paths given with
    ``--set`` (dotted keys in ``overridden``) are relative to the working directory, as on any command line."""

    def fix(p: Path | None, key: str) -> Path | None:
        if p is None or p.is_absolute():
            return p
        from_cli = any(key == o or key.startswith(o + ".") for o in overridden)
        return (Path.cwd() if from_cli else base) / p

    def fix_ds(ds: DatasetSpec | None, key: str) -> DatasetSpec | None:
        if ds is None:
            return None
        return ds.model_copy(update={"hq": [fix(h, f"{key}.hq") for h in ds.hq], "lq": fix(ds.lq, f"{key}.lq")})

    networks = {
        n: net.model_copy(
            update={
                "checkpoint": fix(net.checkpoint, f"networks.{n}.checkpoint"),
                "init_submodules": {
                    k: fix(v, f"networks.{n}.init_submodules.{k}") for k, v in net.init_submodules.items()
                },
            }
        )
        for n, net in spec.networks.items()
    }
    data = spec.data.model_copy(
        update={"train": fix_ds(spec.data.train, "data.train"), "val": fix_ds(spec.data.val, "data.val")}
    )
    update: dict[str, Any] = {
        "run": spec.run.model_copy(update={"output_dir": fix(spec.run.output_dir, "run.output_dir")}),
        "networks": networks,
        "data": data,
    }
    if spec.infer is not None:
        i = spec.infer
        update["infer"] = i.model_copy(
            update={
                "inputs": [fix(p, "infer.inputs") for p in i.inputs],
                "output_dir": fix(i.output_dir, "infer.output_dir"),
                "reference": fix(i.reference, "infer.reference"),
                "temperature_map": fix(i.temperature_map, "infer.temperature_map"),
            }
        )
    if spec.train is not None and isinstance(spec.train.resume, Path):
        update["train"] = spec.train.model_copy(update={"resume": fix(spec.train.resume, "train.resume")})
    return spec.model_copy(update=update)


def json_schema() -> dict[str, Any]:
    """JSON Schema of the pipeline spec (``restore-run --schema``)."""
    return PipelineSpec.model_json_schema()


def reference_markdown() -> str:
    """The field reference of every spec table, as Markdown (docs/pipeline-spec.md is checked against it)."""
    import typing

    tables: list[tuple[str, type[BaseModel]]] = [
        ("[run]", RunSpec),
        ("[networks.<name>]", NetworkSpec),
        ("[networks.<name>.unfreeze]", UnfreezeSpec),
        ("[data.train] / [data.val]", DatasetSpec),
        ("[data.<split>.corrupt] (blur, noise, jpeg)", CorruptSpec),
        ("corruption range (p, low, high)", Range),
        ("[steps.<name>]", StepSpec),
        ("[steps.<name>.optimizer]", OptimizerSpec),
        ("[steps.<name>.injectors.<name>]", InjectorSpec),
        ("[steps.<name>.losses.<name>]", LossSpec),
        ("[train]", TrainSpec),
        ("[train.schedule]", ScheduleSpec),
        ("[validators.<name>]", ValidatorSpec),
        ("[infer]", InferSpec),
        ("[infer.tile]", TileSpec),
    ]

    def type_name(ann: Any) -> str:
        text = str(ann) if typing.get_origin(ann) is not None else getattr(ann, "__name__", str(ann))
        for junk in ("typing.", "pathlib.", "restorekit.spec.", "<class '", "'>"):
            text = text.replace(junk, "")
        return text.replace("|", "\\|")

    lines: list[str] = []
    for title, model in tables:
        lines += [f"### `{title}`", "", "| field | type | default | meaning |", "|---|---|---|---|"]
        for name, field in model.model_fields.items():
            if field.is_required():
                default = "required"
            elif field.default_factory is not None:
                default = f"`{field.default_factory()}`"  # type: ignore[call-arg]
            else:
                default = f"`{field.default}`"
            lines.append(f"| `{name}` | {type_name(field.annotation)} | {default} | {field.description or ''} |")
        lines.append("")
    return "\n".join(lines)
