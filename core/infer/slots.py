"""What each input image produces: the output slots of a mode (file-name suffix, temperature, sample, seed,
frame) and the checks that no output overwrites an input, a report or another output."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

from ..errors import UserError
from ..files import confine
from ..spec import FLOW_MODES, InferSpec
from .inputs import InputItem, InputReader

HR_INPUT_MODES = frozenset({"restore", "interpolate", "feed_through"})
REPORT_MODES = frozenset({"sr", "sample", "feed_through", "restore"})
SUFFIX = {"png": ".png", "tiff": ".tiff", "jpg": ".jpg", "webp": ".webp"}
REPORT_FILES = ("summary.json", "samples.json", "comparison.png", "metrics.md", "metrics.json")


@dataclass(frozen=True)
class Slot:
    """One output an input image gets: file-name suffix, label (reports), the temperature (or latent scale)
    requested, sample index and seed (random latents), interpolation frame, and whether it is the GIF."""

    suffix: str
    label: str
    temperature: float | None = None
    sample: int | None = None
    seed: int | None = None
    frame: int | None = None
    kind: Literal["image", "gif"] = "image"
    in_grid: bool = True

    def path(self, out_dir: Path, item: InputItem, ext: str) -> Path:
        base = out_dir / item.rel
        return base.with_name(base.name + self.suffix + (".gif" if self.kind == "gif" else ext))


@dataclass(frozen=True)
class OutputConfig:
    """What a run writes and where, fixed before the first input (all the sink and ``check_existing`` know of it):
    folder, suffix, mode, scale, each input's slots, the ``request`` every record starts from, the input
    ``reader`` (reports of existing outputs read their input again), whether reports are written, the pipeline
    ``source`` errors name, this process's rank and world."""

    out_dir: Path
    ext: str
    mode: str
    scale: int
    slots: tuple[Slot, ...]
    request: Mapping[str, Any]
    reader: InputReader
    reports: bool
    source: str
    rank: int = 0
    world: int = 1

    def paths(self, item: InputItem) -> list[tuple[Slot, Path]]:
        """Every output of ``item``, with its slot."""
        return [(sl, sl.path(self.out_dir, item, self.ext)) for sl in self.slots]


def tname(t: float) -> str:
    """A temperature as it appears in file names and labels."""
    return f"{t:g}"


def make_slots(spec: InferSpec, *, flow: bool, seed: int, reference: Path | None) -> list[Slot]:
    """The outputs of every input image in ``spec.mode`` (same for all images)."""
    mode = spec.mode
    if mode == "sr":
        if not flow:
            return [Slot("", "SR")]
        t = spec.temperatures[0]
        return [Slot("", f"t={tname(t)}", temperature=t, sample=0, seed=seed)]
    if mode in ("sample", "feed_through"):
        return [
            Slot(f"_t{tname(t)}_s{s}_seed{seed + s}", f"t={tname(t)} s{s}", temperature=t, sample=s,
                 seed=seed + s, in_grid=s == 0)
            for t in spec.temperatures
            for s in range(spec.samples if t != 0 else 1)  # temperature 0 is deterministic: one image
        ]
    if mode == "restore":
        return [Slot(f"_restored_t{tname(t)}", f"restored t={tname(t)}", temperature=t) for t in spec.temperatures]
    if mode == "latent_transfer":
        assert reference is not None
        return [Slot(f"_transfer_{reference.stem}", f"transfer from {reference.name}", temperature=1.0)]
    slots = [Slot(f"_f{i:02d}", f"frame {i}", temperature=1.0, frame=i) for i in range(spec.frames)]
    if spec.gif:
        slots.append(Slot("", "gif", kind="gif"))
    return slots


def check_outputs(items: Sequence[InputItem], slots: Sequence[Slot], out_dir: Path, ext: str,
                  protected_files: Sequence[Path | None], source: str) -> None:
    """No output is an input (or another protected file), a report file, or another image's output."""
    protected = {i.path.resolve(): i.path for i in items}
    for p in protected_files:
        if p is not None:
            protected[Path(p).resolve()] = Path(p)
    reports = {(out_dir / n).resolve() for n in REPORT_FILES}
    seen: dict[Path, Path] = {}
    for item in items:
        for slot in slots:
            out = confine(slot.path(out_dir, item, ext), out_dir, f"{source}: infer: input {item.path}").resolve()
            if out in protected:
                raise UserError.at(
                    source, "infer.output_dir", f"output {out} would overwrite the input "
                    f"{protected[out]}; choose another output folder"
                )
            if out in reports:
                raise UserError.at(source, "infer", f"input {item.path} would write {out.name}, a report file")
            if out in seen:
                raise UserError.at(source, "infer.inputs", f"{seen[out]} and {item.path} both map to the output {out}")
            seen[out] = item.path


__all__ = ["FLOW_MODES", "HR_INPUT_MODES", "OutputConfig", "REPORT_FILES", "REPORT_MODES", "SUFFIX", "Slot",
           "check_outputs", "make_slots", "tname"]
