"""Finding images: folders (recursive), files and globs, with their names relative to where they were found."""

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
    parts = Path(pattern).parts
    root: list[str] = []
    for part in parts:
        if _GLOB_CHARS & set(part):
            break
        root.append(part)
    return Path(*root) if root else Path(".")


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def find_images(entries: Sequence[Path | str], where: str) -> list[ImageEntry]:
    """The images of ``entries``: folders (searched recursively), image files, or globs (``**`` allowed).

    Order: entries in the given order, each sorted by name; duplicates dropped. ``where`` names the spec
    field in errors (``data.train.hq``). An entry that does not exist or holds no image is a :class:`UserError`.
    """
    found: list[ImageEntry] = []
    seen: set[Path] = set()
    for entry in entries:
        text = str(entry)
        p = Path(entry)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if _is_image(f))
            pairs = [(f, f.relative_to(p).as_posix()) for f in files]
            if not pairs:
                raise UserError(
                    f"{where}: {p}: no images found (looked for {', '.join(s[1:] for s in IMAGE_SUFFIXES)})"
                )
        elif p.is_file():
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                raise UserError(f"{where}: {p}: not an image file (suffixes: {', '.join(IMAGE_SUFFIXES)})")
            pairs = [(p, p.name)]
        elif _GLOB_CHARS & set(text):
            root = _glob_root(text)
            files = sorted(Path(f) for f in glob.glob(text, recursive=True) if _is_image(Path(f)))
            if not files:
                raise UserError(f"{where}: {text}: the pattern matches no image")
            pairs = [(f, _relative(f, root)) for f in files]
        else:
            raise UserError(f"{where}: {p}: no such file or folder")
        for path, name in pairs:
            key = path.resolve()
            if key not in seen:
                seen.add(key)
                found.append(ImageEntry(path, name))
    return found


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.name


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
