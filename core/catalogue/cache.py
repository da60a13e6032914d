"""The download cache: where each entry's file lives (bundled in the package, or ``models/<name>/<file>`` in the
cache folder) and :func:`fetch`, which gives the local file (checked), downloading it first under a lock."""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
from pathlib import Path, PurePosixPath
from typing import Iterator

from ..errors import UserError
from ..files import ensure_dir
from .archive import extract_member
from .download import download
from .entries import ModelEntry, url_name
from .hashes import verify

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


def is_cached(entry: ModelEntry) -> bool:
    return model_path(entry).is_file()



@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An exclusive lock (a file in ``<cache>/locks``, POSIX) so that two processes never write the same download."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock
        yield
        return
    folder = ensure_dir(cache_dir() / "locks", CACHE_WHAT)
    lock = folder / (hashlib.sha1(str(path).encode()).hexdigest()[:16] + ".lock")
    try:
        f = open(lock, "a+b")
    except OSError as exc:
        raise UserError(f"{CACHE_WHAT}: {lock}: cannot create the lock file ({exc.strerror or exc})") from None
    with f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def fetch(entry: ModelEntry, *, retries: int = 2) -> Path:
    """The local weights file of ``entry``: bundled, cached (checked) or downloaded now (and checked)."""
    dest = model_path(entry)
    if entry.bundled is not None:
        if not dest.is_file():
            raise UserError(
                f"model {entry.name!r}: bundled file {dest} is missing from this installation (reinstall restorekit)"
            )
        return dest
    if dest.is_file():
        verify(dest, None if entry.member is not None else entry.sha256)
        return dest
    with _lock(dest):  # another process may be downloading the same file: wait for it, then use its result
        if dest.is_file():
            verify(dest, None if entry.member is not None else entry.sha256)
            return dest
        return _fetch_now(entry, dest, retries)


def _fetch_now(entry: ModelEntry, dest: Path, retries: int) -> Path:
    if entry.member is None:
        download(entry.urls, dest, sha256=entry.sha256, size=entry.size, retries=retries)
        return dest
    archive = archive_path(entry)
    hint = (
        f"download it by hand and put it at {archive} (or its member {PurePosixPath(entry.member).name} at {dest})"
    )
    with _lock(archive):
        if archive.is_file():
            verify(archive, entry.sha256)
        else:
            download(entry.urls, archive, sha256=entry.sha256, size=entry.size, retries=retries, hand_hint=hint)
    extract_member(archive, entry.member, dest)
    return dest

