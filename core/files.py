"""Safe file writing for every writer in restorekit: atomic writes, output-folder confinement, the output lock.

* :func:`atomic_write` writes through a temporary file made with ``tempfile.mkstemp`` in the destination folder
  (created exclusively, so it can never be an existing file, input or not), then ``os.replace``\\ s it onto the
  destination: a reader sees the old file or the new one, never a partial one. On failure only that temporary
  file is removed. The final file's mode follows the umask (as ``open`` would), not ``mkstemp``'s 0600.
* :func:`confine` refuses (one-line :class:`UserError`) a path that, resolved, lies outside its output folder.
* :class:`OutputLock` holds an exclusive ``fcntl.flock`` on ``<folder>/.restorekit.lock`` while a run writes
  into that folder; a second run on the same folder stops with one line naming the holder's PID.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Callable, Iterator

from .errors import UserError

LOCK_NAME = ".restorekit.lock"
_HELD: set[str] = set()  # folders whose lock this process holds (resolved paths)


def umask() -> int:
    """The process umask (read without changing it where /proc allows)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def confine(path: Path, root: Path, what: str = "output") -> Path:
    """``path`` if it lies inside ``root`` once both are resolved (symbolic links followed); otherwise a
    one-line :class:`UserError`. Names ``.`` and ``..`` are refused as well."""
    p = Path(path)
    if p.name in ("", ".", ".."):
        raise UserError(f"{what}: {p}: not a file name")
    real_root = Path(os.path.realpath(root))
    real = Path(os.path.realpath(p))
    if real_root not in real.parents:  # a file inside the folder (the folder itself is not a file name either)
        raise UserError(f"{what}: {p} lies outside the output folder {root}; refusing to write it")
    return p


def ensure_dir(folder: Path, what: str) -> Path:
    """Create ``folder`` (and its parents); an existing file in the way, or a folder that cannot be written,
    is a one-line :class:`UserError` naming ``what`` (the spec field)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UserError(f"{what}: {folder}: exists and is not a folder") from None
    except NotADirectoryError:
        raise UserError(f"{what}: {folder}: lies under a file, not a folder") from None
    except OSError as exc:
        raise UserError(f"{what}: {folder}: cannot create the folder ({exc.strerror or exc})") from None
    if not folder.is_dir():
        raise UserError(f"{what}: {folder}: exists and is not a folder")
    return folder


def atomic_write(path: Path, write: Callable[[Path], object], *, root: Path | None = None) -> Path:
    """Call ``write(tmp)`` then rename ``tmp`` onto ``path``; readers never see a partial file.

    ``tmp`` is a fresh file (``mkstemp``: created exclusively, never an existing file) in ``path``'s folder with
    ``path``'s suffix (writers that choose the format by suffix still work). With ``root``, ``path`` must lie in
    it (:func:`confine`). Only ``tmp`` is removed on failure.
    """
    path = Path(path)
    if root is not None:
        confine(path, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name[:80]}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(name)  # ours alone: mkstemp created it exclusively, so removing it can never remove another file
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return path


def write_text(path: Path, text: str, *, root: Path | None = None) -> Path:
    """Atomically write ``text`` as UTF-8 (undecodable file-name characters escaped, never an error)."""
    data = text.encode("utf-8", errors="backslashreplace")
    return atomic_write(path, lambda tmp: tmp.write_bytes(data), root=root)


@contextlib.contextmanager
def atomic_dir(final: Path, prefix: str) -> Iterator[Path]:
    """A fresh temporary folder beside ``final`` (``prefix`` + random, via ``mkdtemp``) for the caller to fill;
    on success the caller renames it, on failure it is removed. Its mode follows the umask."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=final.parent))
    try:
        os.chmod(tmp, 0o777 & ~umask())
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists (on this machine)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


class OutputLock:
    """An exclusive lock on an output folder, held for the length of a run.

    ``<folder>/.restorekit.lock`` holds the PID of the run that owns the folder. A second run asking for the same
    folder gets a one-line :class:`UserError` naming that PID (``what`` is the spec field, e.g.
    ``run.output_dir``). The lock is an ``fcntl.flock``: the operating system releases it when the holder exits,
    killed or not, so a stale lock file never blocks anyone. Where ``fcntl`` does not exist (Windows) no lock is
    taken.
    """

    def __init__(self, folder: Path, what: str = "run.output_dir") -> None:
        self.folder = Path(folder)
        self.what = what
        self.fd: int | None = None
        self.created: list[Path] = []  # folders this lock created (removed again on release when left empty)

    def acquire(self) -> "OutputLock":
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return self
        missing = [d for d in [self.folder, *self.folder.parents] if not d.exists()]
        ensure_dir(self.folder, self.what)
        self.created = missing
        path = self.folder / LOCK_NAME
        for _ in range(20):
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as exc:
                self._remove_created()
                raise UserError(
                    f"{self.what}: {self.folder}: cannot write in this folder ({exc.strerror or exc})"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = _read_pid(fd)
                os.close(fd)
                self._remove_created()
                who = f"PID {holder}" if holder else "another process"
                raise UserError(
                    f"{self.what}: {self.folder}: another restore-run ({who}) is writing into this folder; "
                    "wait for it to finish or choose another output folder"
                ) from None
            try:  # the holder may have removed the file between our open and our lock: retry on the new one
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            self.fd = fd
            _HELD.add(os.path.realpath(self.folder))
            return self
        raise UserError(f"{self.what}: {self.folder}: could not take the output-folder lock")  # pragma: no cover

    def release(self) -> None:
        if self.fd is None:
            return
        _HELD.discard(os.path.realpath(self.folder))
        with contextlib.suppress(OSError):
            (self.folder / LOCK_NAME).unlink()
        os.close(self.fd)  # closing releases the flock
        self.fd = None
        self._remove_created()

    def _remove_created(self) -> None:
        """A run that stopped before writing anything leaves no empty folder behind."""
        for d in self.created:  # innermost first
            try:
                d.rmdir()
            except OSError:
                break
        self.created = []

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def holds_lock(folder: Path) -> bool:
    """Whether this process holds the :class:`OutputLock` of ``folder`` (so no other run writes there)."""
    return os.path.realpath(folder) in _HELD


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", errors="replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None


__all__ = [
    "LOCK_NAME",
    "OutputLock",
    "atomic_dir",
    "atomic_write",
    "confine",
    "ensure_dir",
    "holds_lock",
    "pid_alive",
    "umask",
    "write_text",
]
