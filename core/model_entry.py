"""Model catalogue entries: what the ``restorekit_catalogue`` hook returns, read by ``restorekit.catalogue``.

A module of its own (pydantic only) so that the hook specs can name the type without importing the catalogue
package and its downloader.
"""

from __future__ import annotations

import urllib.parse
from pathlib import PurePosixPath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator



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
