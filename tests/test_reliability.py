"""Hostile inputs, one parametrised test per class of failure (issue 11): images as viewers show them, the pixel
limit checked before decoding, atomic writes that never touch another file, the output-folder lock, names that
cannot escape the output folder, and one line (never a traceback) for every user mistake.

Every hostile file is generated here, in ``tmp_path``."""

from __future__ import annotations

import errno
import io
import json
import multiprocessing
import os
import stat
import struct
import sys
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from PIL import Image as PILImage
from PIL import ImageOps

from restorekit import UserError
from restorekit.cli import main
from restorekit.data import io as rio
from restorekit.files import LOCK_NAME, OutputLock, atomic_write, confine, write_text

# ----------------------------------------------------------------------------------------------------
# hostile files


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(path: Path, width: int = 16384, height: int = 16384, bitdepth: int = 16, rows: int = 64) -> Path:
    """A PNG whose header announces ``width`` x ``height`` (16-bit gray: the 520 KB bomb of the issue); only the
    first ``rows`` rows are stored (a decoder that starts decoding fails differently; the header is the test)."""
    comp = zlib.compressobj(9)
    row = b"\0" * (1 + width * bitdepth // 8)
    idat = b"".join(comp.compress(row) for _ in range(rows)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, bitdepth, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))
    return path


def tiff_bomb(path: Path, width: int = 20000, height: int = 20000) -> Path:
    """A deflate-compressed 8-bit TIFF announcing ``width`` x ``height``."""
    data = zlib.compress(b"\0" * 4096)
    entries = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 8), (262, 3, 1), (273, 4, 0),
               (277, 3, 1), (278, 4, height), (279, 4, len(data))]
    offset = 8 + 2 + len(entries) * 12 + 4
    out = b"II*\0" + struct.pack("<I", 8) + struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        value = offset if tag == 273 else value
        out += struct.pack("<HHIHH", tag, kind, 1, value, 0) if kind == 3 else struct.pack("<HHII", tag, kind, 1, value)
    path.write_bytes(out + struct.pack("<I", 0) + data)
    return path


def bmp_bomb(path: Path, width: int = 30000, height: int = 30000) -> Path:
    """A small BMP whose header is patched to announce ``width`` x ``height``."""
    PILImage.fromarray(np.zeros((4, 4, 3), np.uint8)).save(path)
    raw = bytearray(path.read_bytes())
    raw[18:26] = struct.pack("<ii", width, height)
    path.write_bytes(bytes(raw))
    return path


def gif_bomb(path: Path, width: int = 65535, height: int = 65535) -> Path:
    PILImage.fromarray(np.zeros((4, 4), np.uint8)).save(path)
    raw = bytearray(path.read_bytes())
    raw[6:10] = struct.pack("<HH", width, height)  # logical screen
    i = raw.index(b",")  # image descriptor
    raw[i + 5 : i + 9] = struct.pack("<HH", width, height)
    path.write_bytes(bytes(raw))
    return path


def jpeg_bomb(path: Path, width: int = 65000, height: int = 65000) -> Path:
    """A small baseline JPEG whose frame header (SOF0) is patched to announce ``width`` x ``height``."""
    PILImage.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path, quality=90)
    raw = bytearray(path.read_bytes())
    i = raw.index(b"\xff\xc0")
    raw[i + 5 : i + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(raw))
    return path


def rgb_array(h: int = 6, w: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def as_uint8(img: rio.Image) -> np.ndarray:
    return np.round(img.rgb.permute(1, 2, 0).numpy() * 255).astype(np.int64)


def viewer(path: Path) -> np.ndarray:
    """What an image viewer shows: Pillow's EXIF transpose and RGB conversion of the first frame."""
    with PILImage.open(path) as im:
        im.seek(0)
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB")).astype(np.int64)


# ----------------------------------------------------------------------------------------------------
# 1. images as viewers show them


def _oriented(tmp: Path, fmt: str, orientation: int) -> Path:
    im = PILImage.fromarray(rgb_array())
    exif = im.getexif()
    exif[0x0112] = orientation
    path = tmp / f"o{orientation}.{fmt}"
    im.save(path, exif=exif, **({"quality": 95} if fmt == "jpg" else {"lossless": True} if fmt == "webp" else {}))
    return path


def _cmyk(tmp: Path, fmt: str) -> Path:
    path = tmp / f"cmyk.{fmt}"
    PILImage.fromarray(rgb_array()).convert("CMYK").save(path, **({"quality": 95} if fmt == "jpg" else {}))
    return path


def _cmyk_oriented(tmp: Path, orientation: int) -> Path:
    """A rotated CMYK TIFF, and its RGB twin as the reference (Pillow 13 drops the rotation of CMYK TIFFs)."""
    rgb = PILImage.fromarray(rgb_array())
    exif = rgb.getexif()
    exif[0x0112] = orientation
    rgb.save(tmp / f"twin_cmyk{orientation}.tiff", exif=exif)
    path = tmp / f"cmyk{orientation}.tiff"
    rgb.convert("CMYK").save(path, exif=exif)
    return path


def _animated(tmp: Path, fmt: str) -> Path:
    frames = [PILImage.fromarray(np.full((6, 10, 3), 40 * i + 20, np.uint8)) for i in range(4)]
    path = tmp / f"anim.{fmt}"
    extra = {"lossless": True} if fmt == "webp" else {}
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0, **extra)
    return path


def _palette_alpha(tmp: Path, fmt: str) -> Path:
    im = PILImage.fromarray(rgb_array()).convert("P")
    path = tmp / f"pal.{fmt}"
    im.save(path, transparency=0)
    return path


VIEWER_CASES: list[tuple[str, Callable[[Path], Path], str | None]] = [
    *[(f"exif{o}-{fmt}", (lambda t, o=o, fmt=fmt: _oriented(t, fmt, o)), f"EXIF orientation {o} applied" if o != 1 else None)
      for fmt in ("jpg", "png", "webp", "tiff") for o in range(1, 9)],
    ("cmyk-jpg", lambda t: _cmyk(t, "jpg"), "CMYK converted to RGB"),
    ("cmyk-tiff", lambda t: _cmyk(t, "tiff"), "CMYK converted to RGB"),
    ("animated-gif", lambda t: _animated(t, "gif"), "first of 4 frames used"),
    ("animated-webp", lambda t: _animated(t, "webp"), "first of 4 frames used"),
    ("animated-tiff", lambda t: _animated(t, "tiff"), "first of 4 frames used"),
    ("palette-png", lambda t: _palette_alpha(t, "png"), None),
    ("palette-gif", lambda t: _palette_alpha(t, "gif"), None),
    *[(f"cmyk-exif{o}-tiff", (lambda t, o=o: _cmyk_oriented(t, o)), f"EXIF orientation {o} applied") for o in (3, 6)],
]


@pytest.mark.parametrize("make,note", [c[1:] for c in VIEWER_CASES], ids=[c[0] for c in VIEWER_CASES])
def test_images_are_read_as_viewers_show_them(tmp_path: Path, make: Callable[[Path], Path], note: str | None) -> None:
    path = make(tmp_path)
    img = rio.read_image(path)
    twin = path.with_name(f"twin_{path.name}")
    want = viewer(twin if twin.exists() else path)
    got = as_uint8(img)
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1, "not what a viewer shows"
    if note is not None:
        assert note in img.notes
    if "cmyk" in path.name:
        assert img.alpha is None  # K is never an alpha channel
    h, w = rio.image_size(path)
    assert (h, w) == want.shape[:2]  # sizes read from the header agree with the decoded, oriented image


# ----------------------------------------------------------------------------------------------------
# 2. the pixel limit is checked from the header, before decoding, for every reader


BOMBS: dict[str, Callable[[Path], Path]] = {
    "png16": lambda t: png_bomb(t / "bomb.png"),
    "png8": lambda t: png_bomb(t / "bomb8.png", 20000, 20000, 8),
    "tiff": lambda t: tiff_bomb(t / "bomb.tif"),
    "bmp": lambda t: bmp_bomb(t / "bomb.bmp"),
    "gif": lambda t: gif_bomb(t / "bomb.gif"),
    "jpeg": lambda t: jpeg_bomb(t / "bomb.jpg"),
}


@pytest.mark.parametrize("kind", list(BOMBS))
def test_pixel_limit_is_checked_before_decoding(tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    path = BOMBS[kind](tmp_path)
    assert path.stat().st_size < 600_000

    def no_decode(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("decoded a decompression bomb")

    monkeypatch.setattr(rio, "_decode", no_decode)
    with pytest.raises(rio.ImageTooLarge, match=r"over the limit of 100,000,000 \(run.max_pixels\); not decoded"):
        rio.read_image(path)
    header = rio.read_header(path)
    assert header.pixels > rio.DEFAULT_MAX_PIXELS


def test_pixel_limit_is_configurable_and_matches_the_spec_default(tmp_path: Path) -> None:
    from restorekit.spec import RunSpec

    assert RunSpec(mode="infer").max_pixels == rio.DEFAULT_MAX_PIXELS
    path = tmp_path / "small.png"
    PILImage.fromarray(rgb_array(10, 10)).save(path)
    with pytest.raises(rio.ImageTooLarge, match="10x10 = 100 pixels, over the limit of 99"):
        rio.read_image(path, max_pixels=99)
    assert rio.read_image(path, max_pixels=100).rgb.shape == (3, 10, 10)
    big = png_bomb(tmp_path / "big.png", 300, 300, 8, rows=300)
    assert rio.read_image(big, max_pixels=None).rgb.shape == (3, 300, 300)  # None: no limit


# ----------------------------------------------------------------------------------------------------
# 3. atomic writes: never another file, modes follow the umask


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_atomic_write_keeps_every_other_file_and_follows_the_umask(tmp_path: Path, mask: int) -> None:
    # files named like any temporary file restorekit ever used, or might use
    bystanders = [".n.png.tmp.png", ".n.png.tmp", ".n.png.abc.tmp.png", ".tmp-step_1-1", "n.png.tmp"]
    for name in bystanders:
        (tmp_path / name).write_bytes(b"precious")
    old = os.umask(mask)
    try:
        atomic_write(tmp_path / "n.png", lambda tmp: tmp.write_bytes(b"new"))
        with pytest.raises(RuntimeError):
            atomic_write(tmp_path / "m.png", lambda tmp: (tmp.write_bytes(b"half"), (_ for _ in ()).throw(RuntimeError("x"))))
        rio.write_image(tmp_path / "img.png", rio.read_image(_cmyk(tmp_path, "jpg")).rgb)
    finally:
        os.umask(old)
    for name in bystanders:
        assert (tmp_path / name).read_bytes() == b"precious"
    assert (tmp_path / "n.png").read_bytes() == b"new" and not (tmp_path / "m.png").exists()
    for name in ("n.png", "img.png"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~mask
    leftovers = sorted(p.name for p in tmp_path.iterdir()) 
    assert leftovers == sorted(bystanders + ["cmyk.jpg", "img.png", "n.png"])  # no temporary file left


# ----------------------------------------------------------------------------------------------------
# 4. one run per output folder: the lock


def _hold_lock(folder: str, conn: Any) -> None:
    with OutputLock(Path(folder)):
        conn.send("locked")
        conn.recv()  # until the test says so (or kills this process)


def test_second_process_on_the_same_output_folder_stops_with_one_line_naming_the_holder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    ctx = multiprocessing.get_context("fork")
    ours, theirs = ctx.Pipe()
    holder = ctx.Process(target=_hold_lock, args=(str(out), theirs))
    holder.start()
    try:
        assert ours.poll(30) and ours.recv() == "locked"
        with pytest.raises(UserError, match=rf"another restore-run \(PID {holder.pid}\) is writing into this folder"):
            OutputLock(out, "run.output_dir").acquire()
        image = tmp_path / "in.png"
        PILImage.fromarray(rgb_array(8, 8)).save(image)
        spec = _infer_spec(tmp_path, image, out)
        assert main([str(spec)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"PID {holder.pid}" in err and "infer.output_dir" in err
        assert not (out / "in.png").exists()
        holder.kill()  # killed, not released: the OS drops the lock with the process
        holder.join(10)
        assert main([str(spec)]) == 0
        assert (out / "in.png").is_file() and not (out / LOCK_NAME).exists()
    finally:
        if holder.is_alive():  # pragma: no cover - a failed assertion above
            holder.kill()
        holder.join(10)


def _infer_spec(root: Path, image: Path, out: Path, **infer: Any) -> Path:
    spec = root / "p.toml"
    extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in infer.items())
    spec.write_text(
        f'[run]\nmode = "infer"\ndevice = "cpu"\noutput_dir = {json.dumps(str(root / "run"))}\n'
        '[networks.generator]\ncomponent = "rrdb"\nparams = { nf = 4, nb = 1, gc = 4, scale = 2 }\n'
        f'[infer]\ninputs = [{json.dumps(str(image))}]\noutput_dir = {json.dumps(str(out))}\n{extra}'
    )
    return spec


# ----------------------------------------------------------------------------------------------------
# 5. nothing escapes the output folder


@pytest.mark.parametrize("table,name", [
    ("networks", "../../escaped"), ("networks", "a/b"), ("networks", "a.b"), ("networks", "1st"), ("networks", ""),
    ("steps", "../s"), ("losses", "../l"), ("injectors", "x y"), ("validators", "../v"), ("save_generator", "../../g"),
])
def test_names_that_become_paths_are_identifiers(table: str, name: str) -> None:
    from restorekit.spec import spec_from_dict

    gen = {"component": "rrdb"}
    step: dict[str, Any] = {"networks": ["generator"], "injectors": {"fwd": {"component": "generator"}},
                            "losses": {"l1": {"component": "pixel"}}}
    data: dict[str, Any] = {"run": {"mode": "train"}, "networks": {"generator": gen}, "steps": {"sr": step},
                            "data": {"train": {"hq": "x"}}, "train": {"steps": 1}}
    if table == "networks":
        data["networks"] = {name: gen}
        step["networks"] = [name]
    elif table == "steps":
        data["steps"] = {name: step}
    elif table in ("losses", "injectors"):
        step[table] = {name: next(iter(step[table].values()))}
    elif table == "validators":
        data["validators"] = {name: {"component": "psnr"}}
    else:
        data["train"]["save_generator"] = [name]
    with pytest.raises(UserError, match=r"is not an identifier") as exc:
        spec_from_dict(data, source="p.toml")
    assert "\n" not in str(exc.value) and str(exc.value).startswith("p.toml: ")


@pytest.mark.parametrize("target", ["../x.png", "sub/../../x.png", "/etc/x.png", "link/x.png", ".", "sub/.."])
def test_confine_refuses_paths_outside_the_folder(tmp_path: Path, target: str) -> None:
    root = tmp_path / "out"
    (root / "sub").mkdir(parents=True)
    (root / "link").symlink_to(tmp_path)
    with pytest.raises(UserError, match="outside the output folder|not a file name"):
        confine(root / target, root)
    with pytest.raises(UserError):
        write_text(root / target, "x", root=root)
    assert confine(root / "sub" / "x.png", root) == root / "sub" / "x.png"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# ----------------------------------------------------------------------------------------------------
# 6. one line, never a traceback


def _bad_output(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    if kind == "is-a-file":
        (tmp_path / "o").write_text("x")
        return tmp_path / "o"
    if kind == "under-a-file":
        (tmp_path / "f").write_text("x")
        return tmp_path / "f" / "o"
    ro = tmp_path / "ro"
    if kind == "read-only-folder":
        ro.mkdir()
    from restorekit import files

    real_open, real_mkdir = os.open, os.mkdir

    def deny(path: Any, *args: Any, **kwargs: Any) -> Any:
        if str(path).startswith(str(ro)):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return (real_open if deny.kind == "open" else real_mkdir)(path, *args, **kwargs)

    def fake_open(path: Any, *a: Any, **k: Any) -> Any:
        deny.kind = "open"
        return deny(path, *a, **k)

    def fake_mkdir(path: Any, *a: Any, **k: Any) -> Any:
        deny.kind = "mkdir"
        return deny(path, *a, **k)

    monkeypatch.setattr(files.os, "open", fake_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)
    return ro / ("new" if kind == "read-only-parent" else "")


@pytest.mark.parametrize("kind", ["is-a-file", "under-a-file", "read-only-folder", "read-only-parent"])
def test_unusable_output_folder_is_one_line(tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    image = tmp_path / "in.png"
    PILImage.fromarray(rgb_array(8, 8)).save(image)
    out = _bad_output(kind, tmp_path, monkeypatch)
    spec = _infer_spec(tmp_path, image, out)
    assert main([str(spec)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("restore-run: error: infer.output_dir: ") and err.count("\n") == 1, err


@pytest.mark.parametrize("args,expect", [
    (["--set", "run.seed=18446744073709551616"], "run.seed: Input should be less than or equal to 9223372036854775807"),
    (["--set", "run.seed=-1"], "run.seed: Input should be greater than or equal to 0"),
    (["--device", "cuda:99999999999999999999"], "run.device: device index 99999999999999999999 is out of range"),
    (["--device", "cuda:200"], "run.device: device index 200 is out of range"),
    (["--device", "cuda:-1"], "run.device: device must be auto, cpu, cuda or cuda:N"),
    (["--set", "infer.output_dir=\"x\"", "--set", "run.max_pixels=0"], "run.max_pixels: Input should be greater"),
])
def test_out_of_range_values_are_one_line(tmp_path: Path, args: list[str], expect: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    image = tmp_path / "in.png"
    PILImage.fromarray(rgb_array(8, 8)).save(image)
    assert main([str(_infer_spec(tmp_path, image, tmp_path / "out")), *args]) == 2
    err = capsys.readouterr().err
    assert expect in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_non_utf8_file_names_print_escaped_on_a_strict_utf8_stdout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    name = os.fsdecode(b"caf\xe9.png")  # a Latin-1 file name: not valid UTF-8
    PILImage.fromarray(rgb_array(8, 8)).save(folder / name)
    (folder / os.fsdecode(b"bad\xff.png")).write_bytes(b"not an image")
    out_bytes, err_bytes = io.BytesIO(), io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(out_bytes, encoding="utf-8", errors="strict"))
    monkeypatch.setattr(sys, "stderr", io.TextIOWrapper(err_bytes, encoding="utf-8", errors="strict"))
    code = main([str(_infer_spec(tmp_path, folder, tmp_path / "out"))])
    sys.stdout.flush()
    sys.stderr.flush()
    assert code == 1  # one unreadable image
    text = out_bytes.getvalue().decode("utf-8")
    assert "bad\\udcff.png" in text
    assert (tmp_path / "out" / os.fsdecode(b"caf\xe9.png")).is_file()
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["counts"]["written"] == 1 and summary["counts"]["failed"] == 1


def test_batch_that_cannot_fit_in_memory_is_one_line_naming_the_field(tmp_path: Path) -> None:
    from restorekit.data.datasets import BatchStream, TrainDataset
    from restorekit.spec import DatasetSpec

    (tmp_path / "hq").mkdir()
    PILImage.fromarray(rgb_array(32, 32)).save(tmp_path / "hq" / "a.png")
    ds = TrainDataset(DatasetSpec(hq=[tmp_path / "hq"], target_size=16, batch_size=10**12), scale=2, seed=0)
    with pytest.raises(UserError, match=r"^data.train.batch_size: 1,000,000,000,000 crops of 16x16 need [\d,.]+ GiB per batch"):
        BatchStream(ds, batch_size=10**12)


def test_corrupt_training_image_in_a_dataloader_worker_is_one_line(tmp_path: Path) -> None:
    from restorekit.data.datasets import BatchStream, TrainDataset
    from restorekit.spec import DatasetSpec

    (tmp_path / "hq").mkdir()
    for i in range(2):
        PILImage.fromarray(rgb_array(32, 32, i)).save(tmp_path / "hq" / f"{i}.png")
    ds = TrainDataset(DatasetSpec(hq=[tmp_path / "hq"], target_size=16, batch_size=2), scale=2, seed=0)
    bad = tmp_path / "hq" / "1.png"
    bad.write_bytes(bad.read_bytes()[:60])  # truncated after the scan, as a disk error would
    stream = BatchStream(ds, batch_size=2, workers=1)
    with pytest.raises(UserError) as exc:
        stream.next()
    msg = str(exc.value)
    assert msg.startswith(f"{bad}: unreadable image (") and "Traceback" not in msg and len(msg) < 300, msg


def test_training_images_over_the_pixel_limit_are_skipped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from restorekit.data.datasets import TrainDataset
    from restorekit.spec import DatasetSpec

    (tmp_path / "hq").mkdir()
    PILImage.fromarray(rgb_array(32, 32)).save(tmp_path / "hq" / "a.png")
    png_bomb(tmp_path / "hq" / "bomb.png")
    ds = TrainDataset(DatasetSpec(hq=[tmp_path / "hq"], target_size=16), scale=2, seed=0)
    assert ds.names() == ["a.png"]
    assert "bomb.png (16384x16384)" in caplog.text and "max_pixels" in caplog.text


# ----------------------------------------------------------------------------------------------------
# 7. inference: temporary names, escaping stems, animations, bombs and notes in summary.json


def test_folder_processed_into_itself_keeps_files_named_like_temporaries(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    PILImage.fromarray(rgb_array(8, 8)).save(folder / "n.jpg")
    for name in (".n.png.tmp.png", ".n.png.tmp", ".summary.json.tmp", ".samples.json.tmp"):
        (folder / name).write_bytes(b"precious")
    assert main([str(_infer_spec(tmp_path, folder, folder))]) == 0
    for name in (".n.png.tmp.png", ".n.png.tmp", ".summary.json.tmp", ".samples.json.tmp"):
        assert (folder / name).read_bytes() == b"precious"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [".n.png.tmp.png", ".n.png.tmp", ".summary.json.tmp", ".samples.json.tmp", "n.jpg", "n.png", "samples.json",
         "summary.json"])


@pytest.mark.parametrize("name", ["..png", "...png", ".png.png"])
def test_output_names_from_input_names_stay_in_the_output_folder(tmp_path: Path, name: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    PILImage.fromarray(rgb_array(8, 8)).save(src / name, format="PNG")
    out = tmp_path / "run" / "infer"
    assert main([str(_infer_spec(tmp_path, src / name, out))]) == 0
    written = json.loads((out / "summary.json").read_text())["written"]
    assert len(written) == 1 and not written[0].startswith("..") and (out / written[0]).is_file()
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["infer"]  # nothing beside the output folder


def test_an_output_subfolder_that_links_outside_is_refused_before_writing(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    PILImage.fromarray(rgb_array(8, 8)).save(src / "a.png")
    PILImage.fromarray(rgb_array(8, 8)).save(src / "sub" / "b.png")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").symlink_to(elsewhere)
    assert main([str(_infer_spec(tmp_path, src, out))]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lies outside the output folder" in err
    assert list(elsewhere.iterdir()) == [] and sorted(p.name for p in out.iterdir()) == ["sub"]


def test_animations_bombs_and_conversions_are_reported_in_summary_json(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    _animated(folder, "gif")
    png_bomb(folder / "bomb.png")
    tiff_bomb(folder / "bomb2.tif")
    _cmyk(folder, "jpg")
    _oriented(folder, "jpg", 6)
    out = tmp_path / "out"
    assert main([str(_infer_spec(tmp_path, folder, out))]) == 1  # the bombs failed, the rest was written
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(summary["written"]) == ["anim.png", "cmyk.png", "o6.png"]
    failed = {Path(f["path"]).name: f["reason"] for f in summary["failed"]}
    assert set(failed) == {"bomb.png", "bomb2.tif"}
    assert all("over the limit of 100,000,000 (run.max_pixels); not decoded" in r for r in failed.values())
    notes = {(Path(n["path"]).name, n["note"]) for n in summary["notes"]}
    assert notes == {("anim.gif", "first of 4 frames used"), ("cmyk.jpg", "CMYK converted to RGB"),
                     ("o6.jpg", "EXIF orientation 6 applied")}
    assert PILImage.open(out / "o6.png").size == (12, 20)  # 10x6 stored, shown (and upscaled x2) as 6x10


# ----------------------------------------------------------------------------------------------------
# 8. checkpoints: corrupt newest falls back, pickle payloads refused, leftovers removed, results never replaced

TRAIN = """
[run]
mode = "train"
device = "cpu"
seed = 3
output_dir = "out"

[networks.generator]
component = "rrdb"
params = { nf = 4, nb = 1, gc = 4, scale = 2 }

[data.train]
hq = "hq"
target_size = 8
batch_size = 2

[steps.sr]
networks = ["generator"]
[steps.sr.injectors.fwd]
component = "generator"
[steps.sr.losses.l1]
component = "pixel"

[train]
steps = 4
log_every = 2
checkpoint_every = 2
keep_last = 3
save_generator = ["generator"]
tensorboard = false
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 4-step run with checkpoints step_2 and step_4 (copied by each test)."""
    import torch

    root = tmp_path_factory.mktemp("trained")
    (root / "hq").mkdir()
    for i in range(2):
        PILImage.fromarray(rgb_array(16, 16, i)).save(root / "hq" / f"{i}.png")
    (root / "p.toml").write_text(TRAIN)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main([str(root / "p.toml")]) == 0
    finally:
        torch.set_num_threads(threads)
    assert sorted(p.name for p in (root / "out" / "checkpoints").iterdir()) == ["step_2", "step_4"]
    return root


def _copy(trained: Path, tmp_path: Path) -> Path:
    import shutil

    shutil.copytree(trained, tmp_path / "p")
    return tmp_path / "p"


def _pickle_payload(path: Path) -> None:
    import torch

    class Payload:
        def __reduce__(self) -> Any:
            return (os.system, ("echo owned",))

    torch.save({"x": Payload()}, path)


CORRUPT: dict[str, Callable[[Path], None]] = {
    "empty-state": lambda d: (d / "state.pt").write_bytes(b""),
    "truncated-state": lambda d: (d / "state.pt").write_bytes((d / "state.pt").read_bytes()[:200]),
    "garbage-meta": lambda d: (d / "meta.json").write_text("{not json"),
    "meta-not-object": lambda d: (d / "meta.json").write_text("[1, 2]"),
    "truncated-weights": lambda d: (d / "generator.safetensors").write_bytes(b"\x10\x00"),
    "state-not-training": lambda d: __import__("torch").save({"a": 1}, d / "state.pt"),
}


@pytest.mark.parametrize("kind", list(CORRUPT))
def test_resume_falls_back_from_a_corrupt_newest_checkpoint(trained: Path, tmp_path: Path, kind: str,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    root = _copy(trained, tmp_path)
    CORRUPT[kind](root / "out" / "checkpoints" / "step_4")
    torch.set_num_threads(1)
    code = main([str(root / "p.toml"), "--resume"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "restore-run: warning: train.resume: skipped step_4: " in err and "Traceback" not in err
    records = [json.loads(x) for x in (root / "out" / "metrics.jsonl").read_text().splitlines()]
    assert [r["path"].endswith("step_2") for r in records if r.get("event") == "resume"] == [True]
    assert any(r.get("event") == "resume_skipped" for r in records)


def test_resume_never_loads_a_pickle_payload_nor_advises_to(trained: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    root = _copy(trained, tmp_path)
    _pickle_payload(root / "out" / "checkpoints" / "step_4" / "state.pt")
    assert main([str(root / "p.toml"), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a safe checkpoint" in err and "step_4" in err and "system" in err
    assert "weights_only" not in err and "trust" not in err
    # an explicit folder that is unreadable stops too, naming the file
    CORRUPT["empty-state"](root / "out" / "checkpoints" / "step_2")
    assert main([str(root / "p.toml"), "--resume", str(root / "out" / "checkpoints" / "step_2")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "step_2/state.pt: not a readable PyTorch checkpoint (empty file)" in err


def test_resume_removes_temporary_folders_of_interrupted_runs(trained: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    import subprocess

    root = _copy(trained, tmp_path)
    ck = root / "out" / "checkpoints"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    leftovers = [f".tmp-step_6-{dead.pid}", f".old-step_4-{dead.pid}", f".tmp-step_8-{os.getppid()}-abc"]
    for name in leftovers:
        (ck / name).mkdir()
        (ck / name / "state.pt").write_bytes(b"x" * 100)
    (ck / ".tmp-unrelated").mkdir()
    assert main([str(root / "p.toml"), "--resume"]) == 0
    out = capsys.readouterr().out
    assert "removed 3 temporary checkpoint folder(s) left by interrupted runs" in out
    assert sorted(p.name for p in ck.iterdir()) == [".tmp-unrelated", "step_2", "step_4"]
    # without the output lock (the Python API), a folder of a live process is left alone
    from restorekit.checkpoint import clean_temporaries

    (ck / leftovers[0]).mkdir()
    (ck / leftovers[2]).mkdir()
    assert [p.name for p in clean_temporaries(ck)] == [leftovers[0]]
    assert (ck / leftovers[2]).is_dir()


def test_fresh_run_never_replaces_an_earlier_runs_results(trained: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    root = _copy(trained, tmp_path)
    shutil.rmtree(root / "out" / "checkpoints")
    before = {p.name: p.read_bytes() for p in (root / "out").iterdir() if p.is_file()}
    assert {"generator.safetensors", "metrics.jsonl"} <= set(before)
    for extra in ([], ["--resume"]):
        assert main([str(root / "p.toml"), *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "already holds results of an earlier run" in err and "generator.safetensors" in err
        assert {p.name: p.read_bytes() for p in (root / "out").iterdir() if p.is_file()} == before


def test_generator_files_follow_the_umask(trained: Path, tmp_path: Path) -> None:
    from restorekit.checkpoint import save_generator
    import torch

    old = os.umask(0o022)
    try:
        save_generator(tmp_path / "g.safetensors", torch.nn.Conv2d(1, 1, 1), "rrdb", {})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "g.safetensors").stat().st_mode) == 0o644
    for p in (trained / "out").rglob("*"):
        if p.is_file():
            assert stat.S_IMODE(p.stat().st_mode) & 0o044 == 0o044, p  # readable by group and others, as umask 022


def _assert_spec_run_names_checkpoint(tmp_path: Path, path: Path, expect: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """The same checkpoint reached through a pipeline spec: exit 2, one line naming the file and the cause."""
    image = tmp_path / "in.png"
    PILImage.fromarray(rgb_array(8, 8)).save(image)
    spec = _infer_spec(tmp_path, image, tmp_path / "out")
    spec.write_text(spec.read_text().replace('params = { nf = 4, nb = 1, gc = 4, scale = 2 }',
                                              f'checkpoint = {json.dumps(str(path))}'))
    assert main([str(spec)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and expect in err


@pytest.mark.parametrize("meta,expect", [
    ({"restorekit.component": "rrdb", "restorekit.params": "{not json"}, "'restorekit.params' is not JSON"),
    ({"restorekit.component": "rrdb", "restorekit.params": "[1, 2]"}, "'restorekit.params' is not a JSON object"),
    ({"restorekit.component": "rrdb", "restorekit.params": "\"nf\""}, "'restorekit.params' is not a JSON object"),
    ({"restorekit.component": " "}, "'restorekit.component' is not a component name"),
])
def test_bad_generator_metadata_is_one_line_naming_the_file(tmp_path: Path, meta: dict[str, str], expect: str,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    import torch
    from safetensors.torch import save_file

    from restorekit import load

    path = tmp_path / "g.safetensors"
    save_file({"w": torch.zeros(1)}, str(path), metadata=meta)
    with pytest.raises(UserError, match=rf"^{path}: metadata {expect}"):
        load(path)
    _assert_spec_run_names_checkpoint(tmp_path, path, expect, capsys)


def test_checkpoint_errors_name_the_checkpoint_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from restorekit import load

    net = load_rrdb_state()
    del net["HRconv.weight"]  # the example of the issue
    path = tmp_path / "broken.pth"
    torch.save(net, path)
    with pytest.raises(UserError, match=rf"{path}: .*HRconv.weight"):
        load(path, component="rrdb")
    _assert_spec_run_names_checkpoint(tmp_path, path, "HRconv.weight", capsys)


def load_rrdb_state() -> dict[str, Any]:
    from restorekit.registry import PluginRegistry

    reg = PluginRegistry.load()
    comp = reg.get("generator", "rrdb").component
    return dict(comp.build(comp.params(nf=4, nb=1, gc=4, scale=2)).state_dict())


@pytest.mark.parametrize("mode,infer_out,expect", [
    ("train", None, ["run.output_dir", "infer.output_dir"]),
    ("train", "out", ["run.output_dir"]),  # the same folder is locked once
    ("infer", None, ["infer.output_dir"]),
    ("eval", None, ["run.output_dir"]),
])
def test_every_output_folder_is_locked_once(tmp_path: Path, mode: str, infer_out: str | None, expect: list[str]) -> None:
    from types import SimpleNamespace

    from restorekit.runner import output_folders
    from restorekit.spec import spec_from_dict

    data: dict[str, Any] = {
        "run": {"mode": mode, "output_dir": "out"}, "networks": {"generator": {"component": "rrdb"}},
        "data": {"train": {"hq": "x"}, "val": {"hq": "x"}}, "validators": {"psnr": {"component": "psnr"}},
        "steps": {"sr": {"networks": ["generator"], "losses": {"l1": {"component": "pixel"}}}},
        "train": {"steps": 1}, "infer": {"inputs": "x", **({"output_dir": infer_out} if infer_out else {})},
    }
    spec = spec_from_dict(data, source="p.toml", base_dir=tmp_path)
    assert [what for _, what in output_folders(SimpleNamespace(spec=spec))] == expect
