"""Which provider a component name resolves to: pins (from the registry files), clashes between plugins, and the
one-cause error when there is none (a mistyped name, a provider turned off or broken, a bad pin)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..components import KINDS, Kind
from ..errors import UserError
from .config import ENV_REGISTRY, RegistryError
from .info import Resolved, did_you_mean, quoted

if TYPE_CHECKING:  # pragma: no cover
    from .manager import PluginRegistry


def resolve(reg: PluginRegistry, kind: Kind, name: str) -> Resolved:
    """What :meth:`PluginRegistry.get` returns or raises (see there)."""
    found = reg.candidates(kind, name)
    pin = reg.pin(kind, name)
    if pin is not None:
        pinned = [r for r in found if r.plugin == pin]
        if pinned:
            return pinned[0]
        key = f"pins.{kind}.{name}"
        raise RegistryError.at(reg.config.origin(key), key, pin_problem(reg, kind, name, pin, found))
    if len(found) > 1:
        raise UserError(
            f"{kind} {name!r} is provided by plugins {quoted(r.plugin for r in found)}; pin one in "
            f"{pin_file(reg)}: [pins.{kind}] {name} = \"<plugin>\""
        )
    if found:
        return found[0]
    raise UserError(missing(reg, kind, name))


def pin_file(reg: PluginRegistry) -> str:
    files = reg.config.user_files
    return files[-1] if files else f"your registry file (restore-run --registry FILE or ${ENV_REGISTRY})"


def pin_problem(reg: PluginRegistry, kind: Kind, name: str, pin: str, found: list[Resolved]) -> str:
    info = reg.plugins.get(pin)
    if info is None:
        return f"no plugin {pin!r} is installed{did_you_mean(pin, reg.plugins)}"
    if info.status == "disabled":
        return f"plugin {pin!r} is {info.reason}"
    if info.status == "broken":
        return f"plugin {pin!r} is broken ({info.reason})"
    others = f" (provided by {quoted(r.plugin for r in found)})" if found else ""
    return f"plugin {pin!r} provides no {kind} {name!r}{others}"


def missing(reg: PluginRegistry, kind: Kind, name: str) -> str:
    """Why ``name`` is not available: a typo first, then a provider turned off or broken."""
    avail = reg.names(kind)
    available = f" (available: {', '.join(avail) or 'none'})"
    known, unknown = [], []  # providers the catalogue names for it; plugins whose components are unknown
    for pname, info in sorted(reg.plugins.items()):
        if info.status == "ok":
            continue
        entry = reg.config.plugins.get(pname)
        if entry is not None and name in entry.provides(kind):
            known.append(info)
        elif entry is None or not any(entry.provides(k) for k in KINDS):
            unknown.append(info)
    if known:
        info = known[0]
        if info.status == "disabled":
            return f"{kind} {name!r} is provided by plugin {info.name!r}, which is {info.reason}"
        return f"{kind} {name!r} is unavailable: plugin {info.name!r} is broken ({info.reason})"
    hint = did_you_mean(name, avail)
    if hint:
        return f"unknown {kind} {name!r}{hint}{available}"
    if unknown:
        states = "turned off" if all(i.status == "disabled" for i in unknown) else "broken or turned off"
        return (f"unknown {kind} {name!r}{available}; plugin(s) {quoted(i.name for i in unknown)} are {states} "
                "and were not asked (restore-run --list-plugins)")
    return f"unknown {kind} {name!r}{available}"
