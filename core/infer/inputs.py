"""The inputs of an inference run: finding the images (files, folders, globs), sharding them over ranks and
reading one into the network's input (``lr``), with the HR image, alpha channel, bit depth and grayness."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from torch import Tensor

from ..data.find import find_images
from ..data.io import DEFAULT_MAX_PIXELS, Image, read_image
from ..data.resize import downsample
from ..errors import UserError
from ..tiling import round_down
from .imaging import upsample_bicubic

if TYPE_CHECKING:
    from .slots import Slot


@dataclass(frozen=True)
class InputItem:
    """An input image and its output location relative to the output folder, without suffix (``sub/name`` for an
    image found in a subfolder of an input folder or glob root, ``name`` otherwise)."""

    path: Path
    rel: Path


def output_stem(path: Path) -> str:
    """The output name of an input file, without suffix: its stem, unless that is no file name (``..png`` has
    the stem ``.``, which would write beside the output folder): then its name with dots made underscores."""
    stem = path.stem
    return stem if stem.strip(".") else path.name.replace(".", "_")


def collect_inputs(patterns: Sequence[Path], exclude: Path | None = None) -> list[InputItem]:
    """Files, folders and globs → input items, found by the one walker (:func:`restorekit.data.find.find_images`:
    its rules, and its one-line errors naming ``infer.inputs``). Every image keeps its relative sub-path in the
    output folder; images under ``exclude`` (the output folder, inside an input folder) are left out."""
    return [InputItem(e.path, Path(e.name).parent / output_stem(Path(e.name)))
            for e in find_images(patterns, "infer.inputs", exclude=exclude)]


def shard(items: list[InputItem], rank: int, world: int) -> list[InputItem]:
    """Rank ``rank``'s share of the inputs (every ``world``-th, starting at ``rank``)."""
    return items[rank::world] if world > 1 else items


@dataclass
class Prepared:
    """A read input: ``lr`` (3, h, w) the network input; ``hr`` (3, H, W) the (cropped) HR image for HR inputs;
    ``alpha`` at output resolution (or None); the source's bit depth and grayness; the outputs still to write."""

    item: InputItem
    lr: Tensor
    hr: Tensor | None
    alpha: Tensor | None
    bits: int
    gray: bool
    todo: list[tuple[Slot, Path]]
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class InputReader:
    """Reads inputs for a network of ``scale``: LR images as they are, or HR images (``hr_input``) cropped to a
    multiple of ``hr_multiple`` and downsampled with ``downsampler``."""

    scale: int
    hr_input: bool
    hr_multiple: int
    downsampler: str
    component: str
    max_pixels: int | None = DEFAULT_MAX_PIXELS

    def crop_hr(self, rgb: Tensor, path: Path) -> Tensor:
        h, w = rgb.shape[-2:]
        hh, ww = round_down(h, self.hr_multiple), round_down(w, self.hr_multiple)
        if hh < 1 or ww < 1:
            raise UserError.at(
                path, None, f"image {h}x{w} is smaller than {self.hr_multiple} pixels (scale x size multiple of "
                f"{self.component!r})"
            )
        return rgb[:, :hh, :ww]

    def prepare(self, item: InputItem, todo: list[tuple[Slot, Path]]) -> Prepared:
        img: Image = read_image(item.path, max_pixels=self.max_pixels)
        if self.hr_input:
            hr = self.crop_hr(img.rgb, item.path)
            lr = downsample(hr[None], self.scale, self.downsampler)[0]
            alpha = img.alpha[:, : hr.shape[-2], : hr.shape[-1]] if img.alpha is not None else None
        else:
            hr, lr = None, img.rgb
            alpha = upsample_bicubic(img.alpha[None], self.scale)[0] if img.alpha is not None else None
        return Prepared(item, lr, hr, alpha, img.bits, img.gray, todo, img.notes)


__all__ = ["InputItem", "InputReader", "Prepared", "collect_inputs", "output_stem", "shard"]
