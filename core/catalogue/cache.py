"""The download cache: where each entry's file lives (bundled in the package, or ``models/<name>/<file>`` in the
cache folder) and :func:`fetch`, which gives the local file (checked), downloading it first under a lock."""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterator

from ..errors import UserError
from ..files import ensure_dir
from .archive import extract_member
from .download import download
from ..model_entry import ModelEntry, url_name
from .hashes import read_record, verify

ENV_HOME = "RESTOREKIT_HOME"
CACHE_WHAT = f"model cache (set ${ENV_HOME} to move it)"


def bundled_dir() -> Path:
    """The package folder holding the bundled models."""
    return Path(__file__).parents[1] / "models"


def cache_dir() -> Path:
    """``$RESTOREKIT_HOME``, else the platform cache folder (XDG on Linux, Library/Caches on macOS)."""
    home = os.environ.get(ENV_HOME)
    if home:
        return Path(home).expanduser()
    if sys.platform == "win32":
        root = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(root) / "restorekit" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "restorekit"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache") / "restorekit"


def model_path(entry: ModelEntry) -> Path:
    """Where the entry's weights file is (bundled) or goes (cache: ``models/<name>/<file>``)."""
    if entry.bundled is not None:
        return bundled_dir() / entry.bundled
    return cache_dir() / "models" / entry.name / entry.filename


def archive_path(entry: ModelEntry) -> Path:
    """Where an archive download goes (shared by every entry that reads a member of it)."""
    return cache_dir() / "downloads" / url_name(entry.urls[0])


def mirror_archive_path(url: str) -> Path:
    """Where a mirror's archive goes: named by the URL's hash too (mirror URLs often end in ``download``)."""
    return cache_dir() / "downloads" / f"mirror-{hashlib.sha1(url.encode()).hexdigest()[:12]}-{url_name(url)}"


@dataclass(frozen=True)
class Source:
    """One place the weights come from: URLs of one download (the entry's own, or one mirror), the zip member to
    take from it (None: the download is the weights file), its published sha256 and size, where its archive goes."""

    urls: tuple[str, ...]
    member: str | None
    sha256: str | None
    size: int | None
    archive: Path | None


def sources(entry: ModelEntry) -> list[Source]:
    """The entry's own download (``urls``), then each of its ``mirrors``, in order."""
    out = []
    if entry.urls:
        out.append(Source(tuple(entry.urls), entry.member, entry.sha256, entry.size,
                          archive_path(entry) if entry.member is not None else None))
    for m in entry.mirrors:
        out.append(Source((m.url,), m.member, m.sha256, m.size,
                          mirror_archive_path(m.url) if m.member is not None else None))
    return out


def is_cached(entry: ModelEntry) -> bool:
    return model_path(entry).is_file()



@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An exclusive lock (``filelock``: a file in ``<cache>/locks``, on every platform) so that two processes never
    write the same download."""
    import filelock

    folder = ensure_dir(cache_dir() / "locks", CACHE_WHAT)
    lock = folder / (hashlib.sha1(str(path).encode()).hexdigest()[:16] + ".lock")
    held = filelock.FileLock(str(lock))
    try:
        held.acquire()
    except OSError as exc:
        raise UserError.at(CACHE_WHAT, None, f"{lock}: cannot create the lock file ({exc.strerror or exc})") from None
    try:
        yield
    finally:
        held.release()


def fetch(entry: ModelEntry, *, retries: int = 2) -> Path:
    """The local weights file of ``entry``: bundled, cached (checked) or downloaded now (and checked)."""
    dest = model_path(entry)
    if entry.bundled is not None:
        if not dest.is_file():
            raise UserError(
                f"model {entry.name!r}: bundled file {dest} is missing from this installation (reinstall restorekit)"
            )
        return dest
    published = entry.weights_sha256 or (entry.sha256 if entry.urls and entry.member is None else None)
    if dest.is_file():
        verify(dest, published)
        return dest
    with _lock(dest):  # another process may be downloading the same file: wait for it, then use its result
        if dest.is_file():
            verify(dest, published)
            return dest
        return _fetch_now(entry, dest, retries)


def _fetch_now(entry: ModelEntry, dest: Path, retries: int) -> Path:
    """The first source that delivers the weights wins; with mirrors, a source that fails (unreachable, a web page,
    a wrong size or hash) passes to the next, and when none delivers, one line names each source's reason."""
    todo = sources(entry)
    reasons: list[str] = []
    for src in todo:
        try:
            _fetch_source(entry, src, dest, retries, alone=len(todo) == 1)
        except UserError as exc:
            if len(todo) == 1:
                raise
            reasons.append(str(exc))
            continue
        return dest
    listed = " | ".join(f"({i + 1}) {r}" for i, r in enumerate(reasons))
    raise UserError(f"model {entry.name!r}: none of its {len(todo)} sources delivered the weights: {listed}; download "
                    f"a copy by hand (docs/models.md says where copies are) and put it at {dest}")


def _fetch_source(entry: ModelEntry, src: Source, dest: Path, retries: int, *, alone: bool) -> None:
    """One source into ``dest``; ``alone``: the entry's only source, whose errors say where to put a copy by hand
    (with several, the one line listing them all says it once)."""
    if src.member is None:
        download(src.urls, dest, sha256=src.sha256, size=src.size, retries=retries, hand_hint=None if alone else "")
    else:
        assert src.archive is not None
        archive = src.archive
        hint = (f"download it by hand and put it at {archive} (or its member {PurePosixPath(src.member).name} at "
                f"{dest})") if alone else ""
        with _lock(archive):
            if archive.is_file():
                verify(archive, src.sha256)
            else:
                download(src.urls, archive, sha256=src.sha256, size=src.size, retries=retries, hand_hint=hint)
        extract_member(archive, src.member, dest)
    if entry.weights_sha256 is not None:
        from .hashes import record_path

        got = read_record(dest)
        if got != entry.weights_sha256:
            dest.unlink(missing_ok=True)
            record_path(dest).unlink(missing_ok=True)
            raise UserError.at(src.urls[0], None, f"delivered a file with sha256 {got}, not the weights entry "
                               f"{entry.name!r} names ({entry.weights_sha256}): deleted")

