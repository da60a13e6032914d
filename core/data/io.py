"""Reading and writing images: float (C,H,W) tensors in [0,1], bit depth kept, shown as a viewer shows them.

Reading checks the pixel count in the file's header before any pixel is decoded (``max_pixels``, the spec field
``run.max_pixels``), applies the EXIF orientation (as Pillow's ``ImageOps.exif_transpose`` and every viewer do),
converts CMYK/YCbCr/LAB to RGB the way Pillow's ``convert("RGB")`` does, and takes the first frame of an animated
file (GIF, WebP, multi-page TIFF). What was done is listed in :attr:`Image.notes`. Writing goes through
:func:`restorekit.files.atomic_write`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import imageio.v3 as iio
import numpy as np
import torch
from torch import Tensor

from ..errors import UserError, one_line
from ..files import atomic_write
from .png import encode_png16, read_png16, with_png_text

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif")
TIFF_SUFFIXES = (".tif", ".tiff")
DEFAULT_MAX_PIXELS = 100_000_000
"""Default of ``run.max_pixels``: larger images (width x height, from the header) are refused before decoding."""


@dataclass(frozen=True)
class Image:
    """An RGB image ``rgb`` (3,H,W) float32 in [0,1]; ``alpha`` (1,H,W) or None; the source's bit depth and
    whether it was grayscale (written back the same way); ``notes``: conversions made while reading (EXIF
    orientation applied, CMYK converted, first frame of an animation taken)."""

    rgb: Tensor
    alpha: Tensor | None
    bits: int
    gray: bool
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Header:
    """What an image file's header says, read without decoding pixels."""

    width: int
    height: int
    frames: int = 1
    orientation: int = 1
    mode: str | None = None
    reader: str = "pillow"  # pillow | png16 | tifffile

    @property
    def pixels(self) -> int:
        return self.width * self.height


class ImageTooLarge(UserError):
    """An image whose header announces more pixels than ``max_pixels`` (it is never decoded)."""


@contextlib.contextmanager
def _pillow_unbounded() -> Iterator[None]:
    """Pillow's own decompression-bomb guard off: the caller has checked the size against ``max_pixels``."""
    from PIL import Image as PILImage

    old = PILImage.MAX_IMAGE_PIXELS
    PILImage.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        PILImage.MAX_IMAGE_PIXELS = old


def _png_ihdr(p: Path) -> tuple[int, int, int] | None:
    """(width, height, bit depth) from a PNG's IHDR, or None for other files."""
    try:
        with p.open("rb") as f:
            head = f.read(26)
    except OSError:
        return None
    if len(head) == 26 and head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big"), head[24]
    return None


def read_header(path: str | Path) -> Header:
    """Size, frame count, EXIF orientation and mode from the file's header (no pixel is decoded).

    Raises :class:`UserError` naming the file when it is missing or no reader recognises it.
    """
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise UserError.at(p, None, "image file not found")
    png = _png_ihdr(p)
    try:
        with _pillow_unbounded(), PILImage.open(p) as im:
            frames = int(getattr(im, "n_frames", 1)) if getattr(im, "is_animated", False) else 1
            orientation = _orientation(im)
            w, h = im.size
            tags = getattr(im, "tag_v2", None)
            if tags is not None and isinstance(tags.get(256), int) and isinstance(tags.get(257), int):
                w, h = tags[256], tags[257]  # stored size (newer Pillows report TIFF sizes already oriented)
            reader = "png16" if png is not None and png[2] == 16 else "pillow"
            if reader == "pillow" and p.suffix.lower() in TIFF_SUFFIXES and not _pillow_tiff_mode(im.mode):
                reader = "tifffile"
            return Header(int(w), int(h), frames, orientation if 1 <= orientation <= 8 else 1, im.mode, reader)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, TypeError) as exc:
        pillow_error = exc
    if png is not None:  # a PNG Pillow does not take (e.g. a chunk it rejects): pypng reads it
        return Header(png[0], png[1], reader="png16")
    if p.suffix.lower() in TIFF_SUFFIXES or _is_tiff(p):
        try:
            import tifffile

            with tifffile.TiffFile(p) as tif:
                page = tif.pages[0]
                tag = page.tags.get(274)
                orientation = int(tag.value) if tag is not None else 1
                return Header(int(page.imagewidth), int(page.imagelength), len(tif.pages),
                              orientation if 1 <= orientation <= 8 else 1, None, "tifffile")
        except Exception as exc:  # noqa: BLE001 - tifffile raises many types for broken files
            pillow_error = exc
    raise UserError.at(p, None, f"unreadable image ({one_line(pillow_error)})")


def _orientation(im: Any) -> int:
    """The EXIF orientation tag of an opened (not decoded) Pillow image; 1 when absent or broken.

    ``Image.getexif()`` is not used: for PNG it decodes the whole image to look for a trailing eXIf chunk."""
    from PIL import Image as PILImage

    try:
        tags = getattr(im, "tag_v2", None)
        if tags is not None:  # TIFF
            return int(tags.get(0x0112, 1) or 1)
        raw = im.info.get("exif")
        if not raw:
            return 1
        exif = PILImage.Exif()
        exif.load(raw)
        return int(exif.get(0x0112, 1) or 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block: shown unrotated, as viewers do
        return 1


def _is_tiff(p: Path) -> bool:
    try:
        with p.open("rb") as f:
            return f.read(4) in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
    except OSError:
        return False


def _pillow_tiff_mode(mode: str) -> bool:
    """TIFF modes read through Pillow (its conversions to RGB); tifffile reads the rest at full depth (Pillow
    reduces 16-bit RGB TIFFs to 8 bits)."""
    return mode in ("P", "PA", "LAB")


def orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply EXIF orientation 1..8 to an (H, W[, C]) array, as ``PIL.ImageOps.exif_transpose`` does."""
    if orientation == 2:
        return arr[:, ::-1]
    if orientation == 3:
        return arr[::-1, ::-1]
    if orientation == 4:
        return arr[::-1]
    if orientation == 5:
        return arr.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(arr, -1)
    if orientation == 7:
        return arr.swapaxes(0, 1)[::-1, ::-1]
    if orientation == 8:
        return np.rot90(arr, 1)
    return arr


def _decode_pillow(p: Path, header: Header) -> tuple[np.ndarray, bool]:
    """The first frame's pixels, and whether Pillow applied the EXIF orientation itself (newer Pillows do for
    TIFF, and drop the tag)."""
    from PIL import Image as PILImage

    with _pillow_unbounded(), PILImage.open(p) as im:
        im.seek(0)
        im.load()
        tags = getattr(im, "tag_v2", None)
        oriented = tags is not None and header.orientation != 1 and tags.get(0x0112, 1) in (1, None)
        if oriented and header.orientation >= 5:  # a transposing orientation shows in the loaded size
            oriented = tuple(im.size) == (header.height, header.width)
        mode = im.mode
        if mode in ("CMYK", "YCbCr", "LAB", "HSV"):
            im = im.convert("RGB")
        elif mode in ("P", "PA"):
            im = im.convert("RGBA" if mode == "PA" or "transparency" in im.info else "RGB")
        elif mode == "1":
            im = im.convert("L")
        elif mode in ("RGBa", "RGBX"):
            im = im.convert("RGBA" if mode == "RGBa" else "RGB")
        elif mode == "La":
            im = im.convert("LA")
        arr = np.asarray(im)
    if arr.dtype.kind == "i" and arr.size and arr.min() >= 0 and arr.max() <= 65535:
        arr = arr.astype(np.uint16)
    elif arr.dtype.kind == "u" and arr.dtype.itemsize == 2:
        arr = arr.astype(np.uint16)
    return arr, oriented


def _cmyk_to_rgb(arr: np.ndarray) -> np.ndarray:
    """CMYK → RGB as Pillow's ``convert("RGB")`` does: each channel (1 - c) x (1 - k)."""
    if arr.dtype == np.uint8:
        from PIL import Image as PILImage

        return np.asarray(PILImage.fromarray(np.ascontiguousarray(arr), "CMYK").convert("RGB"))
    top = float(np.iinfo(arr.dtype).max) if arr.dtype.kind in "ui" else 1.0
    x = arr.astype(np.float64) / top
    rgb = (1.0 - x[..., :3]) * (1.0 - x[..., 3:4])
    return np.round(rgb * top).astype(arr.dtype) if arr.dtype.kind in "ui" else rgb.astype(arr.dtype)


def _decode(p: Path, header: Header) -> tuple[np.ndarray, bool]:
    """Pixels of the first frame, and whether they are already oriented."""
    if header.reader == "png16":
        return read_png16(p), False
    if header.reader == "tifffile":
        import tifffile

        with tifffile.TiffFile(p) as tif:
            page = tif.pages[0]
            arr = page.asarray()
            cmyk = int(page.photometric) == 5  # SEPARATED
        if arr.ndim == 3 and arr.shape[0] in (1, 2, 3, 4) and arr.shape[-1] not in (1, 2, 3, 4):
            arr = np.moveaxis(arr, 0, -1)  # planar (separate) samples
        if cmyk and arr.ndim == 3 and arr.shape[-1] >= 4:
            arr = _cmyk_to_rgb(arr[..., :4])
        return arr, False
    return _decode_pillow(p, header)


def read_image(path: str | Path, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image:
    """Read an image file; grayscale becomes 3 channels, RGBA keeps its alpha separately.

    The header is read first: an image of more than ``max_pixels`` pixels (None: no limit) raises
    :class:`ImageTooLarge` without decoding a pixel. Raises :class:`UserError` naming the file when it is missing
    or unreadable.
    """
    p = Path(path)
    header = read_header(p)
    if max_pixels is not None and header.pixels > max_pixels:
        raise ImageTooLarge.at(
            p, None, f"{header.width}x{header.height} = {header.pixels:,} pixels, over the limit of {max_pixels:,} "
            f"(run.max_pixels); not decoded; if you trust the file, raise the limit: --max-pixels {header.pixels} "
            f"(restore-run --input), --set run.max_pixels={header.pixels} (a pipeline)"
        )
    notes: list[str] = []
    try:
        arr, oriented = _decode(p, header)
    except FileNotFoundError:
        raise UserError.at(p, None, "image file not found") from None
    except MemoryError:
        raise UserError.at(p, None, f"{header.width}x{header.height}: not enough memory to decode it") from None
    except Exception as exc:  # noqa: BLE001 - decoders raise many types for corrupt files
        raise UserError.at(p, None, f"unreadable image ({one_line(exc)})") from None
    if header.frames > 1:
        notes.append(f"first of {header.frames} frames used")
    if header.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        notes.append(f"{header.mode} converted to RGB")
    if header.orientation != 1:
        arr = arr if oriented else orient(arr, header.orientation)
        notes.append(f"EXIF orientation {header.orientation} applied")
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
        raise UserError.at(p, None, f"unsupported pixel type {arr.dtype}")
    data = np.asarray(arr, dtype=np.float32) / scale
    gray = data.ndim == 2 or (data.ndim == 3 and data.shape[-1] in (1, 2))
    if data.ndim == 2:
        data = data[..., None]
    if data.ndim != 3 or data.shape[-1] > 4:
        raise UserError.at(p, None, f"unsupported image shape {arr.shape}")
    alpha = None
    if data.shape[-1] in (2, 4):
        alpha = torch.from_numpy(np.ascontiguousarray(data[..., -1:].transpose(2, 0, 1)))
        data = data[..., :-1]
    if data.shape[-1] == 1:
        data = np.repeat(data, 3, axis=-1)
    rgb = torch.from_numpy(np.ascontiguousarray(data.transpose(2, 0, 1))).clamp_(0, 1)
    return Image(rgb=rgb, alpha=alpha, bits=bits, gray=gray, notes=tuple(notes))


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of an image as read (EXIF orientation applied), from its header alone."""
    h = read_header(path)
    return (h.width, h.height) if h.orientation in (5, 6, 7, 8) else (h.height, h.width)


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


def write_image(
    path: str | Path,
    rgb: Tensor,
    alpha: Tensor | None = None,
    *,
    bits: int = 8,
    gray: bool = False,
    root: Path | None = None,
    text: Mapping[str, str] | None = None,
) -> None:
    """Write (3,H,W) in [0,1] to ``path`` (format from the suffix; 16-bit where the format allows), atomically
    (:func:`restorekit.files.atomic_write`); with ``root``, ``path`` must lie inside that folder. ``text``: PNG
    text chunks (tEXt, Latin-1 keys and values) written into a PNG; other formats ignore it."""
    p = Path(path)
    if p.suffix.lower() in (".jpg", ".jpeg", ".webp"):
        bits, alpha = 8, (alpha if p.suffix.lower() == ".webp" else None)
    arr = to_array(rgb, alpha, bits=bits, gray=gray)

    def write(tmp: Path) -> None:
        if p.suffix.lower() != ".png":
            iio.imwrite(tmp, arr, extension=p.suffix.lower())
            return
        data = encode_png16(arr) if arr.dtype == np.uint16 else iio.imwrite("<bytes>", arr, extension=".png")
        tmp.write_bytes(with_png_text(data, text) if text else data)  # encoded once, written once

    atomic_write(p, write, root=root)
