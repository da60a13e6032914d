"""Archive downloads: one member of a zip archive extracted to the cache, atomically, its sha256 recorded."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path, PurePosixPath

from ..errors import UserError
from .hashes import write_record


def extract_member(archive: Path, member: str, dest: Path) -> str:
    """Extract one member of a zip archive to ``dest`` atomically (temp file in its folder + rename); a member
    given by path is also found by its file name alone. Returns the member's sha256."""
    try:
        with zipfile.ZipFile(archive) as z:
            names = [n for n in z.namelist() if not n.endswith("/")]
            if member in names:
                name = member
            else:
                base = PurePosixPath(member).name
                found = [n for n in names if PurePosixPath(n).name == base]
                if len(found) != 1:
                    raise UserError.at(
                        archive, None, f"no member {member!r} in the archive ({len(names)} files: "
                        f"{', '.join(names[:6])}{', ...' if len(names) > 6 else ''})"
                    )
                name = found[0]
            from ..files import atomic_write

            h = hashlib.sha256()

            def extract(tmp: Path) -> None:
                with tmp.open("wb") as out, z.open(name) as src:
                    for chunk in iter(lambda: src.read(1 << 20), b""):
                        out.write(chunk)
                        h.update(chunk)

            atomic_write(dest, extract)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise UserError.at(archive, None,
                           f"not a readable zip archive ({exc}); delete it to download it again") from None
    digest = h.hexdigest()
    write_record(dest, digest)
    return digest
