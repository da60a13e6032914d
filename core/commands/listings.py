"""What the listing flags print: ``--list-plugins``, ``--options KIND NAME`` and ``--list-models`` as text, from the
data :mod:`restorekit.plugin_info` and :mod:`restorekit.catalogue` return (``--json`` prints that data as it is)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping


def plugins_text(report: Mapping[str, Any]) -> str:
    """``restore-run --list-plugins``: each plugin with its own components, then the clashes and the pins."""
    lines = []
    for p in report["plugins"]:
        src = f"{p['distribution'] or '?'} {p['version'] or ''}".strip()
        lines.append(f"{p['name']}  [{p['status']}]  ({src})")
        if p["status"] != "ok":
            lines.append(f"    {p['reason']}")
            continue
        for row in p["details"]:
            summary = f" - {row['summary']}" if row["summary"] else ""
            others = [x for x in row["providers"] if x != p["name"]]
            mark = {
                "active": "",
                "pinned": f"  [pinned; also from {', '.join(others)}]",
                "shadowed": f"  [not used: pinned to {row['pin']}]",
                "conflict": f"  [conflict: also from {', '.join(others)}; not pinned]",
            }[row["state"]]
            lines.append(f"    {row['kind']:<9} {row['name']}{summary}{mark}")
    for kind, names in report["conflicts"].items():
        for name, plugins in names.items():
            lines.append(
                f"conflict: {kind} {name!r} provided by {', '.join(plugins)} "
                f"(pin one: [pins.{kind}] {name} = \"<plugin>\" in a registry file, restore-run --registry FILE)"
            )
    for kind, pins in report["pins"].items():
        for name, plugin in pins.items():
            lines.append(f"pin: {kind} {name!r} -> {plugin}")
    return "\n".join(lines)


def options_text(report: Mapping[str, Any]) -> str:
    """``restore-run --options KIND NAME``: one line per param (type, default, bounds), its description below."""
    summary = f" - {report['summary']}" if report["summary"] else ""
    lines = [f"{report['kind']} {report['name']} (plugin {report['plugin']}){summary}"]
    if not report["params"]:
        lines.append("  (no params)")
    for row in report["params"]:
        default = "required" if row["required"] else f"default {json.dumps(row['default'], default=str)}"
        bounds = f", {row['bounds']}" if row["bounds"] else ""
        lines.append(f"  {row['name']}: {row['type']} ({default}{bounds})")
        if row["description"]:
            lines.append(f"      {row['description']}")
    if report["presets"]:
        lines.append(f"presets: {', '.join(report['presets'])}")
    return "\n".join(lines)


def models_text(report: Mapping[str, Any]) -> str:
    """``restore-run --list-models``: a table (name, scale, size, cached, licence, description), then the cache."""
    from ..catalogue import ENV_HOME

    head = ("name", "scale", "size", "cached", "licence", "description")
    table = [head] + [
        (r["name"], f"x{r['scale']}", r["size"], ("bundled" if r["bundled"] else "yes") if r["cached"] else "no",
         r["licence"], r["description"])
        for r in report["models"]
    ]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(head) - 1)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row[:-1], widths)) + "  " + str(row[-1]) for row in table]
    lines.append(f"cache: {Path(report['cache']) / 'models'} (set ${ENV_HOME} to move it)")
    return "\n".join(line.rstrip() for line in lines)
