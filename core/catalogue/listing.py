"""``restore-run --list-models``: one record per entry (size, cached or not, licence), as JSON or a table."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from .cache import ENV_HOME, cache_dir, is_cached, model_path
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


def format_listing(rows: Sequence[Mapping[str, Any]]) -> str:
    head = ("name", "scale", "size", "cached", "licence", "description")
    table = [head] + [
        (r["name"], f"x{r['scale']}", r["size"], ("bundled" if r["bundled"] else "yes") if r["cached"] else "no",
         r["licence"], r["description"])
        for r in rows
    ]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(head) - 1)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row[:-1], widths)) + "  " + str(row[-1]) for row in table]
    lines.append(f"cache: {cache_dir() / 'models'} (set ${ENV_HOME} to move it)")
    return "\n".join(line.rstrip() for line in lines)
