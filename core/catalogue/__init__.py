"""The model catalogue: published and bundled weights by name, and the download cache.

The catalogue is data: ``catalogue.toml`` shipped in the package, entries from plugins (the
``restorekit_catalogue`` hook), files named in ``$RESTOREKIT_CATALOGUE`` and files passed by the caller, later
sources replacing earlier entries of the same name. :func:`fetch` turns an entry into a local file: bundled files
live in the installed package (``restorekit/models``), published ones are downloaded once into the cache folder
(``$RESTOREKIT_HOME``, else the platform cache folder), atomically, resuming a partial download where the server
allows it, checked against the published sha256 or, where none is published, against the sha256 recorded beside
the file on first use. Every failure is one :class:`UserError` line naming the URL and the path where the file can
be put by hand.

Layout (one job per module): ``entries`` (:class:`ModelEntry`, catalogue files, plugin entries, lookup, the check
after loading), ``cache`` (cache folder, file locations, :func:`fetch`), ``download`` (HTTP download with resume),
``hashes`` (sha256 checks and records), ``archive`` (zip member extraction), ``listing`` (``--list-models``).
"""

from __future__ import annotations

from .archive import extract_member
from .cache import (
    ENV_HOME,
    Source,
    archive_path,
    bundled_dir,
    cache_dir,
    fetch,
    is_cached,
    mirror_archive_path,
    model_path,
    sources,
)
from ..model_entry import Mirror
from .download import CHUNK, TIMEOUT_S, download, quiet_downloads
from .entries import (
    ENV_CATALOGUE,
    HOOK,
    ModelEntry,
    check_component,
    check_loaded,
    count_parameters,
    load_catalogue,
    lookup,
    looks_like_name,
    packaged_catalogue_path,
    read_catalogue_file,
)
from .hashes import read_record, record_path, sha256_file, verify, write_record
from .listing import listing, size_of

__all__ = [
    "CHUNK",
    "ENV_CATALOGUE",
    "ENV_HOME",
    "HOOK",
    "Mirror",
    "ModelEntry",
    "TIMEOUT_S",
    "Source",
    "archive_path",
    "bundled_dir",
    "cache_dir",
    "check_component",
    "check_loaded",
    "count_parameters",
    "download",
    "extract_member",
    "fetch",
    "is_cached",
    "listing",
    "load_catalogue",
    "looks_like_name",
    "lookup",
    "mirror_archive_path",
    "model_path",
    "packaged_catalogue_path",
    "quiet_downloads",
    "read_catalogue_file",
    "read_record",
    "record_path",
    "sha256_file",
    "size_of",
    "sources",
    "verify",
    "write_record",
]
