"""Downloads: the first URL that works, into ``<dest>.part`` then renamed, resumed with HTTP Range requests,
checked for size and sha256, with a progress bar on a terminal (none inside :func:`quiet_downloads`)."""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator, Sequence

from ..errors import UserError
from ..files import ensure_dir
from .hashes import write_record

TIMEOUT_S = 30.0
CHUNK = 1 << 16
_QUIET: contextvars.ContextVar[bool] = contextvars.ContextVar("restorekit_quiet_downloads", default=False)


@contextlib.contextmanager
def quiet_downloads(quiet: bool = True) -> Iterator[None]:
    """No progress bars inside this block (``restore-run --quiet``)."""
    token = _QUIET.set(quiet)
    try:
        yield
    finally:
        _QUIET.reset(token)



class _Failed(Exception):
    """A download attempt failed; ``resumable`` when a partial file was kept."""

    def __init__(self, reason: str, *, resumable: bool = False) -> None:
        super().__init__(reason)
        self.resumable = resumable


def _progress_on() -> bool:
    return not _QUIET.get() and sys.stderr.isatty()


def _attempt(url: str, part: Path, label: str) -> str:
    """One GET of ``url`` into ``part`` (resumed with a Range request when ``part`` has bytes). Returns the sha256."""
    from tqdm import tqdm

    from .. import __version__

    have = part.stat().st_size if part.is_file() else 0
    req = urllib.request.Request(url, headers={"User-Agent": f"restorekit/{__version__}"})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = urllib.request.urlopen(req, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the partial file does not fit the server's: start again
            part.unlink(missing_ok=True)
            raise _Failed("the server refused to resume; starting again", resumable=True) from None
        raise _Failed(f"HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise _Failed(f"cannot connect ({exc.reason})") from None
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise _Failed(f"cannot connect ({type(exc).__name__}: {exc})") from None
    with resp:
        status = getattr(resp, "status", 200) or 200
        ctype = (resp.headers.get("Content-Type") or "").lower()
        if ctype.startswith("text/html"):
            raise _Failed("the server sent a web page, not the file (a sign-in or confirmation page?)")
        resume = bool(have) and status == 206
        if resume and not (resp.headers.get("Content-Range") or "").startswith(f"bytes {have}-"):
            part.unlink(missing_ok=True)  # the server resumed from elsewhere: start again
            raise _Failed("the server resumed at the wrong offset; starting again", resumable=True)
        if not resume:
            have = 0
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length and length.isdigit() else None
        h = hashlib.sha256()
        if resume:
            with part.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
        part.parent.mkdir(parents=True, exist_ok=True)
        done = have
        with part.open("ab" if resume else "wb") as f, tqdm(
            total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024, desc=label,
            disable=not _progress_on(), file=sys.stderr, leave=False,
        ) as bar:
            try:
                while True:
                    chunk = resp.read(CHUNK)
                    if not chunk:
                        break
                    f.write(chunk)
                    h.update(chunk)
                    done += len(chunk)
                    bar.update(len(chunk))
            except (OSError, http.client.HTTPException) as exc:
                raise _Failed(f"interrupted after {done:,} bytes ({type(exc).__name__})", resumable=True) from None
        if total is not None and done != total:
            raise _Failed(f"interrupted after {done:,} of {total:,} bytes", resumable=True)
    return h.hexdigest()


def download(
    urls: Sequence[str],
    dest: Path,
    *,
    sha256: str | None = None,
    size: int | None = None,
    retries: int = 2,
    hand_hint: str | None = None,
) -> str:
    """Download the first URL that works to ``dest`` atomically (``dest.part`` then rename). A partial ``.part``
    file is resumed (HTTP Range) by this call or a later one. A wrong size or hash deletes the download. Returns
    the sha256 of the file; every failure is one :class:`UserError` line."""
    part = dest.with_name(dest.name + ".part")
    ensure_dir(dest.parent, "model cache")
    hint = hand_hint if hand_hint is not None else f"download it by hand and put it at {dest}"
    again = f"run again or {hint}" if hint else "run again"
    reasons: list[str] = []
    for url in urls:
        tries = 0
        while True:
            try:
                digest = _attempt(url, part, dest.name)
            except _Failed as exc:
                if exc.resumable and tries < retries:
                    tries += 1
                    continue
                kept = f" (partial download kept in {part}; run again to resume)" if exc.resumable and part.is_file() else ""
                reasons.append(f"{url}: {exc}{kept}")
                break
            got = part.stat().st_size
            if size is not None and got != size:
                part.unlink(missing_ok=True)
                raise UserError.at(url, None, f"downloaded {got:,} bytes, expected {size:,}: deleted; {again}")
            if sha256 is not None and digest != sha256:
                part.unlink(missing_ok=True)
                raise UserError.at(
                    url, None, f"wrong sha256 {digest} (expected {sha256}): download deleted; {again}"
                )
            os.replace(part, dest)
            write_record(dest, digest)
            return digest
    more = f" [+{len(reasons) - 1} mirror(s) failed too]" if len(reasons) > 1 else ""
    raise UserError(f"cannot download {reasons[0]}{more}" + (f"; {hint}" if hint else ""))

