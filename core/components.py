"""What a hook implementation returns: named components (params model + factory).

Every component declares a pydantic model for its parameters (``extra="forbid"``) and a ``build`` factory
that turns validated params into the object the pipeline uses:

=============  =====================================================  ==========================================
kind           ``build`` signature                                      returns
=============  =====================================================  ==========================================
generator      ``build(params)``                                       an ``nn.Module`` (see :class:`SRModel`)
injector       ``build(params, networks)``                             an :class:`Injector`
loss           ``build(params)``                                       a :class:`Loss`
validator      ``build(params)``                                       a :class:`Validator`
=============  =====================================================  ==========================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import (
    Any,
    Callable,
    ClassVar,
    Generic,
    Iterable,
    Literal,
    Mapping,
    NamedTuple,
    Protocol,
    Sequence,
    TypeVar,
    runtime_checkable,
)

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor

Kind = Literal["generator", "injector", "loss", "validator"]
KINDS: tuple[Kind, ...] = ("generator", "injector", "loss", "validator")
StateDict = Mapping[str, Tensor]
P = TypeVar("P", bound=BaseModel)


class Params(BaseModel):
    """Base class for component params: unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid")


class NoParams(Params):
    """For components without parameters."""


class PresetParams(Params):
    """Params with named presets: ``preset = "name"`` fills every field the data leaves unset.

    Subclasses set the class variable ``PRESETS`` (name → field values). The same table usually goes into
    ``GeneratorComponent.presets`` so that ``networks.<name>.preset`` and ``restorekit.load(preset=)`` see it.
    """

    PRESETS: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    preset: str | None = Field(None, description="A named params set that fills the fields left unset.")

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and data.get("preset") is not None:
            name = data["preset"]
            if name not in cls.PRESETS:
                raise ValueError(f"unknown preset {name!r} (available: {', '.join(sorted(cls.PRESETS))})")
            return {**cls.PRESETS[name], **data}
        return data


@dataclass(frozen=True, kw_only=True)
class Component(Generic[P]):
    """A named, typed building block offered by a plugin.

    ``name`` is what a pipeline spec writes as ``component``; ``params`` validates the spec's ``params``
    table; ``build`` makes the runtime object; ``summary`` is one line for ``restore-run --list-plugins``.
    """

    name: str
    params: type[P]
    build: Callable[..., Any]
    summary: str = ""


@dataclass(frozen=True, kw_only=True)
class GeneratorComponent(Component[P]):
    """A generator network. ``build(params) -> nn.Module``.

    Optional checkpoint support (used by :func:`restorekit.load` and ``networks.<name>.checkpoint``):

    * ``detect(state_dict) -> bool``: does this (canonicalised) state dict belong to this component?
    * ``params_from_state_dict(state_dict) -> dict``: the params that can be read off the tensors;
      the user's explicit params override them, and a conflict is reported by ``convert_state_dict``.
    * ``convert_state_dict(state_dict, params) -> dict``: keys renamed to the built module's own names,
      raising :class:`restorekit.UserError` naming the parameter when the file does not fit ``params``.
    * ``presets``: named params sets (``preset = "srflow-df2k-4x"`` in a spec, or ``load(..., preset=)``).

    ``flow``: whether ``build`` returns a :class:`FlowModel` (temperatures, samples, latents), so that tools can
    tell without building the network; None: found out by building it on the meta device. The conformance kit
    checks that it matches the built module.
    """

    flow: bool | None = None
    exportable: bool = False
    """A claim that :func:`restorekit.export_model` exports this generator's networks (``forward``; a flow's
    ``sample`` and ``mean`` graphs, see :class:`restorekit.Exportable`) to graphs equal to eager; the conformance
    kit checks it. Export is tried for any generator; this only makes it part of the plugin's contract."""
    detect: Callable[[StateDict], bool] | None = None
    params_from_state_dict: Callable[[StateDict], dict[str, Any]] | None = None
    convert_state_dict: Callable[[StateDict, Any], dict[str, Tensor]] | None = None
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    switches: "Switches" = field(default_factory=lambda: Switches())


@dataclass(frozen=True)
class Switches:
    """The fast paths a generator offers: names of boolean attributes of its modules (off as built) that compute
    the same function with less memory or arithmetic. restorekit sets ``inference`` for ``restore-run`` and
    ``restorekit.load(fast=True)``, ``training`` when it trains the network; a name missing from both is never
    touched (the plugin's own opt-in). ``frozen_in_training``: the parameter-name prefixes the generator's usual
    schedule keeps frozen (SRFlow's conditional RRDB in stage 2), which ``restore-run --benchmark --train``
    freezes for its ``train`` row."""

    inference: tuple[str, ...] = ()
    training: tuple[str, ...] = ()
    frozen_in_training: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class InjectorComponent(Component[P]):
    """``build(params, networks: Mapping[str, nn.Module]) -> Injector``.

    ``reads(params)`` / ``writes(params)``: the state keys the injector reads and writes with these params.
    Declaring them lets ``restore-run --dry-run`` check a pipeline's state-key flow before training starts
    (every key read is ``hq``, ``lq`` or written earlier); without them that check stops at this injector.
    """

    reads: Callable[[Any], Iterable[str]] | None = None
    writes: Callable[[Any], Iterable[str]] | None = None


@dataclass(frozen=True, kw_only=True)
class LossComponent(Component[P]):
    """``build(params) -> Loss``. ``reads(params)``: the state keys the loss reads (checked by ``--dry-run``)."""

    reads: Callable[[Any], Iterable[str]] | None = None


@dataclass(frozen=True, kw_only=True)
class ValidatorComponent(Component[P]):
    """``build(params) -> Validator``."""


# ----------------------------------------------------------------------------------------------------
# Runtime protocols


@runtime_checkable
class SRModel(Protocol):
    """What a generator module offers: ``model(lr)`` maps a float (B,C,h,w) batch in [0,1] to SR.

    ``scale``: the upscaling factor. ``size_multiple``: the LR height/width must be a multiple of it
    (inference pads by reflection and crops back). ``arch_params``: the params (a plain dict) that rebuild
    the module; restorekit writes them next to the weights.
    """

    scale: int
    size_multiple: int

    def __call__(self, lr: Tensor) -> Tensor: ...


class EncodeResult(NamedTuple):
    """``latents``: list of tensors (split latents first, top-level z last); ``nll`` in bits per pixel
    (the official SRFlow/HCFlow definition: divided by H·W, not 3·H·W; shape (B,)), including every term of the
    flow's training objective (HCFlow: its LR term); ``logdet`` (B,).

    ``flow_lr``: for a flow whose bijection maps HR to an LR image *and* latents (HCFlow), the LR the flow itself
    produced; ``decode(flow_lr, latents)`` inverts ``encode`` exactly, while ``decode(lr, latents)`` puts the given
    LR in that slot. None for a flow that only conditions on the LR (SRFlow): ``decode(lr, latents)`` is the
    inverse."""

    latents: list[Tensor]
    nll: Tensor
    logdet: Tensor
    flow_lr: Tensor | None = None


@runtime_checkable
class FlowModel(SRModel, Protocol):
    """A conditional normalising flow (e.g. SRFlow): invertible between HR images and latents given LR.

    ``temperature`` may be a float or a (B,1,H,W) / (1,1,H,W) map in HR resolution, resized per level. Without
    ``latents``, ``decode`` draws them with :func:`restorekit.sample_latents` (what ``restore-run`` does too).
    ``cond``: what :meth:`conditional_features` returned for this ``lr`` (None: compute it), so that several
    latent sets of one LR image share one feature computation. ``isinstance(model, FlowModel)`` is how restorekit
    tells a flow.
    """

    def encode(self, hr: Tensor, lr: Tensor, add_noise: bool = False) -> EncodeResult: ...

    def decode(
        self,
        lr: Tensor,
        latents: Sequence[Tensor] | None = None,
        temperature: float | Tensor = 0.0,
        generator: torch.Generator | None = None,
        *,
        cond: Any = None,
    ) -> Tensor: ...

    def conditional_features(self, lr: Tensor) -> Any:
        """The LR features ``decode(..., cond=)`` reuses (None when nothing is worth keeping)."""
        ...

    def latent_shapes(self, lr_shape: Sequence[int]) -> list[tuple[int, ...]]:
        """Per-sample latent shapes ``(C, h, w)`` for an LR batch of ``lr_shape``, in encode order."""
        ...


State = dict[str, Any]
"""The training/eval state: named tensors (``hq``, ``lq``, then whatever injectors write)."""


class Injector(Protocol):
    """Reads named entries of the state, returns new named entries (merged into the state)."""

    def __call__(self, state: State, step: int) -> dict[str, Any]: ...


class Loss(Protocol):
    """Returns a scalar tensor computed from the state (the trainer multiplies it by the spec's ``weight``)."""

    def __call__(self, state: State) -> Tensor: ...


class Sample(NamedTuple):
    """One validation item: ``lq`` (1,C,h,w) and ``hq`` (1,C,H,W) in [0,1], and a name for reports."""

    name: str
    lq: Tensor
    hq: Tensor


@dataclass
class ValidationContext:
    """What a validator gets besides the model: device, scale, step, a folder for its pictures, and which outputs
    to judge: ``samples`` draws per image at ``temperature`` (flows; sample ``i`` drawn with seed ``seed + i`` as
    ``restore-run`` does, see :func:`restorekit.draw_outputs`)."""

    device: torch.device
    scale: int
    step: int = 0
    output_dir: Path | None = None
    temperature: float = 0.0
    samples: int = 1
    seed: int = 0


class ValidationResult(NamedTuple):
    """``metrics``: averaged named numbers; ``per_image``: one dict per sample (``name`` + metrics)."""

    metrics: dict[str, float]
    per_image: list[dict[str, Any]]


class Validator(Protocol):
    """Measures a model over samples."""

    def __call__(
        self, model: Any, samples: Iterable[Sample], ctx: ValidationContext
    ) -> ValidationResult: ...


class SRSamples(NamedTuple):
    """Everything a validator may judge of one image at one temperature: ``lq`` (1,C,h,w), ``hq`` (1,C,H,W) and
    ``srs``, the N outputs (each (1,C,H,W), clamped to [0, 1]; one for a network that is not a flow)."""

    name: str
    lq: Tensor
    hq: Tensor
    srs: Sequence[Tensor]
    temperature: float = 0.0


@runtime_checkable
class SampleScorer(Protocol):
    """A validator that judges outputs instead of running the model: ``score(item, ctx)`` returns one image's
    numbers (the dataset value of each is the mean over images). Validation (training, eval) draws the outputs once
    and hands the same :class:`SRSamples` to every scorer; ``restore-run evaluate`` hands it outputs read from files."""

    def score(self, item: SRSamples, ctx: ValidationContext) -> dict[str, float]: ...
