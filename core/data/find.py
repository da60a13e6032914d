"""Finding images: the one walker. Training and validation data (``data.*.hq``), inference inputs
(``infer.inputs``, ``--input``) and ``restore-run evaluate`` (``--gt``, ``--sr``) list their images with
:func:`find_images`, by one set of rules:

* an entry is a folder (searched recursively), a file, or a glob (``*``, ``?``, ``[``; ``**`` crosses folders);
* an image is a file with an image suffix (any case), hidden ones skipped: a name starting with ``.``, or a folder
  starting with ``.`` below the entry (a file named on its own is taken as named);
* each entry's images are sorted by path; entries keep the given order; a file found twice is listed once;
* every image keeps its name relative to the folder (or the fixed part of the glob) it was found under;
* a missing path, a folder or glob with no image, or a named file that is not an image is one line naming it.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..errors import UserError
from .io import IMAGE_SUFFIXES

_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class ImageEntry:
    """An image file and its name relative to the folder (or glob root) it was found under."""

    path: Path
    name: str


def _glob_root(pattern: str) -> Path:
    root: list[str] = []
    for part in Path(pattern).parts:
        if _GLOB_CHARS & set(part):
            break
        root.append(part)
    return Path(*root) if root else Path(".")


def _walk(root: Path, files: list[Path], exclude: Path | None) -> list[tuple[Path, str]]:
    """The visible images among ``files`` (found under ``root``, none under ``exclude`` unless it is ``root``),
    sorted, with their names relative to ``root``."""
    skip = exclude.resolve() if exclude is not None else None
    skip = None if skip == root.resolve() else skip
    found = []
    for f in sorted(files):
        rel = f.relative_to(root) if f.is_relative_to(root) else Path(f.name)
        if (f.suffix.lower() not in IMAGE_SUFFIXES or any(part.startswith(".") for part in rel.parts)
                or not f.is_file() or (skip is not None and skip in f.resolve().parents)):
            continue
        found.append((f, rel.as_posix()))
    return found


def find_images(entries: Sequence[Path | str], where: str, *, exclude: Path | None = None) -> list[ImageEntry]:
    """The images of ``entries`` (folders, files, globs), by the rules of this module. ``where`` names the field
    or flag in errors (``data.train.hq``, ``--gt``). Images under ``exclude`` (an output folder inside an input
    folder) are left out of folders and globs, unless it is the folder (or the glob's fixed part) itself."""
    suffixes = ", ".join(s[1:] for s in IMAGE_SUFFIXES)
    found: dict[Path, ImageEntry] = {}
    for entry in entries:
        text, p = str(entry), Path(entry)
        if p.is_dir():
            pairs = _walk(p, list(p.rglob("*")), exclude)
            if not pairs:
                raise UserError(f"{where}: {p}: no images found in this folder (looked for {suffixes})")
        elif p.is_file():
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                raise UserError(f"{where}: {p}: not an image file (suffixes: {suffixes})")
            pairs = [(p, p.name)]
        elif _GLOB_CHARS & set(text):
            pairs = _walk(_glob_root(text), [Path(f) for f in glob.glob(text, recursive=True)], exclude)
            if not pairs:
                raise UserError(f"{where}: {text}: no image matches this pattern")
        else:
            raise UserError(f"{where}: {p}: no such file or folder")
        for path, name in pairs:
            found.setdefault(path.resolve(), ImageEntry(path, name))
    return list(found.values())


def paired_path(lq_root: Path, name: str, where: str) -> Path:
    """The LR image of ``lq_root`` with the same relative name as an HR image (any image suffix)."""
    exact = lq_root / name
    if exact.is_file():
        return exact
    stem = (lq_root / name).with_suffix("")
    for suffix in IMAGE_SUFFIXES:
        for cand in (stem.with_suffix(suffix), stem.with_suffix(suffix.upper())):
            if cand.is_file():
                return cand
    raise UserError(f"{where}.lq: {lq_root}: no LR image for {name!r} (expected {exact})")


__all__ = ["ImageEntry", "find_images", "paired_path"]
