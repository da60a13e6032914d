"""Tensors inside nested outputs: tuples, named tuples, lists and dicts of them (what networks and injectors
return)."""

from __future__ import annotations

from typing import Any, Callable

from torch import Tensor


def map_tensors(fn: Callable[[Tensor], Any], value: Any) -> Any:
    """``value`` with ``fn`` applied to every tensor inside it (tuples, named tuples, lists and dicts rebuilt with
    the same types; anything else kept as it is)."""
    if isinstance(value, Tensor):
        return fn(value)
    if isinstance(value, (list, tuple)):
        items = (map_tensors(fn, v) for v in value)
        return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)
    if isinstance(value, dict):
        return {k: map_tensors(fn, v) for k, v in value.items()}
    return value


__all__ = ["map_tensors"]
