"""sha256 of downloaded files: checked against the published digest, else against the one recorded beside the file
(``<file>.sha256``) on first use."""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..errors import UserError


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def record_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def read_record(path: Path) -> str | None:
    rec = record_path(path)
    if not rec.is_file():
        return None
    text = rec.read_text(encoding="utf-8", errors="replace").split()
    return text[0].lower() if text else None


def write_record(path: Path, digest: str) -> None:
    from ..checkpoint import atomic_write

    rec = record_path(path)
    try:
        atomic_write(rec, lambda tmp: tmp.write_text(f"{digest}  {path.name}\n", encoding="utf-8"))
    except OSError as exc:  # a folder in the way, a read-only cache: the record cannot be kept
        raise UserError.at(rec, None, f"cannot record the sha256 of {path.name} ({exc.strerror or exc}); "
                           "remove what is in the way or set $RESTOREKIT_HOME to another folder") from None


def verify(path: Path, published: str | None) -> str:
    """Check ``path`` against the published sha256, else against the one recorded on first use (recording it if
    there is none yet). Returns the digest."""
    digest = sha256_file(path)
    if published is not None:
        if digest != published:
            raise UserError.at(
                path, None, f"sha256 {digest} does not match the published {published}; delete the file to download "
                "it again"
            )
        return digest
    recorded = read_record(path)
    if recorded is None:
        write_record(path, digest)
    elif recorded != digest:
        raise UserError.at(
            path, None, f"sha256 {digest} differs from {recorded} recorded when it was first used (corrupt or "
            f"replaced); delete it and {record_path(path).name} to download it again"
        )
    return digest

