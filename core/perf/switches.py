"""Module switches: the attributes a generator declares in its :class:`~restorekit.Switches` (off as built), which
restorekit switches on for inference or training — each the same function, computed with less memory or
arithmetic. The core knows no names: they come from the component."""

from __future__ import annotations

from typing import Iterable

from torch import nn

from ..components import Switches


def set_switches(model: nn.Module, names: Iterable[str], enabled: bool = True) -> int:
    """Set every attribute of ``names`` that a module of ``model`` has to ``enabled``; returns how many modules
    took one."""
    names = tuple(names)
    count = 0
    for m in model.modules():
        found = [name for name in names if hasattr(m, name)]
        for name in found:
            setattr(m, name, enabled)
        count += bool(found)
    return count


def fast_inference(model: nn.Module, switches: Switches, enabled: bool = True) -> int:
    """Switch the generator's declared inference fast paths (``switches.inference``) on or off; returns how many
    modules took one."""
    return set_switches(model, switches.inference, enabled)


def lean_training(model: nn.Module, switches: Switches, enabled: bool = True) -> int:
    """Switch the generator's declared training fast paths (``switches.training``) on or off; returns how many
    modules took one."""
    return set_switches(model, switches.training, enabled)


__all__ = ["fast_inference", "lean_training", "set_switches"]
