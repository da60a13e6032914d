"""Reading and writing images with imageio: float (C,H,W) tensors in [0,1], bit depth kept."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
from torch import Tensor

from ..errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")


@dataclass(frozen=True)
class Image:
    """An RGB image ``rgb`` (3,H,W) float32 in [0,1]; ``alpha`` (1,H,W) or None; the source's bit depth and
    whether it was grayscale (written back the same way)."""

    rgb: Tensor
    alpha: Tensor | None
    bits: int
    gray: bool


def read_image(path: str | Path) -> Image:
    """Read an image file; grayscale becomes 3 channels, RGBA keeps its alpha separately.

    Raises :class:`UserError` naming the file when it is missing or unreadable.
    """
    p = Path(path)
    try:
        arr = _read_png16(p) if _png_bit_depth(p) == 16 else iio.imread(p)
    except FileNotFoundError:
        raise UserError(f"{p}: image file not found") from None
    except Exception as exc:  # noqa: BLE001 - imageio raises many types for corrupt files
        msg = str(exc).strip().splitlines()
        raise UserError(f"{p}: unreadable image ({msg[0][:120] if msg else type(exc).__name__})") from None
    if arr.ndim == 3 and arr.shape[0] in (1,) and arr.shape[-1] not in (1, 3, 4):
        arr = arr[0]
    if arr.ndim == 4:  # animated: first frame
        arr = arr[0]
    if arr.dtype == np.uint8:
        bits, scale = 8, 255.0
    elif arr.dtype == np.uint16:
        bits, scale = 16, 65535.0
    elif arr.dtype == bool:
        bits, scale = 8, 1.0
    elif np.issubdtype(arr.dtype, np.floating):
        bits, scale = 32, 1.0
    else:
        raise UserError(f"{p}: unsupported pixel type {arr.dtype}")
    data = np.asarray(arr, dtype=np.float32) / scale
    gray = data.ndim == 2 or (data.ndim == 3 and data.shape[-1] in (1, 2))
    if data.ndim == 2:
        data = data[..., None]
    if data.ndim != 3:
        raise UserError(f"{p}: unsupported image shape {arr.shape}")
    alpha = None
    if data.shape[-1] in (2, 4):
        alpha = torch.from_numpy(np.ascontiguousarray(data[..., -1:].transpose(2, 0, 1)))
        data = data[..., :-1]
    if data.shape[-1] == 1:
        data = np.repeat(data, 3, axis=-1)
    rgb = torch.from_numpy(np.ascontiguousarray(data.transpose(2, 0, 1))).clamp_(0, 1)
    return Image(rgb=rgb, alpha=alpha, bits=bits, gray=gray)


def _png_bit_depth(p: Path) -> int | None:
    """The bit depth in a PNG's header, or None for other (or unreadable) files."""
    try:
        with p.open("rb") as f:
            head = f.read(26)
    except OSError:
        return None
    if len(head) == 26 and head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        return head[24]
    return None


def _read_png16(p: Path) -> np.ndarray:
    """16-bit PNGs through pypng (Pillow reduces 16-bit colour PNGs to 8 bits)."""
    import png

    width, height, rows, info = png.Reader(filename=str(p)).asDirect()
    planes = info["planes"]
    arr = np.vstack([np.asarray(r, dtype=np.uint16) for r in rows]).reshape(height, width, planes)
    return arr[..., 0] if planes == 1 else arr


def _write_png16(path: Path, arr: np.ndarray) -> None:
    import png

    a = arr[..., None] if arr.ndim == 2 else arr
    h, w, c = a.shape
    writer = png.Writer(width=w, height=h, bitdepth=16, greyscale=c in (1, 2), alpha=c in (2, 4))
    with path.open("wb") as f:
        writer.write(f, a.reshape(h, w * c))


def to_array(rgb: Tensor, alpha: Tensor | None = None, *, bits: int = 8, gray: bool = False) -> np.ndarray:
    """(3,H,W) float in [0,1] (+ alpha) → HWC uint8/uint16 array (non-finite values are an error)."""
    if not torch.isfinite(rgb).all():
        raise ValueError("refusing to write non-finite pixels")
    x = rgb.detach().float().clamp(0, 1).cpu()
    if gray:
        x = x.mean(0, keepdim=True)
    if alpha is not None:
        x = torch.cat([x, alpha.detach().float().clamp(0, 1).cpu()], 0)
    arr = x.permute(1, 2, 0).numpy()
    if bits == 16:
        out = np.round(arr * 65535.0).astype(np.uint16)
    else:
        out = np.round(arr * 255.0).astype(np.uint8)
    return out[..., 0] if out.shape[-1] == 1 else out


def write_image(path: str | Path, rgb: Tensor, alpha: Tensor | None = None, *, bits: int = 8, gray: bool = False) -> None:
    """Write (3,H,W) in [0,1] to ``path`` (format from the suffix); 16-bit where the format allows."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.suffix.lower() in (".jpg", ".jpeg", ".webp"):
        bits, alpha = 8, (alpha if p.suffix.lower() == ".webp" else None)
    arr = to_array(rgb, alpha, bits=bits, gray=gray)
    tmp = p.with_name(f".{p.name}.tmp{p.suffix}")
    try:
        if arr.dtype == np.uint16 and p.suffix.lower() == ".png":
            _write_png16(tmp, arr)
        else:
            iio.imwrite(tmp, arr)
        tmp.replace(p)
    finally:
        tmp.unlink(missing_ok=True)
