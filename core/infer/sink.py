"""Where results go: :class:`OutputSink` writes each input's images (and GIF), keeps ``samples.json`` records and
the reports, and at the end merges the ranks' results and writes ``summary.json``; :class:`InferSummary` is what
:func:`restorekit.infer.infer` returns."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.io import read_image, write_image
from ..errors import UserError, one_line
from ..runtime import DistContext
from .imaging import quantize, upsample_bicubic, write_gif
from .inputs import InputItem, Prepared
from .modes import Outcome
from .records import slot_request
from .reports import Reports, atomic_text
from .slots import OutputConfig, Slot


PNG_KEY = "restorekit"
"""The PNG text (tEXt) key under which a PNG output carries its ``samples.json`` record (JSON)."""


def rel(p: Path, root: Path) -> str:
    """``p`` relative to ``root`` where it lies inside it, else as given."""
    try:
        return p.relative_to(root).as_posix()
    except ValueError:
        return str(p)


@dataclass(frozen=True)
class Fallback:
    """A decode that was not finite and was redone at a lower temperature (for latent transfer and
    interpolation: a lower latent scale)."""

    input: Path
    output: Path
    requested: float
    used: float
    reason: str

    def as_dict(self, root: Path) -> dict[str, Any]:
        return {"input": str(self.input), "output": rel(self.output, root), "requested": self.requested,
                "used": self.used, "reason": self.reason}


@dataclass
class InferSummary:
    """What :func:`infer` did: ``exit_code`` (0, or 1 when anything failed), output files ``written`` and
    ``skipped`` (already there, ``overwrite = false``), ``failed`` (path, one-line reason: unreadable, over
    ``run.max_pixels``, ...), NaN-guard ``fallbacks`` and ``notes`` (input, what reading it did: EXIF orientation
    applied, CMYK converted, first frame of an animation used)."""

    exit_code: int
    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    fallbacks: list[Fallback] = field(default_factory=list)
    output_dir: Path | None = None
    notes: list[tuple[Path, str]] = field(default_factory=list)
    mean_psnr_y: dict[str, float] = field(default_factory=dict)  # per output label (bicubic first), HR inputs only

    def as_dict(self) -> dict[str, Any]:
        root = self.output_dir or Path(".")
        return {
            "exit_code": self.exit_code,
            "output_dir": str(root),
            "counts": {"written": len(self.written), "skipped": len(self.skipped), "failed": len(self.failed),
                       "fallbacks": len(self.fallbacks)},
            "written": [rel(p, root) for p in self.written],
            "skipped": [rel(p, root) for p in self.skipped],
            "failed": [{"path": str(p), "reason": r} for p, r in self.failed],
            "fallbacks": [f.as_dict(root) for f in self.fallbacks],
            "notes": [{"path": str(p), "note": n} for p, n in self.notes],
        }

    def text(self) -> str:
        """The summary printed at the end of a run."""
        lines = [
            f"infer: {len(self.written)} written, {len(self.skipped)} skipped, {len(self.failed)} failed"
            f"{f', {len(self.fallbacks)} NaN fallbacks' if self.fallbacks else ''}"
            f"{f', {len(self.notes)} notes in summary.json' if self.notes else ''} -> {self.output_dir}"
        ]
        if self.mean_psnr_y:
            lines.append("  mean PSNR-Y vs HR: " + ", ".join(
                f"{label} {v:.2f} dB" for label, v in self.mean_psnr_y.items()) + " (metrics.md)")
        lines += [f"  failed: {p}: {r}" for p, r in self.failed]
        lines += [f"  fallback: {f.output.name}: temperature {f.requested:g} -> {f.used:g} ({f.reason})"
                  for f in self.fallbacks]
        return "\n".join(lines)


class OutputSink:
    """Collects one rank's results: written/skipped/failed files, ``samples.json`` records and reports. It knows
    the run only through its :class:`~restorekit.infer.slots.OutputConfig`."""

    def __init__(self, out: OutputConfig) -> None:
        self.out = out
        self.summary = InferSummary(exit_code=0, output_dir=out.out_dir)
        self.reports = Reports(border=out.scale, restore=out.mode == "restore") if out.reports else None
        self.records: dict[str, dict[str, Any]] = {}
        self.gif_slot = next((sl for sl in out.slots if sl.kind == "gif"), None)

    def fail(self, path: Path, reason: str) -> None:
        self.summary.failed.append((path, reason))

    def record(self, item: InputItem, slot: Slot, fallback: tuple[float, str] | None) -> dict[str, Any]:
        """The ``samples.json`` record of one output: its request (:func:`.records.slot_request`: weights and
        their sha256, params, mode, temperature, sample, seed, tile, version, ...), the input, and what was used."""
        mode = self.out.mode
        rec: dict[str, Any] = {"input": str(item.path), **slot_request(self.out.request, mode, item, slot)}
        if slot.temperature is not None:
            key = "latent_scale" if mode in ("latent_transfer", "interpolate") else "temperature"
            rec["used_" + key] = fallback[0] if fallback else slot.temperature
        rec["fallback"] = {"used": fallback[0], "reason": fallback[1]} if fallback else None
        return rec

    def keep(self, path: Path, rec: dict[str, Any]) -> None:
        self.records[rel(path, self.out.out_dir)] = rec

    def finish(self, p: Prepared, outcome: Outcome) -> None:
        """Write one input's images (and GIF), record them and add them to the reports."""
        todo = dict(p.todo)
        self.summary.notes += [(p.item.path, n) for n in p.notes]
        for slot, err in outcome.errors.items():
            self.fail(p.item.path, f"{slot.label}: {err}")
        for slot, img in outcome.images.items():
            path = todo.get(slot)
            if path is None:
                continue
            fb = outcome.fallbacks.get(slot)
            rec = self.record(p.item, slot, fb)
            try:
                write_image(path, img, p.alpha, bits=p.bits, gray=p.gray, root=self.out.out_dir,
                            text={PNG_KEY: json.dumps(rec, sort_keys=True)})
            except (ValueError, OSError, TypeError, UserError) as exc:
                self.fail(p.item.path, f"{path.name}: cannot write ({one_line(exc)})")
                continue
            self.summary.written.append(path)
            if fb is not None:
                self.summary.fallbacks.append(Fallback(p.item.path, path, float(slot.temperature or 0.0), fb[0], fb[1]))
            self.keep(path, rec)
        if self.gif_slot is not None and self.gif_slot in todo:
            self._gif(p, outcome, todo[self.gif_slot])
        if self.reports is not None and p.hr is not None:
            outs = [(sl, quantize(img.float().cpu(), p.bits)) for sl, img in outcome.images.items()]
            if outs:
                bic = upsample_bicubic(p.lr[None].float().cpu(), self.out.scale)[0]
                self.reports.add(p.item, p.hr.float().cpu(), quantize(bic, p.bits), outs)

    def _gif(self, p: Prepared, outcome: Outcome, gif_path: Path) -> None:
        assert self.gif_slot is not None
        frames = [outcome.images.get(sl) for sl in self.out.slots if sl.kind == "image"]
        if not all(f is not None for f in frames):
            self.fail(p.item.path, f"{gif_path.name}: not written, some frames failed")
            return
        try:
            write_gif(gif_path, [f for f in frames if f is not None], root=self.out.out_dir)
            self.summary.written.append(gif_path)
            self.keep(gif_path, self.record(p.item, self.gif_slot, None))
        except (ValueError, OSError, UserError) as exc:
            self.fail(p.item.path, f"{gif_path.name}: cannot write ({one_line(exc)})")

    def existing_only(self, item: InputItem, paths: list[tuple[Slot, Path]]) -> None:
        """Reports for an image whose outputs all exist: read them back instead of recomputing."""
        if self.reports is None:
            return
        try:
            p = self.out.reader.prepare(item, [])
        except UserError:
            return
        o = Outcome()
        for slot, path in paths:
            if slot.kind != "image":
                continue
            try:
                img = read_image(path).rgb
            except UserError:
                continue
            if p.hr is not None and img.shape == p.hr.shape:
                o.images[slot] = img
        if p.hr is not None and o.images:
            bic = upsample_bicubic(p.lr[None].float(), self.out.scale)[0]
            self.reports.add(item, p.hr.float(), quantize(bic, p.bits), list(o.images.items()))

    def close(self) -> InferSummary:
        """Merge the ranks' results on rank 0 (or, without a process group, suffix the files with the rank) and
        write the reports, ``samples.json`` and ``summary.json``."""
        summary, reports, records = self.summary, self.reports, self.records
        summary.exit_code = 1 if summary.failed else 0
        suffix = ""
        ctx = DistContext(rank=self.out.rank, world=self.out.world)
        if ctx.active:
            if ctx.in_group():
                gathered = ctx.gather((summary, reports, records))
                if not ctx.main:
                    return summary
                for s2, rep2, rec2 in gathered[1:]:
                    summary.written += s2.written
                    summary.skipped += s2.skipped
                    summary.failed += s2.failed
                    summary.fallbacks += s2.fallbacks
                    summary.notes += s2.notes
                    records.update(rec2)
                    if reports is not None and rep2 is not None:
                        reports.rows += rep2.rows
                        reports.grid += rep2.grid
                summary.exit_code = 1 if summary.failed else 0
            else:
                suffix = f".rank{ctx.rank}"
        out_dir = self.out.out_dir
        if reports is not None:
            reports.write(out_dir, suffix)
            summary.mean_psnr_y = {label: m["psnr_y"] for label, m in reports.means().items()}
        if records:
            path = out_dir / f"samples{suffix}.json"
            old: dict[str, Any] = {}
            if path.is_file():
                try:
                    old = json.loads(path.read_text()).get("outputs", {})
                except (OSError, ValueError, AttributeError):
                    old = {}
            old.update(records)
            atomic_text(path, json.dumps({"outputs": dict(sorted(old.items()))}, indent=2) + "\n", root=out_dir)
        if summary.written or summary.failed or summary.skipped or out_dir.is_dir():
            atomic_text(out_dir / f"summary{suffix}.json", json.dumps(summary.as_dict(), indent=2) + "\n",
                        root=out_dir)
        return summary


__all__ = ["Fallback", "InferSummary", "OutputSink", "rel"]
