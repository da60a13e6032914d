"""What every spec table shares: the base model, names, seeds, precisions."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


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




Downsampler = Literal["bicubic", "area", "bilinear"]
