"""Catalogue entries and their sources: :class:`ModelEntry`, catalogue TOML files, plugins' entries, lookup by name,
and the check that loaded weights are what their entry promises."""

from __future__ import annotations

import difflib
import os
import tomllib
import urllib.parse
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import UserError

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from ..registry import PluginRegistry

ENV_CATALOGUE = "RESTOREKIT_CATALOGUE"
HOOK = "restorekit_catalogue"


def _url(url: str) -> str:
    if urllib.parse.urlsplit(url).scheme not in ("http", "https", "file"):
        raise ValueError(f"{url!r}: only http, https and file URLs")
    return url


def _hex(v: str | None) -> str | None:
    if v is not None and (len(v) != 64 or any(c not in "0123456789abcdef" for c in v.lower())):
        raise ValueError("sha256 must be 64 hexadecimal digits")
    return v.lower() if v is not None else None


class Mirror(BaseModel):
    """Another copy of an entry's weights: a single file, or a member of a zip archive. Tried in order after the
    entry's own ``urls``; the first that delivers wins."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(description="Download URL of this copy.")
    member: str | None = Field(None, description="The weights file inside the zip archive at url (none: url is the file).")
    sha256: str | None = Field(None, description="sha256 of this download, where known (checked).")
    size: int | None = Field(None, ge=1, description="Bytes of this download, where known (checked).")
    origin: str = Field("", description="Who published this copy, where (docs/models.md).")

    @field_validator("url")
    @classmethod
    def _scheme(cls, v: str) -> str:
        return _url(v)

    @field_validator("sha256")
    @classmethod
    def _digest(cls, v: str | None) -> str | None:
        return _hex(v)


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
    mirrors: list[Mirror] = Field(
        default_factory=list, description="Other copies (single files or zip members), tried after urls in order.")
    weights_sha256: str | None = Field(
        None, description="sha256 of the weights file itself, whichever source delivered it (checked).")
    member: str | None = Field(None, description="The file inside the zip archive the URLs point at.")
    file: str | None = Field(None, description="Name of the weights file in the cache (default: from URL/member).")
    size: int | None = Field(None, ge=1, description="Bytes of the download, where published (checked).")
    sha256: str | None = Field(None, description="sha256 of the download, where published (checked).")
    bundled: str | None = Field(None, description="File shipped inside the package folder restorekit/models.")
    source: str = Field("", description="Where the entry was read from (set by the loader).")

    @field_validator("sha256", "weights_sha256")
    @classmethod
    def _hex(cls, v: str | None) -> str | None:
        return _hex(v)

    @field_validator("urls")
    @classmethod
    def _schemes(cls, v: list[str]) -> list[str]:
        return [_url(u) for u in v]

    @field_validator("file", "bundled")
    @classmethod
    def _plain_name(cls, v: str | None) -> str | None:
        if v is not None and (not v or "/" in v or "\\" in v or v in (".", "..")):
            raise ValueError(f"{v!r} must be a plain file name")
        return v

    @model_validator(mode="after")
    def _one_source(self) -> "ModelEntry":
        if (self.bundled is None) == (not self.urls and not self.mirrors):
            raise ValueError("give either urls or mirrors (downloads) or bundled (a file shipped in the package)")
        if self.bundled is not None and (self.member or self.sha256 or self.size or self.weights_sha256):
            raise ValueError("member, sha256, weights_sha256 and size describe downloads, not bundled files")
        if not self.urls and (self.member or self.sha256 or self.size):
            raise ValueError("member, sha256 and size describe the download at urls; a mirror has its own")
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
        if self.urls:
            return url_name(self.urls[0])
        first = self.mirrors[0]
        return PurePosixPath(first.member).name if first.member is not None else url_name(first.url)

    @property
    def is_bundled(self) -> bool:
        return self.bundled is not None


def url_name(url: str) -> str:
    name = PurePosixPath(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name
    return name or "download"


class _CatalogueFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    models: dict[str, dict[str, Any]] = Field(default_factory=dict)


def _entries_from_table(models: Mapping[str, Any], source: str) -> dict[str, ModelEntry]:
    from ..spec import format_validation_error

    out: dict[str, ModelEntry] = {}
    for name, table in models.items():
        if not isinstance(table, Mapping):
            raise UserError.at(source, f"models.{name}", "expected a table")
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
    from ..spec import format_validation_error

    try:
        parsed = _CatalogueFile.model_validate(data)
    except ValidationError as exc:
        raise UserError(format_validation_error(exc, str(p), model=_CatalogueFile)) from None
    return _entries_from_table(parsed.models, str(p))


def packaged_catalogue_path() -> Path:
    return Path(__file__).parents[1] / "catalogue.toml"



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
# checks after loading


def count_parameters(module: "nn.Module") -> int:
    return sum(p.numel() for p in module.parameters())


def check_component(entry: ModelEntry, component: str, path: Path) -> None:
    """The file at ``path`` holds the component ``entry`` promises (checked before anything is built)."""
    if component != entry.component:
        raise UserError(
            f"{path}: holds a {component!r} network, but catalogue entry {entry.name!r} says {entry.component!r}"
        )


def check_loaded(entry: ModelEntry, component: str, module: "nn.Module", path: Path) -> None:
    """The network loaded from ``path`` is what ``entry`` promises: component, scale and parameter count."""
    check_component(entry, component, path)
    scale = getattr(module, "scale", None)
    if scale is not None and int(scale) != entry.scale:
        raise UserError(f"{path}: network scale is x{scale}, but catalogue entry {entry.name!r} says x{entry.scale}")
    if entry.parameters is not None:
        n = count_parameters(module)
        if n != entry.parameters:
            raise UserError(
                f"{path}: network has {n:,} parameters, but catalogue entry {entry.name!r} says {entry.parameters:,}"
            )

