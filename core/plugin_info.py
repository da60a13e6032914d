"""What the installed plugins offer, as data: ``--list-plugins``, ``--options KIND NAME`` and the plugin part of
``--schema`` (the CLI renders it: :mod:`restorekit.commands.listings`).

Each plugin is listed with its *own* components (in a clash, the other provider's summary never appears under it),
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


def component_report(reg: PluginRegistry, kind: Kind, name: str) -> dict[str, Any]:
    """The data of ``restore-run --options KIND NAME``: the component's plugin, summary, params (one
    :func:`params_table` row per field) and preset names."""
    resolved = reg.get(kind, name)
    comp = resolved.component
    return {"kind": kind, "name": name, "plugin": resolved.plugin, "summary": comp.summary,
            "params": params_table(comp.params), "presets": sorted(getattr(comp, "presets", {}) or {})}


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
