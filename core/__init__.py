"""restorekit: plugin-based image restoration and super-resolution.

Public API (everything else is internal):

* :func:`load` — a generator from a checkpoint (official SRFlow/RRDB/ESRGAN/BasicSR files or restorekit's);
* :func:`load_spec`, :func:`make_plan`, :func:`run` — the pipeline (spec → plan → run);
* :class:`PluginRegistry` — plugins from the ``restorekit.plugins`` entry points;
* hook markers and component types for plugin authors: :data:`hookimpl`, :class:`GeneratorComponent`,
  :class:`InjectorComponent`, :class:`LossComponent`, :class:`ValidatorComponent`, :class:`Params`;
* runtime protocols: :class:`SRModel`, :class:`FlowModel`, :class:`EncodeResult`, :class:`Sample`,
  :class:`ValidationContext`, :class:`ValidationResult`;
* :class:`UserError`, :func:`read_state_dict`, :func:`save_generator`.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from .api import load
from .checkpoint import read_state_dict, save_generator
from .components import (
    Component,
    EncodeResult,
    FlowModel,
    GeneratorComponent,
    InjectorComponent,
    LossComponent,
    Params,
    Sample,
    SRModel,
    ValidationContext,
    ValidationResult,
    ValidatorComponent,
)
from .errors import UserError
from .hookspecs import hookimpl
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
    "Component",
    "EncodeResult",
    "FlowModel",
    "GeneratorComponent",
    "InjectorComponent",
    "LossComponent",
    "Params",
    "PipelineSpec",
    "Plan",
    "PluginRegistry",
    "SRModel",
    "Sample",
    "UserError",
    "ValidationContext",
    "ValidationResult",
    "ValidatorComponent",
    "__version__",
    "hookimpl",
    "load",
    "load_spec",
    "make_plan",
    "read_state_dict",
    "run",
    "save_generator",
]
