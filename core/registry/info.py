"""What the registry knows about plugins and components: :class:`PluginInfo` (status, reason, what it provides),
:class:`Resolved` (a component with its plugin), and the short texts messages about them are made of."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Literal

from ..components import Component, Kind


@dataclass
class PluginInfo:
    name: str
    distribution: str | None = None
    version: str | None = None
    status: Literal["ok", "broken", "disabled"] = "ok"
    reason: str = ""
    provides: dict[Kind, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Resolved:
    """A component found in the registry, with the plugin that provides it."""

    kind: Kind
    component: Component[Any]
    plugin: str
    version: str | None



def did_you_mean(word: str, options: Iterable[str]) -> str:
    from ..spec import did_you_mean

    return did_you_mean(word, list(options))


def quoted(names: Iterable[str]) -> str:
    items = sorted(repr(n) for n in names)
    return " and ".join(items) if len(items) < 3 else ", ".join(items[:-1]) + " and " + items[-1]
