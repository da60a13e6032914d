"""Reading a pipeline file: TOML, ``--set`` overrides, validation with one-line errors, relative paths."""

from __future__ import annotations

import difflib
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Mapping, Sequence

from pydantic import BaseModel, ValidationError

from ..errors import UserError
from .models import DatasetSpec
from .pipeline import PipelineSpec


def did_you_mean(word: str, options: Any) -> str:
    match = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _unwrap(ann: Any) -> Any:
    """The model (or ``("dict", model)``) inside an annotation such as ``X | None`` or ``dict[str, X]``."""
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin in (typing.Union, types.UnionType):
        for a in args:
            r = _unwrap(a)
            if isinstance(r, tuple) or (isinstance(r, type) and issubclass(r, BaseModel)):
                return r
        return None
    if origin is dict:
        return ("dict", _unwrap(args[1]))
    return ann


def _walk_dicts(loc: tuple[Any, ...], model: type[BaseModel]) -> type[BaseModel] | None:
    """Resolve the owner model of the last element, skipping dict keys."""
    current: Any = model
    i = 0
    while i < len(loc) - 1:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(str(loc[i]))
        if field is None:
            return None
        nxt = _unwrap(field.annotation)
        if isinstance(nxt, tuple):
            nxt = nxt[1]
            i += 1  # skip the dict key
        current = nxt
        i += 1
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def validation_error(
    exc: ValidationError, source: str, prefix: str = "", model: type[BaseModel] | None = None
) -> UserError:
    """The first error at ``source`` and its dotted path (after ``prefix``); unknown keys get a suggestion."""
    err = exc.errors(include_url=False)[0]
    loc = tuple(err.get("loc", ()))
    msg = err.get("msg", "invalid value")
    if err.get("type") == "extra_forbidden" and loc:
        owner = _walk_dicts(loc, model) if model is not None else None
        hint = did_you_mean(str(loc[-1]), owner.model_fields) if owner is not None else ""
        msg = f"unknown field{hint}"
    elif "input" in err and err.get("type") not in ("missing",) and not isinstance(err["input"], (dict, list)):
        msg = f"{msg} (got {err['input']!r})"
    msg = msg.removeprefix("Value error, ")
    extra = len(exc.errors()) - 1
    more = f" [+{extra} more error{'s' if extra > 1 else ''}]" if extra > 0 else ""
    return UserError.at(source, ".".join(str(p) for p in (prefix, *loc) if p != ""), f"{msg}{more}")


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` → (['a','b','c'], value parsed as a TOML literal, else as a plain string)."""
    if "=" not in item:
        raise UserError.at(None, f"--set {item}", "expected dotted.key=value")
    key, raw = item.split("=", 1)
    parts = [p.strip() for p in key.strip().split(".")]
    if not all(parts):
        raise UserError.at(None, f"--set {item}", "empty key part")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return parts, value


# the keys of a [networks.NAME] table that replace each other: --set of one removes the other, so that an override
# can switch a network between a catalogue model and a weights file
_EXCLUSIVE_WEIGHTS = {"model": "checkpoint", "checkpoint": "model"}


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``--set`` items in order. ``networks.NAME.model`` and ``networks.NAME.checkpoint`` replace each other
    (setting one removes the other from that network)."""
    for item in overrides:
        parts, value = parse_override(item)
        node = data
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise UserError.at(None, f"--set {item}", f"{p} is not a table")
            node = nxt
        node[parts[-1]] = value
        if len(parts) == 3 and parts[0] == "networks" and parts[2] in _EXCLUSIVE_WEIGHTS:
            node.pop(_EXCLUSIVE_WEIGHTS[parts[2]], None)
    return data


def read_toml(path: Path, what: str = "file") -> dict[str, Any]:
    """The tables of a TOML file (pipeline, registry, catalogue); a missing or broken one is one line naming it."""
    if not path.is_file():
        raise UserError.at(path, None, f"{what} not found")
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise UserError.at(path, None, f"TOML syntax error: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError.at(path, None, f"cannot read ({exc})") from None


def load_spec(path: str | Path, overrides: list[str] | None = None) -> PipelineSpec:
    """Read, override and validate a pipeline file; relative paths resolve against its folder (those given in
    ``overrides`` against the working directory)."""
    p = Path(path)
    data = apply_overrides(read_toml(p), list(overrides or []))
    spec = spec_from_dict(data, source=str(p))
    overridden = [".".join(parse_override(o)[0]) for o in overrides or []]
    return resolve_paths(spec, p.parent, overridden)


def spec_from_dict(
    data: Mapping[str, Any], *, source: str = "pipeline", base_dir: Path | None = None
) -> PipelineSpec:
    try:
        spec = PipelineSpec.model_validate(dict(data))
    except ValidationError as exc:
        raise validation_error(exc, source, model=PipelineSpec) from None
    return resolve_paths(spec, base_dir) if base_dir is not None else spec


def resolve_paths(spec: PipelineSpec, base: Path, overridden: Sequence[str] = ()) -> PipelineSpec:
    """Relative paths in the spec are relative to the pipeline file's folder (globs included); paths given with
    ``--set`` (dotted keys in ``overridden``) are relative to the working directory, as on any command line."""

    def fix(p: Path | None, key: str) -> Path | None:
        if p is None or p.is_absolute():
            return p
        from_cli = any(key == o or key.startswith(o + ".") for o in overridden)
        return (Path.cwd() if from_cli else base) / p

    def fix_ds(ds: DatasetSpec | None, key: str) -> DatasetSpec | None:
        if ds is None:
            return None
        return ds.model_copy(update={"hq": [fix(h, f"{key}.hq") for h in ds.hq], "lq": fix(ds.lq, f"{key}.lq")})

    networks = {
        n: net.model_copy(
            update={
                "checkpoint": fix(net.checkpoint, f"networks.{n}.checkpoint"),
                "init_submodules": {
                    k: fix(v, f"networks.{n}.init_submodules.{k}") for k, v in net.init_submodules.items()
                },
            }
        )
        for n, net in spec.networks.items()
    }
    data = spec.data.model_copy(
        update={"train": fix_ds(spec.data.train, "data.train"), "val": fix_ds(spec.data.val, "data.val")}
    )
    update: dict[str, Any] = {
        "run": spec.run.model_copy(update={"output_dir": fix(spec.run.output_dir, "run.output_dir")}),
        "networks": networks,
        "data": data,
    }
    if spec.infer is not None:
        i = spec.infer
        update["infer"] = i.model_copy(
            update={
                "inputs": [fix(p, "infer.inputs") for p in i.inputs],
                "output_dir": fix(i.output_dir, "infer.output_dir"),
                "reference": fix(i.reference, "infer.reference"),
                "temperature_map": fix(i.temperature_map, "infer.temperature_map"),
            }
        )
    if spec.eval is not None and spec.eval.generators:
        # a generator that is not a [networks] name but a file next to the pipeline is that file
        gens = [g if g in spec.networks or Path(g).is_absolute() or not (base / g).exists() else str(base / g)
                for g in spec.eval.generators]
        update["eval"] = spec.eval.model_copy(update={"generators": gens})
    if spec.train is not None and isinstance(spec.train.resume, Path):
        update["train"] = spec.train.model_copy(update={"resume": fix(spec.train.resume, "train.resume")})
    return spec.model_copy(update=update)
