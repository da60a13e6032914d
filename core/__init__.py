"""restorekit: plugin-based image restoration and super-resolution.

Public API (everything else is internal):

* :func:`load` — a generator from a checkpoint (official SRFlow/RRDB/ESRGAN/BasicSR files or restorekit's); its
  ``model(lr)`` warns once (:class:`InputRangeWarning`) when ``lr`` is far outside [0, 1] (an image in 0..255);
* :func:`load_spec`, :func:`make_plan`, :func:`run` — the pipeline (spec → plan → run);
* :class:`PluginRegistry` — plugins from the ``restorekit.plugins`` entry points;
* hook markers and component types for plugin authors: :data:`hookimpl`, :class:`GeneratorComponent`,
  :class:`InjectorComponent`, :class:`LossComponent`, :class:`ValidatorComponent`, :class:`Params`, and
  :class:`Switches` (the fast paths a generator declares);
* params bases :class:`Params`, :class:`NoParams`, :class:`PresetParams`; type aliases :data:`StateDict`,
  :data:`State`, :data:`Kind`;
* runtime protocols: :class:`SRModel`, :class:`FlowModel`, :class:`EncodeResult`, :class:`Injector`, :class:`Loss`,
  :class:`Validator`, :class:`Sample`, :class:`ValidationContext`, :class:`ValidationResult`;
* validators that judge a network's N outputs per image (SR-space metrics): :class:`SRSamples`,
  :class:`SampleScorer`, the base :class:`ScoringValidator`, :func:`draw_outputs` (the draws ``restore-run``
  makes for one seed), :func:`score_images`, :func:`mean_rows`, :func:`judging` (eval mode and no gradients while
  a validator looks at a network);
* :func:`imresize_uint8`: MATLAB ``imresize`` (antialiased bicubic) of a uint8 image, rounded as MATLAB does;
* :func:`state_get` (a state entry, or a one-line error listing the keys present);
* latent tools for flows: :func:`sample_latents`, :func:`scale_latents`, :func:`temperature_at`,
  :func:`normalize_latents`, :func:`transfer_latents`, :func:`interpolate_latents`, :func:`zeros_like_latents`,
  :func:`latent_norm`, :func:`as_temperature` (types :data:`Latents`, :data:`Temperature`);
* the NaN ladder (``restore-run``'s and the flows' Python API's): :func:`decode_finite`, :func:`first_finite`,
  :func:`ladder_below`, :data:`NAN_LADDER`, :class:`NonFiniteDecodeWarning`;
* :mod:`metrics` (``restorekit.metrics``): :func:`~restorekit.metrics.psnr`, :func:`~restorekit.metrics.ssim`,
  :func:`~restorekit.metrics.rgb_to_y`, as SR papers measure;
* :func:`run_padded` (``model(lr)`` for any LR size: pad, run, crop) and :func:`pad_to_multiple`;
* :class:`UserError`, :class:`PluginWarning`, :func:`read_state_dict`, :func:`save_generator`;
* deployment: :func:`export_model` (a generator to ONNX or a ``torch.export`` program, checked against eager, with a
  JSON sidecar), :class:`ExportedModel` (run one), :class:`ExportGraph` and the :class:`Exportable` protocol (what a
  generator offers for export; flows build their own graphs);
* :class:`ModelEntry`: a model catalogue entry (what a plugin's ``restorekit_catalogue`` hook returns);
* :mod:`restorekit.testing`: the conformance kit plugin authors call from their tests (imported on demand).

Plugins import only from here (``from restorekit import X``), never from ``restorekit.<submodule>``.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from .api import InputRangeWarning, load
from .catalogue import ModelEntry
from .builtins import state_get
from .checkpoint import read_state_dict, save_generator
from .components import (
    Component,
    EncodeResult,
    FlowModel,
    GeneratorComponent,
    Injector,
    InjectorComponent,
    Kind,
    Loss,
    LossComponent,
    NoParams,
    Params,
    PresetParams,
    Sample,
    SampleScorer,
    SRModel,
    SRSamples,
    State,
    StateDict,
    Switches,
    ValidationContext,
    ValidationResult,
    Validator,
    ValidatorComponent,
)
from .errors import PluginWarning, UserError
from .export import ExportGraph, Exportable, ExportedModel, export_model
from .hookspecs import hookimpl
from .latents import (
    Latents,
    Temperature,
    as_temperature,
    interpolate_latents,
    latent_norm,
    normalize_latents,
    sample_latents,
    scale_latents,
    temperature_at,
    transfer_latents,
    zeros_like_latents,
)
from . import metrics
from .data.resize import imresize_uint8
from .scoring import ScoringValidator, draw_outputs, judging, mean_rows, score_images
from .nonfinite import NAN_LADDER, NonFiniteDecodeWarning, decode_finite, first_finite, ladder_below
from .padding import pad_to_multiple, run_padded
from .plan import Plan, make_plan
from .registry import PluginRegistry
from .spec import PipelineSpec, load_spec

try:
    __version__ = version("restorekit")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"


def run(pipeline: str | Path, overrides: list[str] | None = None, *, registry: PluginRegistry | None = None) -> int:
    """Run a pipeline file as ``restore-run`` does; returns the exit status (0 ok, 1 partial failure)."""
    from .runner import execute

    spec = load_spec(pipeline, overrides)
    return execute(make_plan(spec, registry or PluginRegistry.load(), source=str(pipeline)))


__all__ = [
    "score_images",
    "judging",
    "mean_rows",
    "imresize_uint8",
    "draw_outputs",
    "ScoringValidator",
    "SampleScorer",
    "SRSamples",
    "Component",
    "EncodeResult",
    "ExportGraph",
    "Exportable",
    "ExportedModel",
    "FlowModel",
    "GeneratorComponent",
    "Injector",
    "InjectorComponent",
    "InputRangeWarning",
    "Kind",
    "NAN_LADDER",
    "Latents",
    "Loss",
    "LossComponent",
    "ModelEntry",
    "NoParams",
    "NonFiniteDecodeWarning",
    "Params",
    "PipelineSpec",
    "Plan",
    "PluginRegistry",
    "PluginWarning",
    "PresetParams",
    "SRModel",
    "Sample",
    "State",
    "StateDict",
    "Switches",
    "Temperature",
    "UserError",
    "ValidationContext",
    "ValidationResult",
    "Validator",
    "ValidatorComponent",
    "__version__",
    "as_temperature",
    "decode_finite",
    "first_finite",
    "hookimpl",
    "export_model",
    "interpolate_latents",
    "ladder_below",
    "latent_norm",
    "load",
    "load_spec",
    "make_plan",
    "metrics",
    "normalize_latents",
    "pad_to_multiple",
    "read_state_dict",
    "run",
    "run_padded",
    "sample_latents",
    "save_generator",
    "scale_latents",
    "state_get",
    "temperature_at",
    "transfer_latents",
    "zeros_like_latents",
]
