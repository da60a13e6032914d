"""The pipeline spec: pydantic models of ``pipeline.toml``, ``--set`` overrides and error formatting.

The spec is pure data: it knows field names and types, never plugins. Each component's ``params`` stay a
raw table here and are validated at plan time by that component's own params model.

Modules: :mod:`.base` (the base model, names), :mod:`.models` (``[run]``, ``[networks.*]``, ``[data.*]``,
``[validators.*]``), :mod:`.training` (``[steps.*]``, ``[train]``), :mod:`.inference` (``[infer]``),
:mod:`.pipeline` (:class:`PipelineSpec`), :mod:`.loading` (files, overrides, errors), :mod:`.reference`
(JSON Schema, Markdown reference). Import from ``restorekit.spec``.
"""

from __future__ import annotations

from .base import (
    MAX_DEVICE_INDEX,
    MAX_SEED,
    NAME_PATTERN,
    Downsampler,
    Mode,
    PathList,
    Precision,
    SpecModel,
    check_names,
)
from .evaluation import EvalSpec
from .inference import FLOW_MODES, InferMode, InferSpec, TileSpec
from .loading import (
    apply_overrides,
    did_you_mean,
    load_spec,
    parse_override,
    read_toml,
    resolve_paths,
    spec_from_dict,
    validation_error,
)
from .models import CorruptSpec, DataSpec, DatasetSpec, NetworkSpec, Range, RunSpec, UnfreezeSpec, ValidatorSpec
from .pipeline import PipelineSpec
from .reference import json_schema, reference_markdown
from .training import InjectorSpec, LossSpec, OptimizerSpec, Schedule, ScheduleSpec, StepSpec, TrainSpec

__all__ = [
    "FLOW_MODES",
    "MAX_DEVICE_INDEX",
    "MAX_SEED",
    "NAME_PATTERN",
    "CorruptSpec",
    "DataSpec",
    "DatasetSpec",
    "Downsampler",
    "InferMode",
    "EvalSpec",
    "InferSpec",
    "InjectorSpec",
    "LossSpec",
    "Mode",
    "NetworkSpec",
    "OptimizerSpec",
    "PathList",
    "PipelineSpec",
    "Precision",
    "Range",
    "RunSpec",
    "Schedule",
    "ScheduleSpec",
    "SpecModel",
    "StepSpec",
    "TileSpec",
    "TrainSpec",
    "UnfreezeSpec",
    "ValidatorSpec",
    "apply_overrides",
    "check_names",
    "did_you_mean",
    "json_schema",
    "load_spec",
    "parse_override",
    "read_toml",
    "reference_markdown",
    "resolve_paths",
    "spec_from_dict",
    "validation_error",
]
