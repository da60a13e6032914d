"""Provenance of inference outputs: what each output was made with (its *request*: weights and their sha256, the
component's params, mode, temperature, sample, seed, tile settings, restorekit version, ...), the records already
in an output folder (``samples.json``), and the check, before any work, that every existing output was made by
exactly the request that would make it now.

An output is skipped only when its record matches; a mismatch, or an output (or a folder of images) with no record,
stops the run with one line naming the first differing field and the two ways on: overwrite, or another folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from ..data.find import find_images
from ..errors import COMMAND_LINE, UserError
from ..provenance import file_sha256, weights_identity
from .slots import REPORT_FILES, OutputConfig, Slot

if TYPE_CHECKING:  # pragma: no cover
    from .inputs import InputItem
    from .modes import Runner


# The fields compared, in the order a mismatch is reported (what made the image first, the version last).
REQUEST_FIELDS = (
    "model", "checkpoint", "trained", "weights", "sha256", "submodules", "network", "params", "mode",
    "temperature", "latent_scale", "sample", "seed", "frame", "kind", "tile", "precision", "downsampler",
    "temperature_map", "reference", "interpolation", "nan_ladder", "input_sha256", "restorekit",
)


def run_request(r: "Runner", trained: Any | None) -> dict[str, Any]:
    """The part of every output's request that is the same for the whole run (``trained``: the in-memory network
    when it was trained in this run, else None: its weights come from the plan)."""
    from .. import __version__

    spec = r.spec
    base: dict[str, Any] = dict(weights_identity(r.net_plan, trained))
    base["network"] = r.component
    base["params"] = r.net_plan.params.model_dump(mode="json")
    base["mode"] = spec.mode
    base["tile"] = {"size": spec.tile.size, "overlap": spec.tile.overlap} if spec.tile is not None else None
    base["precision"] = r.precision
    base["downsampler"] = spec.downsampler if r.hr_input else None
    if r.flow:
        base["nan_ladder"] = list(r.ladder)
        latent = spec.mode in ("latent_transfer", "interpolate")
        if spec.temperature_map is not None and not latent:
            base["temperature_map"] = file_sha256(spec.temperature_map)
        if spec.reference is not None and latent:
            base["reference"] = file_sha256(spec.reference)
        if spec.mode == "interpolate":
            base["interpolation"] = spec.interpolation
    base["restorekit"] = __version__
    return base


def slot_request(base: Mapping[str, Any], mode: str, item: "InputItem", slot: Slot) -> dict[str, Any]:
    """The full request of one output: the run's part, the slot's temperature (latent scale), sample, seed and
    frame, and the sha256 of the input file."""
    req = dict(base)
    if slot.temperature is not None:
        req["latent_scale" if mode in ("latent_transfer", "interpolate") else "temperature"] = slot.temperature
    for k in ("sample", "seed", "frame"):
        if getattr(slot, k) is not None:
            req[k] = getattr(slot, k)
    if slot.kind != "image":
        req["kind"] = slot.kind
    req["input_sha256"] = file_sha256(item.path)
    return req


def read_records(out_dir: Path) -> dict[str, dict[str, Any]]:
    """The records of ``samples.json`` (and of per-rank ``samples.rankN.json``) in ``out_dir``, by output path
    relative to it. An unreadable file holds no records."""
    records: dict[str, dict[str, Any]] = {}
    if not out_dir.is_dir():
        return records
    for path in [out_dir / "samples.json", *sorted(out_dir.glob("samples.rank*.json"))]:
        if not path.is_file():
            continue
        try:
            outputs = json.loads(path.read_text(encoding="utf-8")).get("outputs", {})
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(outputs, dict):
            records.update({str(k): v for k, v in outputs.items() if isinstance(v, dict)})
    return records


def _diff(old: Any, new: Any, name: str) -> tuple[str, Any, Any] | None:
    if isinstance(old, dict) and isinstance(new, dict):
        for k in list(new) + [k for k in old if k not in new]:
            d = _diff(old.get(k), new.get(k), f"{name}.{k}")
            if d is not None:
                return d
        return None
    return None if old == new else (name, old, new)


def first_difference(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[str, Any, Any] | None:
    """The first request field (in :data:`REQUEST_FIELDS` order, then any other key of ``new``; nested into dicts) where
    ``old`` and ``new`` differ, with both values; None when they match."""
    # then any other key of the request (``new``): none left unchecked; what only the record has (input, used_*,
    # fallback) says what happened, not what was asked
    for key in [*REQUEST_FIELDS, *sorted(set(new) - set(REQUEST_FIELDS))]:
        if key in old or key in new:
            d = _diff(old.get(key), new.get(key), key)
            if d is not None:
                return d
    return None


def _show(v: Any) -> str:
    if v is None:
        return "(not recorded)"
    text = json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else (repr(v) if isinstance(v, str) else f"{v}")
    return text if len(text) <= 80 else text[:77] + "..."


def ways_on(source: str) -> str:
    """The two ways on, in the words of a one-command run or of a pipeline."""
    if source == COMMAND_LINE:
        return "pass --overwrite to replace existing outputs, or choose another --output folder"
    return "set infer.overwrite = true to replace existing outputs, or choose another infer.output_dir"


def _images_in(out_dir: Path, protected: set[Path]) -> list[Path]:
    """The images of ``out_dir`` (listed by the one walker), but for ``protected`` files and the reports."""
    try:
        found = find_images([out_dir], "infer.output_dir")
    except UserError:  # no image in it
        return []
    return [e.path for e in found if e.path.resolve() not in protected and e.name not in REPORT_FILES]


def check_existing(out: OutputConfig, items: Iterable["InputItem"], protected: Sequence[Path | None] = ()) -> None:
    """Before any work (``overwrite = false``): every output that exists already was made by exactly the request
    that would make it now, and an output folder holding images holds their records. Otherwise one line: the
    output, the first differing field (old and new value), and the two ways on."""
    out_dir, source = out.out_dir, out.source
    records = read_records(out_dir)
    items = list(items)
    if not records and out_dir.is_dir():
        keep = {Path(p).resolve() for p in protected if p is not None} | {i.path.resolve() for i in items}
        images = _images_in(out_dir, keep)
        if images:
            raise UserError.at(
                source, "infer.output_dir", f"{out_dir} holds {len(images)} image(s) (e.g. {images[0].name}) but no "
                f"samples.json records of what made them (another tool, or restorekit before output records), so "
                f"they cannot be told from this run's outputs; {ways_on(source)}")
    for item in items:
        for slot, path in out.paths(item):
            if not path.exists():
                continue
            key = path.relative_to(out_dir).as_posix()
            old = records.get(key)
            if old is None:
                raise UserError.at(source, "infer.output_dir",
                                   f"{path} exists but samples.json has no record of what made it; {ways_on(source)}")
            diff = first_difference(old, slot_request(out.request, out.mode, item, slot))
            if diff is not None:
                name, was, now = diff
                raise UserError.at(source, "infer.output_dir", f"{path} was made with {name} = {_show(was)}, this run "
                                   f"asks {name} = {_show(now)}; {ways_on(source)}")


__all__ = ["REQUEST_FIELDS", "check_existing", "first_difference", "read_records", "run_request", "slot_request",
           "ways_on"]
