"""What the installed plugins offer, for people: ``--list-plugins``, ``--options KIND NAME`` and the plugin part of
``--schema``.

Each plugin is shown with its *own* components (in a clash, the other provider's summary never appears under it),
together with the pin that decides the clash.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from .components import KINDS, Kind
from .errors import UserError
from .registry import PluginRegistry

# ----------------------------------------------------------------------------------------------------
# --list-plugins


def _component_rows(reg: PluginRegistry, plugin: str, kind: Kind, names: list[str]) -> list[dict[str, Any]]:
    rows = []
    for name in names:
        own = reg.provided_by(kind, name, plugin)
        providers = sorted(r.plugin for r in reg.candidates(kind, name))
        pin = reg.pin(kind, name)
        if len(providers) < 2:
            state = "active"
        elif pin is None:
            state = "conflict"
        else:
            state = "pinned" if pin == plugin else "shadowed"
        rows.append({
            "kind": kind,
            "name": name,
            "summary": own.component.summary if own is not None else "",
            "state": state,
            "providers": providers,
            "pin": pin,
        })
    return rows


def plugins_report(reg: PluginRegistry) -> dict[str, Any]:
    """The data of ``restore-run --list-plugins --json``."""
    plugins = []
    for info in reg.plugin_infos():
        details = [row for kind in KINDS for row in _component_rows(reg, info.name, kind, info.provides.get(kind, []))]
        plugins.append({
            "name": info.name,
            "distribution": info.distribution,
            "version": info.version,
            "status": info.status,
            "reason": info.reason,
            "components": {k: v for k, v in info.provides.items()},
            "details": details,
        })
    pins = {k: dict(v) for k, v in reg.config.pins.items() if v}
    return {"plugins": plugins, "conflicts": reg.conflicts(), "pins": pins, "warnings": list(reg.warnings)}


def format_plugins(report: dict[str, Any]) -> list[str]:
    """The text of ``restore-run --list-plugins``."""
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
    return lines


def list_plugins(reg: PluginRegistry, *, as_json: bool) -> int:
    report = plugins_report(reg)
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        print("\n".join(format_plugins(report)))
    return 0


# ----------------------------------------------------------------------------------------------------
# --options KIND NAME


def _type_name(schema: dict[str, Any]) -> str:
    if "enum" in schema:
        return " | ".join(json.dumps(v) for v in schema["enum"])
    if "const" in schema:
        return json.dumps(schema["const"])
    if "anyOf" in schema:
        return " | ".join(_type_name(s) for s in schema["anyOf"])
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    kind = schema.get("type", "any")
    if kind == "array":
        if "prefixItems" in schema:
            return "[" + ", ".join(_type_name(s) for s in schema["prefixItems"]) + "]"
        return f"list[{_type_name(schema.get('items', {}))}]"
    if kind == "object":
        extra = schema.get("additionalProperties")
        return f"table[{_type_name(extra)}]" if isinstance(extra, dict) else "table"
    return {"integer": "int", "number": "float", "string": "str", "boolean": "bool", "null": "none"}.get(kind, kind)


def _bounds(schema: dict[str, Any]) -> str:
    marks = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<",
             "minLength": "len >=", "maxLength": "len <="}
    return ", ".join(f"{m} {schema[k]}" for k, m in marks.items() if k in schema)


def params_table(model: type[BaseModel]) -> list[dict[str, Any]]:
    """One row per field of a params model: name, type, default (or ``required``), bounds, description."""
    schema = model.model_json_schema()
    props = schema.get("properties", {})
    rows = []
    for name, field in model.model_fields.items():
        prop = props.get(field.alias or name, {})
        if field.is_required():
            default: Any = "required"
        elif field.default_factory is not None:
            default = field.default_factory()  # type: ignore[call-arg]
        else:
            default = None if field.default is PydanticUndefined else field.default
        rows.append({
            "name": name,
            "type": _type_name(prop),
            "default": default,
            "required": field.is_required(),
            "bounds": _bounds(prop),
            "description": field.description or prop.get("description", ""),
        })
    return rows


def component_options(reg: PluginRegistry, kind: str, name: str, *, as_json: bool) -> int:
    """Print a component's params with types, defaults and descriptions (``restore-run --options KIND NAME``)."""
    if kind not in KINDS:
        raise UserError(f"--options: unknown component kind {kind!r} (kinds: {', '.join(KINDS)})")
    resolved = reg.get(kind, name)  # type: ignore[arg-type]
    comp = resolved.component
    rows = params_table(comp.params)
    presets = sorted(getattr(comp, "presets", {}) or {})
    if as_json:
        print(json.dumps({"kind": kind, "name": name, "plugin": resolved.plugin, "summary": comp.summary,
                          "params": rows, "presets": presets}, indent=2, default=str))
        return 0
    print(f"{kind} {name} (plugin {resolved.plugin}){' - ' + comp.summary if comp.summary else ''}")
    if not rows:
        print("  (no params)")
    for row in rows:
        default = "required" if row["required"] else f"default {json.dumps(row['default'], default=str)}"
        bounds = f", {row['bounds']}" if row["bounds"] else ""
        print(f"  {row['name']}: {row['type']} ({default}{bounds})")
        if row["description"]:
            print(f"      {row['description']}")
    if presets:
        print(f"presets: {', '.join(presets)}")
    return 0


# ----------------------------------------------------------------------------------------------------
# --schema with the plugins' params

SPEC_TABLES: dict[Kind, str] = {
    "generator": "NetworkSpec",
    "injector": "InjectorSpec",
    "loss": "LossSpec",
    "validator": "ValidatorSpec",
}


def _prefixed(schema: dict[str, Any], prefix: str) -> dict[str, Any]:
    """``schema`` with every ``#/$defs/X`` reference renamed to ``#/$defs/<prefix>X``."""

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: (f"#/$defs/{prefix}{v.rsplit('/', 1)[-1]}" if k == "$ref" and isinstance(v, str) else walk(v))
                    for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)  # type: ignore[no-any-return]


def schema_with_plugins(base: dict[str, Any], reg: PluginRegistry) -> dict[str, Any]:
    """The pipeline schema plus each component's params model.

    Every component's params go under ``$defs`` as ``<kind>.<name>`` (their own sub-models as
    ``<kind>.<name>.<Model>``). The tables that name a component (``NetworkSpec``, ``InjectorSpec``, ``LossSpec``,
    ``ValidatorSpec``) get one ``if component == name then params: $ref`` rule per component (a discriminated union
    on ``component``), so an editor checks ``params`` against the chosen component. Required fields stay optional
    there, since a preset or a checkpoint may supply them. The spec's own validation is unchanged.
    """
    out = copy.deepcopy(base)
    defs = out.setdefault("$defs", {})
    for kind in KINDS:
        rules = []
        for name in reg.names(kind):  # type: ignore[arg-type]
            try:
                resolved = reg.get(kind, name)  # type: ignore[arg-type]
            except UserError:
                continue  # a clash without a pin: no single params model to show
            key = f"{kind}.{name}"
            schema = _prefixed(resolved.component.params.model_json_schema(), f"{key}.")
            for sub, sub_schema in schema.pop("$defs", {}).items():
                defs[f"{key}.{sub}"] = sub_schema
            schema.pop("required", None)
            schema["description"] = (f"params of {kind} {name!r} (plugin {resolved.plugin})"
                                     + (f": {resolved.component.summary}" if resolved.component.summary else ""))
            defs[key] = schema
            rules.append({
                "if": {"properties": {"component": {"const": name}}, "required": ["component"]},
                "then": {"properties": {"params": {"$ref": f"#/$defs/{key}"}}},
            })
        table = defs.get(SPEC_TABLES[kind])
        if table is not None and rules:
            table["allOf"] = [*table.get("allOf", []), *rules]
    return out
