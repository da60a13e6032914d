"""The ``[eval]`` table: the temperature sweep, the generators and the validators of an evaluation
(``run.mode = "eval"``, or after training when the table is present in ``run.mode = "train"``)."""

from __future__ import annotations

from pydantic import Field, field_validator

from .base import MAX_SEED, SpecModel
from .inference import check_temperatures, no_duplicates


class EvalSpec(SpecModel):
    temperatures: list[float] = Field(
        default_factory=lambda: [0.0], description="Flows: every validator judges the outputs at each temperature."
    )
    samples: int = Field(1, ge=1, le=1000, description="Flows: outputs per image and temperature (one at 0).")
    seed: int | None = Field(
        None, ge=0, le=MAX_SEED, description="Sample i is drawn with seed + i, as restore-run does; unset: run.seed."
    )
    generators: list[str] = Field(
        default_factory=list,
        description="Generators compared in one table: [networks] names, generator files or catalogue names; "
        "unset: each validator's own network.",
    )
    validators: list[str] | None = Field(
        None,
        min_length=1,
        description="The [validators] this evaluation runs (names); unset: all. In train mode the ones named here "
        "run only in the evaluation after training, not in training validation.",
    )

    @field_validator("temperatures")
    @classmethod
    def _temperatures(cls, v: list[float]) -> list[float]:
        return check_temperatures(v)

    @field_validator("generators")
    @classmethod
    def _generators(cls, v: list[str]) -> list[str]:
        if any(not g.strip() for g in v):
            raise ValueError("a generator name is empty")
        return no_duplicates(v, "generators")

    @field_validator("validators")
    @classmethod
    def _validators(cls, v: list[str] | None) -> list[str] | None:
        return no_duplicates(v, "validators") if v is not None else None
