"""The model catalogue: published and bundled weights by name, and the download cache.

The catalogue is data: ``catalogue.toml`` shipped in the package, entries from plugins (the
``restorekit_catalogue`` hook), files named in ``$RESTOREKIT_CATALOGUE`` and files passed by the caller, later
sources replacing earlier entries of the same name. :func:`fetch` turns an entry into a local file: bundled files
live in the installed package (``restorekit/models``), published ones are downloaded once into the cache folder
(``$RESTOREKIT_HOME``, else the platform cache folder), atomically, resuming a partial download where the server
allows it, checked against the published sha256 or, where none is published, against the sha256 recorded beside
the file on first use. Every failure is one :class:`UserError` line naming the URL and the path where the file can
be put by hand.
"""

from __future__ import annotations

import contextlib
import contextvars
import difflib
import hashlib
import http.client
import os
import sys
import tomllib
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import UserError

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from .registry import PluginRegistry

ENV_HOME = "RESTOREKIT_HOME"
ENV_CATALOGUE = "RESTOREKIT_CATALOGUE"
HOOK = "restorekit_catalogue"
TIMEOUT_S = 30.0
CHUNK = 1 << 16
_QUIET: contextvars.ContextVar[bool] = contextvars.ContextVar("restorekit_quiet_downloads", default=False)


# ----------------------------------------------------------------------------------------------------
# entries


class ModelEntry(BaseModel):
    """One named model: where its weights come from, what network they fit, and their licence."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="The name users write: restorekit.load(name), networks.<n>.model, --model.")
    description: str = Field(description="One line.")
    component: str = Field(description="Generator component the weights fit, e.g. 'srflow' or 'rrdb'.")
    preset: str | None = Field(None, description="Params preset of the component.")
    params: dict[str, Any] = Field(default_factory=dict, description="Params on top of the preset.")
    scale: int = Field(ge=1, description="Upscaling factor.")
    parameters: int | None = Field(None, ge=1, description="Parameter count of the loaded network (checked).")
    licence: str = Field(description="Licence of the weights.")
    urls: list[str] = Field(default_factory=list, description="Download URL and mirrors, tried in order.")
    member: str | None = Field(None, description="The file inside the zip archive the URLs point at.")
    file: str | None = Field(None, description="Name of the weights file in the cache (default: from URL/member).")
    size: int | None = Field(None, ge=1, description="Bytes of the download, where published (checked).")
    sha256: str | None = Field(None, description="sha256 of the download, where published (checked).")
    bundled: str | None = Field(None, description="File shipped inside the package folder restorekit/models.")
    source: str = Field("", description="Where the entry was read from (set by the loader).")

    @field_validator("sha256")
    @classmethod
    def _hex(cls, v: str | None) -> str | None:
        if v is not None and (len(v) != 64 or any(c not in "0123456789abcdef" for c in v.lower())):
            raise ValueError("sha256 must be 64 hexadecimal digits")
        return v.lower() if v is not None else None

    @field_validator("urls")
    @classmethod
    def _schemes(cls, v: list[str]) -> list[str]:
        for url in v:
            if urllib.parse.urlsplit(url).scheme not in ("http", "https", "file"):
                raise ValueError(f"{url!r}: only http, https and file URLs")
        return v

    @field_validator("file", "bundled")
    @classmethod
    def _plain_name(cls, v: str | None) -> str | None:
        if v is not None and (not v or "/" in v or "\\" in v or v in (".", "..")):
            raise ValueError(f"{v!r} must be a plain file name")
        return v

    @model_validator(mode="after")
    def _one_source(self) -> "ModelEntry":
        if (self.bundled is None) == (not self.urls):
            raise ValueError("give either urls (a download) or bundled (a file shipped in the package)")
        if self.bundled is not None and (self.member or self.sha256 or self.size):
            raise ValueError("member, sha256 and size describe downloads, not bundled files")
        return self

    @property
    def filename(self) -> str:
        """Name of the weights file (in the cache, or in the package for bundled entries)."""
        if self.bundled is not None:
            return self.bundled
        if self.file is not None:
            return self.file
        if self.member is not None:
            return PurePosixPath(self.member).name
        return _url_name(self.urls[0])

    @property
    def is_bundled(self) -> bool:
        return self.bundled is not None


def _url_name(url: str) -> str:
    name = PurePosixPath(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name
    return name or "download"


class _CatalogueFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    models: dict[str, dict[str, Any]] = Field(default_factory=dict)


def _entries_from_table(models: Mapping[str, Any], source: str) -> dict[str, ModelEntry]:
    from .spec import format_validation_error

    out: dict[str, ModelEntry] = {}
    for name, table in models.items():
        if not isinstance(table, Mapping):
            raise UserError(f"{source}: models.{name}: expected a table")
        try:
            out[name] = ModelEntry.model_validate({**table, "name": name, "source": source})
        except ValidationError as exc:
            raise UserError(format_validation_error(exc, source, prefix=f"models.{name}", model=ModelEntry)) from None
    return out


def read_catalogue_file(path: str | os.PathLike[str]) -> dict[str, ModelEntry]:
    """Entries of one catalogue TOML file (``[models.<name>]`` tables)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: catalogue file not found")
    try:
        with p.open("rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{p}: TOML syntax error: {exc}") from None
    from .spec import format_validation_error

    try:
        parsed = _CatalogueFile.model_validate(data)
    except ValidationError as exc:
        raise UserError(format_validation_error(exc, str(p), model=_CatalogueFile)) from None
    return _entries_from_table(parsed.models, str(p))


def packaged_catalogue_path() -> Path:
    return Path(__file__).with_name("catalogue.toml")


def bundled_dir() -> Path:
    """The package folder holding the bundled models."""
    return Path(__file__).with_name("models")


def _plugin_entries(registry: "PluginRegistry") -> dict[str, ModelEntry]:
    """Entries from every plugin's ``restorekit_catalogue`` hook: ModelEntry objects, tables or catalogue files."""
    out: dict[str, ModelEntry] = {}
    caller = getattr(registry.pm.hook, HOOK, None)
    if caller is None:
        return out
    for impl in caller.get_hookimpls():
        info = registry.plugins.get(impl.plugin_name)
        if info is not None and info.status != "ok":
            continue
        where = f"plugin {impl.plugin_name!r}: {HOOK}()"
        try:
            result = impl.function()
        except Exception as exc:  # noqa: BLE001 - a broken plugin hook is one line, not a traceback
            raise UserError(f"{where} failed: {type(exc).__name__}: {exc}") from None
        for item in result or []:
            if isinstance(item, ModelEntry):
                out[item.name] = item.model_copy(update={"source": item.source or where})
            elif isinstance(item, (str, os.PathLike)):
                out.update(read_catalogue_file(item))
            elif isinstance(item, Mapping) and "name" in item:
                table = {k: v for k, v in item.items() if k != "name"}
                out.update(_entries_from_table({str(item["name"]): table}, where))
            else:
                raise UserError(f"{where}: returned {type(item).__name__}; expected ModelEntry, a table or a path")
    return out


def load_catalogue(
    extra: Iterable[str | os.PathLike[str]] | str | os.PathLike[str] | None = None,
    *,
    registry: "PluginRegistry | None" = None,
) -> dict[str, ModelEntry]:
    """Every known entry: packaged < plugins (``registry``) < ``$RESTOREKIT_CATALOGUE`` files < ``extra`` files."""
    entries: dict[str, ModelEntry] = {}
    base = packaged_catalogue_path()
    if base.is_file():
        entries.update(read_catalogue_file(base))
    if registry is not None:
        entries.update(_plugin_entries(registry))
    env = os.environ.get(ENV_CATALOGUE, "")
    for item in (p for p in env.split(os.pathsep) if p.strip()):
        entries.update(read_catalogue_file(item.strip()))
    if isinstance(extra, (str, os.PathLike)):
        extra = [extra]
    for item in extra or []:
        entries.update(read_catalogue_file(item))
    return entries


def lookup(name: str, entries: Mapping[str, ModelEntry], *, where: str = "model") -> ModelEntry:
    """The entry ``name``; an unknown name is a one-line error with a suggestion."""
    if name in entries:
        return entries[name]
    match = difflib.get_close_matches(name, list(entries), n=1, cutoff=0.6)
    hint = f" (did you mean {match[0]!r}?)" if match else ""
    raise UserError(f"{where}: unknown model {name!r}{hint}; `restore-run --list-models` lists the known names")


def looks_like_name(text: str) -> bool:
    """A catalogue-style name (no folder, no file suffix) rather than a path."""
    return "/" not in text and "\\" not in text and not Path(text).suffix


# ----------------------------------------------------------------------------------------------------
# cache folder


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
    return cache_dir() / "downloads" / _url_name(entry.urls[0])


def is_cached(entry: ModelEntry) -> bool:
    return model_path(entry).is_file()


@contextlib.contextmanager
def quiet_downloads(quiet: bool = True) -> Iterator[None]:
    """No progress bars inside this block (``restore-run --quiet``)."""
    token = _QUIET.set(quiet)
    try:
        yield
    finally:
        _QUIET.reset(token)


# ----------------------------------------------------------------------------------------------------
# hashes


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
    from .checkpoint import atomic_write

    atomic_write(record_path(path), lambda tmp: tmp.write_text(f"{digest}  {path.name}\n", encoding="utf-8"))


def verify(path: Path, published: str | None) -> str:
    """Check ``path`` against the published sha256, else against the one recorded on first use (recording it if
    there is none yet). Returns the digest."""
    digest = sha256_file(path)
    if published is not None:
        if digest != published:
            raise UserError(
                f"{path}: sha256 {digest} does not match the published {published}; delete the file to download it again"
            )
        return digest
    recorded = read_record(path)
    if recorded is None:
        write_record(path, digest)
    elif recorded != digest:
        raise UserError(
            f"{path}: sha256 {digest} differs from {recorded} recorded when it was first used (corrupt or replaced); "
            f"delete it and {record_path(path).name} to download it again"
        )
    return digest


# ----------------------------------------------------------------------------------------------------
# downloads


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

    from . import __version__

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
    dest.parent.mkdir(parents=True, exist_ok=True)
    hint = hand_hint or f"download it by hand and put it at {dest}"
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
                raise UserError(f"{url}: downloaded {got:,} bytes, expected {size:,}: deleted; run again or {hint}")
            if sha256 is not None and digest != sha256:
                part.unlink(missing_ok=True)
                raise UserError(
                    f"{url}: wrong sha256 {digest} (expected {sha256}): download deleted; run again or {hint}"
                )
            os.replace(part, dest)
            write_record(dest, digest)
            return digest
    more = f" [+{len(reasons) - 1} mirror(s) failed too]" if len(reasons) > 1 else ""
    raise UserError(f"cannot download {reasons[0]}{more}; {hint}")


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
                    raise UserError(
                        f"{archive}: no member {member!r} in the archive ({len(names)} files: "
                        f"{', '.join(names[:6])}{', ...' if len(names) > 6 else ''})"
                    )
                name = found[0]
            from .files import atomic_write

            h = hashlib.sha256()

            def extract(tmp: Path) -> None:
                with tmp.open("wb") as out, z.open(name) as src:
                    for chunk in iter(lambda: src.read(1 << 20), b""):
                        out.write(chunk)
                        h.update(chunk)

            atomic_write(dest, extract)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise UserError(f"{archive}: not a readable zip archive ({exc}); delete it to download it again") from None
    digest = h.hexdigest()
    write_record(dest, digest)
    return digest


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An exclusive lock (a file in ``<cache>/locks``, POSIX) so that two processes never write the same download."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock
        yield
        return
    folder = cache_dir() / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / (hashlib.sha1(str(path).encode()).hexdigest()[:16] + ".lock"), "a+b") as f:
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


# ----------------------------------------------------------------------------------------------------
# checks after loading


def count_parameters(module: "nn.Module") -> int:
    return sum(p.numel() for p in module.parameters())


def check_loaded(entry: ModelEntry, component: str, module: "nn.Module", path: Path) -> None:
    """The network loaded from ``path`` is what ``entry`` promises: component, scale and parameter count."""
    if component != entry.component:
        raise UserError(
            f"{path}: holds a {component!r} network, but catalogue entry {entry.name!r} says {entry.component!r}"
        )
    scale = getattr(module, "scale", None)
    if scale is not None and int(scale) != entry.scale:
        raise UserError(f"{path}: network scale is x{scale}, but catalogue entry {entry.name!r} says x{entry.scale}")
    if entry.parameters is not None:
        n = count_parameters(module)
        if n != entry.parameters:
            raise UserError(
                f"{path}: network has {n:,} parameters, but catalogue entry {entry.name!r} says {entry.parameters:,}"
            )


# ----------------------------------------------------------------------------------------------------
# listing


def _human(n: float) -> str:
    """Bytes as ``812 B``, ``1.6 MB``, ``158 MB`` (decimal units)."""
    unit = "B"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            break
        n /= 1000
    return f"{n:.1f} {unit}" if unit != "B" and n < 10 else f"{n:.0f} {unit}"


def size_of(entry: ModelEntry) -> tuple[int | None, str]:
    """(bytes, text): the file's size when present, else the published size, else ~4 bytes per parameter."""
    path = model_path(entry)
    if path.is_file():
        n = path.stat().st_size
        return n, _human(n)
    if entry.size is not None and entry.member is None:
        return entry.size, _human(entry.size)
    if entry.parameters is not None:
        return None, "~" + _human(entry.parameters * 4)
    return None, "?"


def listing(entries: Mapping[str, ModelEntry]) -> list[dict[str, Any]]:
    """One record per entry for ``restore-run --list-models`` (``--json`` prints these)."""
    rows = []
    for name in sorted(entries):
        e = entries[name]
        nbytes, text = size_of(e)
        rows.append({
            "name": name, "component": e.component, "preset": e.preset, "scale": e.scale, "parameters": e.parameters,
            "size": text, "bytes": nbytes, "cached": is_cached(e), "bundled": e.is_bundled,
            "path": str(model_path(e)), "licence": e.licence, "description": e.description, "urls": list(e.urls),
            "member": e.member, "sha256": e.sha256,
        })
    return rows


def format_listing(rows: Sequence[Mapping[str, Any]]) -> str:
    head = ("name", "scale", "size", "cached", "licence", "description")
    table = [head] + [
        (r["name"], f"x{r['scale']}", r["size"], ("bundled" if r["bundled"] else "yes") if r["cached"] else "no",
         r["licence"], r["description"])
        for r in rows
    ]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(head) - 1)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row[:-1], widths)) + "  " + str(row[-1]) for row in table]
    lines.append(f"cache: {cache_dir() / 'models'} (set ${ENV_HOME} to move it)")
    return "\n".join(line.rstrip() for line in lines)
