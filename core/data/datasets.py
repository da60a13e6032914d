"""Image-folder datasets for training and validation, and the resumable batch stream.

* :func:`find_images` (:mod:`restorekit.data.find`) lists the images of folders (recursive), files and globs,
  with their relative names; corruptions and augmentations live in :mod:`restorekit.data.corrupt`.
* :class:`TrainDataset` returns random HR crops of ``target_size`` and their LR (made by a downsampler, or
  cropped from a paired LR folder), augmented by flips / 90-degree rotations and corrupted (blur, noise, JPEG).
  Every random choice of an item comes from a generator seeded by ``(seed, epoch, index)``: the same run seed
  gives the same items whatever the number of workers, processes or restarts.
* :func:`load_val_samples` returns full images (or fixed centre crops) as :class:`~restorekit.components.Sample`.
* :class:`BatchStream` turns a dataset into an endless stream of batches whose position (epoch, batch) can be
  saved and restored; it uses a :class:`ShardedSampler` (a ``DistributedSampler``) for data order and sharding.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from ..components import Sample
from ..errors import UserError
from ..spec import DatasetSpec
from .corrupt import augment, check_corrupt, corrupt, item_rng, pad_to
from .find import ImageEntry, find_images, paired_path
from .io import DEFAULT_MAX_PIXELS, image_size, read_image
from .resize import downsample

log = logging.getLogger("restorekit.data")

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
