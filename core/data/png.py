"""PNG specifics Pillow does not cover: 16-bit colour through pypng, and tEXt chunks (output provenance)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Mapping

import numpy as np


def read_png16(p: Path) -> np.ndarray:
    """16-bit PNGs through pypng (Pillow reduces 16-bit colour PNGs to 8 bits)."""
    import png

    width, height, rows, info = png.Reader(filename=str(p)).asDirect()
    planes = info["planes"]
    arr = np.vstack([np.asarray(r, dtype=np.uint16) for r in rows]).reshape(height, width, planes)
    return arr[..., 0] if planes == 1 else arr


def encode_png16(arr: np.ndarray) -> bytes:
    """A 16-bit PNG of an HWC (or HW) uint16 array, through pypng."""
    import io

    import png

    a = arr[..., None] if arr.ndim == 2 else arr
    h, w, c = a.shape
    writer = png.Writer(width=w, height=h, bitdepth=16, greyscale=c in (1, 2), alpha=c in (2, 4))
    buf = io.BytesIO()
    writer.write(buf, a.reshape(h, w * c))
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def with_png_text(data: bytes, text: Mapping[str, str]) -> bytes:
    """The PNG ``data`` with tEXt chunks (``key\\0value``, Latin-1) inserted before its IEND chunk."""
    end = data.rfind(b"IEND")
    if not data.startswith(b"\x89PNG\r\n\x1a\n") or end < 12:
        raise ValueError("not a PNG file")
    chunks = b"".join(_chunk(b"tEXt", k.encode("latin-1") + b"\0" + v.encode("latin-1")) for k, v in text.items())
    return data[: end - 4] + chunks + data[end - 4:]


def read_png_text(path: str | Path) -> dict[str, str]:
    """The tEXt chunks of a PNG file, by key."""
    data = Path(path).read_bytes()
    out: dict[str, str] = {}
    pos = 8
    while pos + 8 <= len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        if kind == b"tEXt":
            key, _, value = data[pos + 8 : pos + 8 + n].partition(b"\0")
            out[key.decode("latin-1")] = value.decode("latin-1")
        if kind == b"IEND":
            break
        pos += 12 + n
    return out
