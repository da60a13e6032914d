"""``restore-run --list-models``: one record per entry (size, cached or not, licence); the CLI prints them as JSON or
a table (:mod:`restorekit.commands.listings`)."""

from __future__ import annotations

from typing import Any, Mapping

from .cache import is_cached, model_path
from .entries import ModelEntry


def _human(n: float) -> str:
    """Bytes as ``812 B``, ``1.6 MB``, ``158 MB`` (decimal units)."""
    unit = "B"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            break
        n /= 1000
    return f"{n:.1f} {unit}" if unit != "B" and n < 10 else f"{n:.0f} {unit}"


def size_of(entry: ModelEntry) -> tuple[int | None, str]:
    """(bytes, text): the file's size when present, else the published size, else ~4 bytes per parameter."""
    path = model_path(entry)
    if path.is_file():
        n = path.stat().st_size
        return n, _human(n)
    if entry.size is not None and entry.member is None:
        return entry.size, _human(entry.size)
    if entry.parameters is not None:
        return None, "~" + _human(entry.parameters * 4)
    return None, "?"


def listing(entries: Mapping[str, ModelEntry]) -> list[dict[str, Any]]:
    """One record per entry for ``restore-run --list-models`` (``--json`` prints these)."""
    rows = []
    for name in sorted(entries):
        e = entries[name]
        nbytes, text = size_of(e)
        rows.append({
            "name": name, "component": e.component, "preset": e.preset, "scale": e.scale, "parameters": e.parameters,
            "size": text, "bytes": nbytes, "cached": is_cached(e), "bundled": e.is_bundled,
            "path": str(model_path(e)), "licence": e.licence, "description": e.description, "urls": list(e.urls),
            "member": e.member, "sha256": e.sha256,
        })
    return rows
