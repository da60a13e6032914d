"""Image-folder datasets for training and validation, corruptions, and the resumable batch stream.

* :func:`find_images` lists the images of folders (recursive), files and globs, with their relative names.
* :class:`TrainDataset` returns random HR crops of ``target_size`` and their LR (made by a downsampler, or
  cropped from a paired LR folder), augmented by flips / 90-degree rotations and corrupted (blur, noise, JPEG).
  Every random choice of an item comes from a generator seeded by ``(seed, epoch, index)``: the same run seed
  gives the same items whatever the number of workers, processes or restarts.
* :func:`load_val_samples` returns full images (or fixed centre crops) as :class:`~restorekit.components.Sample`.
* :class:`BatchStream` turns a dataset into an endless stream of batches whose position (epoch, batch) can be
  saved and restored; it uses a :class:`ShardedSampler` (a ``DistributedSampler``) for data order and sharding.
"""

from __future__ import annotations

import glob
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import imageio.v3 as iio
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from ..components import Sample
from ..errors import UserError
from ..spec import CorruptSpec, DatasetSpec
from .io import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, image_size, read_image
from .resize import downsample

log = logging.getLogger("restorekit.data")

_GLOB_CHARS = set("*?[")


# ----------------------------------------------------------------------------------------------------
# finding images


@dataclass(frozen=True)
class ImageEntry:
    """An image file and its name relative to the folder (or glob root) it was found under."""

    path: Path
    name: str


def _glob_root(pattern: str) -> Path:
    parts = Path(pattern).parts
    root: list[str] = []
    for part in parts:
        if _GLOB_CHARS & set(part):
            break
        root.append(part)
    return Path(*root) if root else Path(".")


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def find_images(entries: Sequence[Path | str], where: str) -> list[ImageEntry]:
    """The images of ``entries``: folders (searched recursively), image files, or globs (``**`` allowed).

    Order: entries in the given order, each sorted by name; duplicates dropped. ``where`` names the spec
    field in errors (``data.train.hq``). An entry that does not exist or holds no image is a :class:`UserError`.
    """
    found: list[ImageEntry] = []
    seen: set[Path] = set()
    for entry in entries:
        text = str(entry)
        p = Path(entry)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if _is_image(f))
            pairs = [(f, f.relative_to(p).as_posix()) for f in files]
            if not pairs:
                raise UserError(
                    f"{where}: {p}: no images found (looked for {', '.join(s[1:] for s in IMAGE_SUFFIXES)})"
                )
        elif p.is_file():
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                raise UserError(f"{where}: {p}: not an image file (suffixes: {', '.join(IMAGE_SUFFIXES)})")
            pairs = [(p, p.name)]
        elif _GLOB_CHARS & set(text):
            root = _glob_root(text)
            files = sorted(Path(f) for f in glob.glob(text, recursive=True) if _is_image(Path(f)))
            if not files:
                raise UserError(f"{where}: {text}: the pattern matches no image")
            pairs = [(f, _relative(f, root)) for f in files]
        else:
            raise UserError(f"{where}: {p}: no such file or folder")
        for path, name in pairs:
            key = path.resolve()
            if key not in seen:
                seen.add(key)
                found.append(ImageEntry(path, name))
    return found


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.name


def paired_path(lq_root: Path, name: str, where: str) -> Path:
    """The LR image of ``lq_root`` with the same relative name as an HR image (any image suffix)."""
    exact = lq_root / name
    if exact.is_file():
        return exact
    stem = (lq_root / name).with_suffix("")
    for suffix in IMAGE_SUFFIXES:
        for cand in (stem.with_suffix(suffix), stem.with_suffix(suffix.upper())):
            if cand.is_file():
                return cand
    raise UserError(f"{where}.lq: {lq_root}: no LR image for {name!r} (expected {exact})")


# ----------------------------------------------------------------------------------------------------
# corruptions


def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The random generator of one dataset item, a pure function of (seed, epoch, index)."""
    return np.random.default_rng([seed & 0xFFFFFFFFFFFFFFFF, epoch, index])


def gaussian_kernel(sigma: float) -> Tensor:
    """A normalised 1-D Gaussian of standard deviation ``sigma`` with radius ``ceil(3 sigma)``."""
    radius = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(img: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of a (C,H,W) image, reflect padding (replicate for tiny images)."""
    if sigma <= 0:
        return img
    k = gaussian_kernel(sigma).to(img)
    r = (k.numel() - 1) // 2
    c = img.shape[0]
    x = img[None]
    mode = "reflect" if min(img.shape[-2:]) > r else "replicate"
    x = F.pad(x, (r, r, r, r), mode=mode)
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    x = F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return x[0]


def jpeg(img: Tensor, quality: int) -> Tensor:
    """Re-encode a (3,H,W) image in [0,1] as JPEG of ``quality`` (1..100) through imageio and decode it."""
    arr = np.round(img.clamp(0, 1).permute(1, 2, 0).numpy() * 255.0).astype(np.uint8)
    data = iio.imwrite("<bytes>", arr, extension=".jpg", quality=int(quality))
    out = iio.imread(data, extension=".jpg")
    if out.ndim == 2:
        out = np.repeat(out[..., None], 3, axis=-1)
    return torch.from_numpy(np.ascontiguousarray(out[..., :3].transpose(2, 0, 1))).float() / 255.0


def check_corrupt(spec: CorruptSpec, where: str) -> None:
    """Reject ranges that make no sense for their corruption (one-line :class:`UserError`)."""
    if spec.blur is not None and spec.blur.low < 0:
        raise UserError(f"{where}.corrupt.blur.low: sigma must be >= 0 (got {spec.blur.low})")
    if spec.noise is not None and spec.noise.low < 0:
        raise UserError(f"{where}.corrupt.noise.low: sigma must be >= 0 (got {spec.noise.low})")
    if spec.jpeg is not None and not (1 <= spec.jpeg.low and spec.jpeg.high <= 100):
        raise UserError(f"{where}.corrupt.jpeg: quality must lie in 1..100 (got {spec.jpeg.low}..{spec.jpeg.high})")


def corrupt(img: Tensor, spec: CorruptSpec, rng: np.random.Generator) -> Tensor:
    """Apply blur, then noise, then JPEG to a (3,H,W) image, each with its probability and a value drawn
    uniformly from its range. Every draw is taken whether or not the corruption applies, so one choice does
    not shift the others."""
    for kind in ("blur", "noise", "jpeg"):
        r = getattr(spec, kind)
        if r is None:
            continue
        apply = rng.random() < r.p
        value = float(rng.uniform(r.low, r.high))
        noise_seed = int(rng.integers(0, 2**62))
        if not apply:
            continue
        if kind == "blur":
            img = gaussian_blur(img, value)
        elif kind == "noise":
            g = torch.Generator().manual_seed(noise_seed)
            img = (img + value * torch.randn(img.shape, generator=g)).clamp(0, 1)
        else:
            img = jpeg(img, int(round(min(max(value, 1.0), 100.0))))
    return img


# ----------------------------------------------------------------------------------------------------
# geometry helpers


def pad_to(img: Tensor, height: int, width: int) -> Tensor:
    """Pad a (C,H,W) image at the bottom/right to at least height x width (reflect, replicate if too small)."""
    ph, pw = max(0, height - img.shape[-2]), max(0, width - img.shape[-1])
    if not (ph or pw):
        return img
    mode = "reflect" if ph < img.shape[-2] and pw < img.shape[-1] else "replicate"
    return F.pad(img[None], (0, pw, 0, ph), mode=mode)[0]


def augment(imgs: Sequence[Tensor], rng: np.random.Generator, *, flip: bool, rot90: bool) -> list[Tensor]:
    """The same random horizontal flip and 90-degree rotation applied to every image (both draws always taken)."""
    do_flip = bool(rng.random() < 0.5)
    k = int(rng.integers(0, 4))
    out = list(imgs)
    if flip and do_flip:
        out = [t.flip(-1) for t in out]
    if rot90 and k:
        out = [torch.rot90(t, k, dims=(-2, -1)) for t in out]
    return [t.contiguous() for t in out]


# ----------------------------------------------------------------------------------------------------
# training dataset


def select_images(spec: DatasetSpec, where: str) -> list[ImageEntry]:
    """The dataset's images (``hq`` folders/files/globs, at most ``max_images``), after checking its corruption
    ranges and its paired ``lq`` folder; every problem is a :class:`UserError` naming ``where``."""
    check_corrupt(spec.corrupt, where)
    entries = find_images(spec.hq, f"{where}.hq")
    if spec.max_images is not None:
        entries = entries[: spec.max_images]
    if spec.lq is not None and not Path(spec.lq).is_dir():
        raise UserError(f"{where}.lq: {spec.lq}: no such folder")
    return entries


class TrainDataset(Dataset[dict[str, Tensor]]):
    """Random HR crops of ``target_size`` and their LR (``hq`` (3,T,T), ``lq`` (3,T/s,T/s), float in [0,1]).

    Images smaller than the crop are skipped with a warning (or padded: ``small_images = "pad"``). Every
    random choice of item ``i`` in epoch ``e`` comes from :func:`item_rng` ``(seed, e, i)``; call
    :meth:`set_epoch` before iterating an epoch.
    """

    def __init__(self, spec: DatasetSpec, *, scale: int, seed: int, size_multiple: int = 1, where: str = "data.train",
                 max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
        self.spec = spec
        self.scale = int(scale)
        self.seed = int(seed)
        self.where = where
        self.max_pixels = max_pixels
        self.epoch = 0
        unit = self.scale * max(1, int(size_multiple))
        if spec.target_size % unit:
            raise UserError(
                f"{where}.target_size: {spec.target_size} is not a multiple of scale x size_multiple = {unit}"
            )
        entries = select_images(spec, where)
        size = spec.target_size
        kept: list[tuple[ImageEntry, Path | None]] = []
        small: list[str] = []
        large: list[str] = []
        for e in entries:
            lq = paired_path(Path(spec.lq), e.name, where) if spec.lq is not None else None
            h, w = image_size(e.path)
            if max_pixels is not None and h * w > max_pixels:
                large.append(f"{e.name} ({w}x{h})")
                continue
            if (h < size or w < size) and spec.small_images == "skip":
                small.append(e.name)
                continue
            kept.append((e, lq))
        if small:
            log.warning(
                "%s: skipped %d image(s) smaller than target_size %d: %s%s", where, len(small), size,
                ", ".join(small[:5]), " ..." if len(small) > 5 else "",
            )
        if large:
            log.warning(
                "%s: skipped %d image(s) over run.max_pixels = %d (not decoded): %s%s", where, len(large),
                max_pixels, ", ".join(large[:5]), " ..." if len(large) > 5 else "",
            )
        if not kept:
            roots = ", ".join(str(h) for h in spec.hq)
            if large:
                raise UserError(f"{where}.hq: {roots}: no usable image ({len(large)} over run.max_pixels = "
                                f"{max_pixels}, {len(small)} smaller than target_size {size})")
            raise UserError(
                f"{where}.hq: {roots}: no usable image (all {len(entries)} are smaller than target_size {size}; "
                "use smaller crops or small_images = \"pad\")"
            )
        self.items = kept

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random choices the items use."""
        self.epoch = int(epoch)

    def names(self) -> list[str]:
        """Relative names of the images, in index order."""
        return [e.name for e, _ in self.items]

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return self.item(index, self.epoch)

    def item(self, index: int, epoch: int) -> dict[str, Tensor]:
        """Item ``index`` as drawn in ``epoch`` (a pure function of seed, epoch and index)."""
        entry, lq_path = self.items[index]
        rng = item_rng(self.seed, epoch, index)
        s, size = self.scale, self.spec.target_size
        hr = read_image(entry.path, max_pixels=self.max_pixels).rgb
        if lq_path is not None:
            lr = read_image(lq_path, max_pixels=self.max_pixels).rgb
            if hr.shape[-2] < lr.shape[-2] * s or hr.shape[-1] < lr.shape[-1] * s:
                raise UserError(
                    f"{self.where}.lq: {lq_path} is {lr.shape[-2]}x{lr.shape[-1]}, but its HR {entry.path} is "
                    f"{hr.shape[-2]}x{hr.shape[-1]}, not {s}x larger"
                )
            t = size // s
            lr = pad_to(lr, t, t)
            hr = pad_to(hr, t * s, t * s)
            y = int(rng.integers(0, lr.shape[-2] - t + 1))
            x = int(rng.integers(0, lr.shape[-1] - t + 1))
            lr = lr[:, y : y + t, x : x + t]
            hr = hr[:, y * s : (y + t) * s, x * s : (x + t) * s]
            hr, lr = augment([hr, lr], rng, flip=self.spec.flip, rot90=self.spec.rot90)
        else:
            hr = pad_to(hr, size, size)
            y = int(rng.integers(0, hr.shape[-2] - size + 1))
            x = int(rng.integers(0, hr.shape[-1] - size + 1))
            (hr,) = augment([hr[:, y : y + size, x : x + size]], rng, flip=self.spec.flip, rot90=self.spec.rot90)
            lr = downsample(hr, s, self.spec.downsampler)
        lr = corrupt(lr, self.spec.corrupt, rng)
        return {"hq": hr.contiguous(), "lq": lr.contiguous()}


# ----------------------------------------------------------------------------------------------------
# validation samples


def load_val_samples(
    spec: DatasetSpec, *, scale: int, size_multiple: int = 1, seed: int = 0, where: str = "data.val",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> list[Sample]:
    """The validation images as :class:`Sample` items (``lq`` (1,3,h,w), ``hq`` (1,3,s*h,s*w)).

    Full images are cropped (centred) to a multiple of ``scale x size_multiple``; ``crop > 0`` takes a
    centred crop of that HR size instead (it must be such a multiple; smaller images are skipped or padded
    per ``small_images``). Corruptions use :func:`item_rng` ``(seed, 0, index)``.
    """
    s = int(scale)
    unit = s * max(1, int(size_multiple))
    if spec.crop and spec.crop % unit:
        raise UserError(f"{where}.crop: {spec.crop} is not a multiple of scale x size_multiple = {unit}")
    entries = select_images(spec, where)
    samples: list[Sample] = []
    small: list[str] = []
    for index, e in enumerate(entries):
        rng = item_rng(seed, 0, index)
        hr = read_image(e.path, max_pixels=max_pixels).rgb
        if spec.lq is not None:
            lr = read_image(paired_path(Path(spec.lq), e.name, where), max_pixels=max_pixels).rgb
            m = max(1, int(size_multiple))
            want_h, want_w = (spec.crop // s, spec.crop // s) if spec.crop else (
                lr.shape[-2] // m * m, lr.shape[-1] // m * m
            )
            if hr.shape[-2] < lr.shape[-2] * s or hr.shape[-1] < lr.shape[-1] * s:
                raise UserError(f"{where}.lq: the LR of {e.name!r} is not {s}x smaller than its HR")
            if lr.shape[-2] < want_h or lr.shape[-1] < want_w or want_h == 0 or want_w == 0:
                if spec.small_images == "skip" or want_h == 0 or want_w == 0:
                    small.append(e.name)
                    continue
                lr = pad_to(lr, want_h, want_w)
                hr = pad_to(hr, want_h * s, want_w * s)
            y, x = (lr.shape[-2] - want_h) // 2, (lr.shape[-1] - want_w) // 2
            lr = lr[:, y : y + want_h, x : x + want_w]
            hr = hr[:, y * s : (y + want_h) * s, x * s : (x + want_w) * s]
        else:
            if spec.crop:
                want_h = want_w = spec.crop
            else:
                want_h, want_w = hr.shape[-2] // unit * unit, hr.shape[-1] // unit * unit
            if hr.shape[-2] < want_h or hr.shape[-1] < want_w or want_h == 0 or want_w == 0:
                if spec.small_images == "skip" or want_h == 0 or want_w == 0:
                    small.append(e.name)
                    continue
                hr = pad_to(hr, want_h, want_w)
            y, x = (hr.shape[-2] - want_h) // 2, (hr.shape[-1] - want_w) // 2
            hr = hr[:, y : y + want_h, x : x + want_w]
            lr = downsample(hr, s, spec.downsampler)
        lr = corrupt(lr, spec.corrupt, rng)
        samples.append(Sample(e.name, lr[None].contiguous(), hr[None].contiguous()))
    if small:
        log.warning("%s: skipped %d image(s) too small for the crop: %s", where, len(small), ", ".join(small[:5]))
    if not samples:
        roots = ", ".join(str(h) for h in spec.hq)
        raise UserError(f"{where}.hq: {roots}: no usable image (all are smaller than the crop)")
    return samples


# ----------------------------------------------------------------------------------------------------
# data order


class ShardedSampler(DistributedSampler[int]):
    """``DistributedSampler`` (shuffled by ``seed + epoch``, rank ``r`` takes items ``r, r + world, ...``)
    that repeats the permutation until every rank has at least ``min_per_rank`` items and can skip the first
    ``skip`` items of the epoch (resume in the middle of an epoch)."""

    def __init__(self, size: int, *, num_replicas: int, rank: int, seed: int, min_per_rank: int = 1) -> None:
        super().__init__(
            _Sized(size), num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False
        )
        self.size = size
        self.per_rank = max(int(math.ceil(size / num_replicas)), int(min_per_rank))
        self.skip = 0

    def indices(self) -> list[int]:
        """This rank's indices of the current epoch, before skipping."""
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        perm = torch.randperm(self.size, generator=g).tolist()
        total = self.per_rank * self.num_replicas
        reps = int(math.ceil(total / self.size))
        full = (perm * reps)[:total]
        return full[self.rank : total : self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices()[self.skip :])

    def __len__(self) -> int:
        return max(0, self.per_rank - self.skip)


class _Sized:
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n


def physical_memory() -> int | None:
    """Bytes of physical memory of this machine (None where the OS does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return None


def check_batch_memory(batch_size: int, dataset: TrainDataset) -> None:
    """A batch that cannot fit in this machine's memory is a one-line :class:`UserError` naming
    ``<where>.batch_size``, raised before anything is allocated (not a ``MemoryError`` mid-run)."""
    size, s = dataset.spec.target_size, dataset.scale
    per_item = 4 * 3 * (size * size + (size // s) ** 2)  # float32 HR crop + LR crop
    need, have = batch_size * per_item, physical_memory()
    if have is not None and need > have:
        raise UserError(
            f"{dataset.where}.batch_size: {batch_size:,} crops of {size}x{size} need {need / 2**30:,.1f} GiB per "
            f"batch, more than this machine's {have / 2**30:,.1f} GiB of memory"
        )


class BatchStream:
    """An endless stream of training batches with a resumable position.

    Each epoch reshuffles (``seed + epoch``), re-seeds the dataset's items (``set_epoch``) and drops the last
    incomplete batch. ``state_dict()`` holds the epoch and the number of batches taken in it. The DataLoader's
    own random seed comes from a private generator, so the global torch RNG is never touched.
    """

    def __init__(
        self,
        dataset: TrainDataset,
        *,
        batch_size: int,
        workers: int = 0,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
        pin_memory: bool = False,
    ) -> None:
        self.dataset = dataset
        self.batch_size = int(batch_size)
        check_batch_memory(self.batch_size, dataset)
        self.workers = int(workers)
        self.seed = int(seed)
        self.pin_memory = pin_memory
        self.sampler = ShardedSampler(
            len(dataset), num_replicas=world, rank=rank, seed=self.seed, min_per_rank=self.batch_size
        )
        self.epoch = 0
        self.position = 0
        self._iter: Iterator[dict[str, Tensor]] | None = None

    @property
    def batches_per_epoch(self) -> int:
        return self.sampler.per_rank // self.batch_size

    def _start(self) -> None:
        self.sampler.set_epoch(self.epoch)
        self.sampler.skip = self.position * self.batch_size
        self.dataset.set_epoch(self.epoch)
        g = torch.Generator()
        g.manual_seed((self.seed * 1_000_003 + self.epoch) & 0x7FFFFFFFFFFFFFFF)
        loader = DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            sampler=self.sampler,
            num_workers=self.workers,
            pin_memory=self.pin_memory,
            drop_last=True,
            generator=g,
        )
        self._iter = iter(loader)

    def next(self) -> dict[str, Tensor]:
        """The next batch (``hq`` (B,3,T,T), ``lq`` (B,3,t,t))."""
        if self.position >= self.batches_per_epoch:
            self.epoch, self.position, self._iter = self.epoch + 1, 0, None
        if self._iter is None:
            self._start()
        assert self._iter is not None
        try:
            batch = next(self._iter)
        except StopIteration:  # pragma: no cover - position bookkeeping prevents it
            self.epoch, self.position = self.epoch + 1, 0
            self._start()
            batch = next(self._iter)
        self.position += 1
        return batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self._iter = None
