"""The spec described: JSON Schema (``restore-run --schema``) and the Markdown field reference."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel

from .evaluation import EvalSpec
from .inference import InferSpec, TileSpec
from .models import CorruptSpec, DatasetSpec, NetworkSpec, Range, RunSpec, UnfreezeSpec, ValidatorSpec
from .pipeline import PipelineSpec
from .training import InjectorSpec, LossSpec, OptimizerSpec, ScheduleSpec, StepSpec, TrainSpec


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
        ("[eval]", EvalSpec),
    ]

    def type_name(ann: Any) -> str:
        text = str(ann) if typing.get_origin(ann) is not None else getattr(ann, "__name__", str(ann))
        text = re.sub(r"restorekit\.spec\.(\w+\.)*", "", text)  # the models live in submodules of restorekit.spec
        for junk in ("typing.", "pathlib.", "<class '", "'>"):
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
