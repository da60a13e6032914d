"""Downsamplers, image discovery, training/validation datasets, corruptions and the batch stream."""

from __future__ import annotations

import logging
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from restorekit.data.datasets import (
    BatchStream,
    ShardedSampler,
    TrainDataset,
    corrupt,
    find_images,
    load_val_samples,
)
from restorekit.data.resize import downsample, resize_weights
from restorekit.errors import UserError
from restorekit.spec import CorruptSpec, DatasetSpec

SAMPLES = ("astronaut", "chelsea", "coffee", "rocket")


def write_crop(folder: Path, name: str, size: int | tuple[int, int], source: str = "astronaut") -> Path:
    """A crop of a scikit-image sample written as PNG."""
    h, w = (size, size) if isinstance(size, int) else size
    img = getattr(skimage.data, source)()
    if img.ndim == 2:
        img = np.stack([img] * 3, -1)
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, np.ascontiguousarray(img[40 : 40 + h, 60 : 60 + w, :3]))
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "hq"
    for i, name in enumerate(SAMPLES):
        write_crop(root, f"{'sub/' if i % 2 else ''}{name}.png", 48 + 8 * i, name)
    return root


def ds_spec(**kw: object) -> DatasetSpec:
    return DatasetSpec.model_validate({"target_size": 32, **kw})


# ----------------------------------------------------------------------------------------------------
# downsamplers


@pytest.mark.parametrize("kind", ["bicubic", "bilinear", "area"])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_constant_image_stays_constant(kind: str, scale: int) -> None:
    img = torch.full((2, 3, 12 * scale, 8 * scale), 0.37)
    out = downsample(img, scale, kind)  # type: ignore[arg-type]
    assert out.shape == (2, 3, 12, 8)
    assert torch.allclose(out, torch.full_like(out, 0.37), atol=1e-6)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 40), factor=st.sampled_from([2, 3, 4, 8]))
def test_weight_rows_sum_to_one(n: int, factor: int) -> None:
    w = resize_weights(n * factor, n, 1.0 / factor, "bicubic")
    assert w.shape == (n, n * factor)
    assert torch.allclose(w.sum(1), torch.ones(n, dtype=torch.float64))


@pytest.mark.parametrize("kind,mode", [("bicubic", "bicubic"), ("bilinear", "bilinear")])
@pytest.mark.parametrize("scale", [2, 4])
def test_matches_torch_antialiased_resize_away_from_borders(kind: str, mode: str, scale: int) -> None:
    img = torch.from_numpy(skimage.data.astronaut()[100:196, 200:296].astype(np.float32) / 255).permute(2, 0, 1)[None]
    ours = downsample(img, scale, kind, clamp=False)  # type: ignore[arg-type]
    ref = F.interpolate(img, scale_factor=1 / scale, mode=mode, antialias=True, align_corners=False)
    assert ours.shape == ref.shape
    assert (ours - ref)[..., 3:-3, 3:-3].abs().max() < 1e-5  # same kernel; borders: mirror vs clip
    assert (ours - ref).abs().mean() < 5e-3


def test_downsample_3d_area_and_errors() -> None:
    img = torch.rand(3, 16, 16)
    assert torch.allclose(downsample(img, 4, "area"), F.avg_pool2d(img[None], 4)[0])
    assert downsample(img, 1).equal(img)
    with pytest.raises(ValueError):
        downsample(img, 2, "lanczos")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------------
# finding images


def test_find_images_folders_files_and_globs(folder: Path, tmp_path: Path) -> None:
    names = [e.name for e in find_images([folder], "data.train.hq")]
    assert names == ["astronaut.png", "coffee.png", "sub/chelsea.png", "sub/rocket.png"]
    globbed = find_images([str(folder / "**" / "*.png")], "x")
    assert {e.name for e in globbed} == set(names)
    single = find_images([folder / "astronaut.png", folder / "astronaut.png"], "x")
    assert [e.name for e in single] == ["astronaut.png"]


def test_the_one_walker_rules(tmp_path: Path) -> None:
    """The rules training data, inference inputs and ``restore-run evaluate`` share: image suffixes in any case,
    hidden files and folders skipped, each entry sorted and the entries in the given order, names relative to the
    folder or the glob's fixed part, an output folder inside an input folder left out."""
    root = tmp_path / "in"
    for name in ("b.png", "A.PNG", "sub/c.jpg", "out/old.png", ".hidden.png", ".cache/x.png", "notes.txt"):
        write_crop(root, name, 8) if name.endswith(("png", "PNG", "jpg")) else (root / name).write_text("x")
    first = write_crop(tmp_path, "z.png", 8)
    found = find_images([first, root, root / "b.png"], "infer.inputs", exclude=root / "out")
    assert [e.name for e in found] == ["z.png", "A.PNG", "b.png", "sub/c.jpg"]
    assert [e.name for e in find_images([str(tmp_path / "in" / "**" / "*.jpg")], "x")] == ["sub/c.jpg"]
    assert [e.name for e in find_images([root / ".hidden.png"], "x")] == [".hidden.png"]  # named: taken as named
    assert "out/old.png" in [e.name for e in find_images([root], "x", exclude=root)]  # the folder itself: kept
    with pytest.raises(UserError, match=r"^--input: .*notes.txt: not an image file"):
        find_images([root / "notes.txt"], "--input")


def test_empty_folder_is_a_one_line_user_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(UserError) as exc:
        TrainDataset(ds_spec(hq=[str(empty)]), scale=4, seed=0)
    msg = str(exc.value)
    assert "data.train.hq" in msg and str(empty) in msg and "\n" not in msg
    with pytest.raises(UserError, match="no such file or folder"):
        find_images([tmp_path / "missing"], "data.val.hq")
    with pytest.raises(UserError, match="no image matches this pattern"):
        find_images([str(tmp_path / "*.png")], "data.val.hq")


# ----------------------------------------------------------------------------------------------------
# training dataset


def test_items_are_deterministic_per_seed_epoch_index(folder: Path) -> None:
    ds = TrainDataset(ds_spec(hq=[str(folder)]), scale=4, seed=3)
    a, b = ds.item(1, 0), ds.item(1, 0)
    assert a["hq"].shape == (3, 32, 32) and a["lq"].shape == (3, 8, 8)
    assert torch.equal(a["hq"], b["hq"]) and torch.equal(a["lq"], b["lq"])
    assert not torch.equal(ds.item(1, 1)["hq"], a["hq"])  # another epoch, another crop
    other = TrainDataset(ds_spec(hq=[str(folder)]), scale=4, seed=4)
    assert not torch.equal(other.item(1, 0)["hq"], a["hq"])
    assert torch.allclose(a["lq"], downsample(a["hq"], 4, "bicubic"))


def test_small_images_are_skipped_with_a_warning_or_padded(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "mixed"
    write_crop(root, "big.png", 40)
    write_crop(root, "small.png", (20, 40))
    with caplog.at_level(logging.WARNING, logger="restorekit.data"):
        ds = TrainDataset(ds_spec(hq=[str(root)]), scale=4, seed=0)
    assert ds.names() == ["big.png"]
    assert "small.png" in caplog.text
    padded = TrainDataset(ds_spec(hq=[str(root)], small_images="pad"), scale=4, seed=0)
    assert len(padded) == 2 and padded.item(1, 0)["hq"].shape == (3, 32, 32)
    with pytest.raises(UserError, match="no usable image"):
        TrainDataset(ds_spec(hq=[str(root / "small.png")]), scale=4, seed=0)
    with pytest.raises(UserError, match="target_size: 30 is not a multiple"):
        TrainDataset(ds_spec(hq=[str(root)], target_size=30), scale=4, seed=0)


def test_paired_lr_folder(tmp_path: Path) -> None:
    hq, lq = tmp_path / "hq", tmp_path / "lq"
    path = write_crop(hq, "a/img.png", 64)
    hr = torch.from_numpy(iio.imread(path).astype(np.float32) / 255).permute(2, 0, 1)
    lr = downsample(hr, 2, "area")
    (lq / "a").mkdir(parents=True)
    iio.imwrite(lq / "a" / "img.png", (lr.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    ds = TrainDataset(ds_spec(hq=[str(hq)], lq=str(lq), flip=False, rot90=False), scale=2, seed=0)
    item = ds.item(0, 0)
    assert item["lq"].shape == (3, 16, 16)
    # the LR crop is the area-downsampled HR crop (up to 8-bit rounding)
    assert (downsample(item["hq"], 2, "area") - item["lq"]).abs().max() < 1 / 255 + 1e-6
    (lq / "a" / "img.png").unlink()
    with pytest.raises(UserError, match="no LR image for 'a/img.png'"):
        TrainDataset(ds_spec(hq=[str(hq)], lq=str(lq)), scale=2, seed=0)


def test_corruptions_are_deterministic_and_do_something(folder: Path) -> None:
    spec = {"blur": {"p": 1.0, "low": 0.5, "high": 1.5}, "noise": {"p": 1.0, "low": 0.02, "high": 0.05},
            "jpeg": {"p": 1.0, "low": 20, "high": 40}}
    clean = TrainDataset(ds_spec(hq=[str(folder)]), scale=2, seed=5)
    dirty = TrainDataset(ds_spec(hq=[str(folder)], corrupt=spec), scale=2, seed=5)
    a, b = dirty.item(2, 0), dirty.item(2, 0)
    assert torch.equal(a["lq"], b["lq"])
    assert torch.equal(a["hq"], clean.item(2, 0)["hq"])  # corruptions touch LQ only
    assert (a["lq"] - clean.item(2, 0)["lq"]).abs().mean() > 0.005
    assert not torch.equal(dirty.item(2, 1)["lq"], a["lq"])
    rng1, rng2 = np.random.default_rng(1), np.random.default_rng(1)
    img = torch.rand(3, 16, 16)
    cs = CorruptSpec.model_validate(spec)
    assert torch.equal(corrupt(img, cs, rng1), corrupt(img, cs, rng2))
    with pytest.raises(UserError, match=r"data.train.corrupt.jpeg: quality must lie in 1..100"):
        TrainDataset(ds_spec(hq=[str(folder)], corrupt={"jpeg": {"p": 1, "low": 0, "high": 50}}), scale=2, seed=0)


# ----------------------------------------------------------------------------------------------------
# validation samples


def test_validation_samples_full_and_centre_crops(folder: Path) -> None:
    full = load_val_samples(ds_spec(hq=[str(folder)]), scale=4, size_multiple=2, seed=0)
    assert len(full) == 4
    for s in full:
        assert s.hq.shape[-1] % 8 == 0 and s.hq.shape[-2] % 8 == 0
        assert s.lq.shape[-2:] == (s.hq.shape[-2] // 4, s.hq.shape[-1] // 4)
    crops = load_val_samples(ds_spec(hq=[str(folder)], crop=48), scale=4, seed=0)
    assert [tuple(s.hq.shape) for s in crops] == [(1, 3, 48, 48)] * 4
    with pytest.raises(UserError, match="data.val.crop: 50 is not a multiple"):
        load_val_samples(ds_spec(hq=[str(folder)], crop=50), scale=4, seed=0)


# ----------------------------------------------------------------------------------------------------
# data order


def test_sharded_sampler_splits_the_single_process_order() -> None:
    single = ShardedSampler(10, num_replicas=1, rank=0, seed=1).indices()
    r0 = ShardedSampler(10, num_replicas=2, rank=0, seed=1).indices()
    r1 = ShardedSampler(10, num_replicas=2, rank=1, seed=1).indices()
    assert single[0::2] == r0 and single[1::2] == r1
    tiny = ShardedSampler(3, num_replicas=1, rank=0, seed=0, min_per_rank=8).indices()
    assert len(tiny) == 8 and set(tiny) == {0, 1, 2}


def test_batch_stream_resumes_mid_epoch(folder: Path) -> None:
    ds = TrainDataset(ds_spec(hq=[str(folder)], target_size=16), scale=2, seed=0)
    ref = BatchStream(ds, batch_size=2, seed=0)
    batches = [ref.next()["hq"] for _ in range(5)]  # 2 per epoch: crosses two epoch ends
    resumed = BatchStream(ds, batch_size=2, seed=0)
    for _ in range(3):
        resumed.next()
    state = resumed.state_dict()
    again = BatchStream(ds, batch_size=2, seed=0)
    again.load_state_dict(state)
    assert torch.equal(again.next()["hq"], batches[3]) and torch.equal(again.next()["hq"], batches[4])


def test_batch_stream_is_the_same_with_workers(folder: Path) -> None:
    ds = TrainDataset(ds_spec(hq=[str(folder)], target_size=16), scale=2, seed=0)
    a = BatchStream(ds, batch_size=2, seed=0, workers=0)
    b = BatchStream(ds, batch_size=2, seed=0, workers=2)
    for _ in range(3):
        assert torch.equal(a.next()["lq"], b.next()["lq"])
