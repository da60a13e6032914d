"""Inference: inputs → generator → outputs, for every ``[infer]`` mode, with tiling, the NaN guard and reports.

Modes (``infer.mode``):

* ``sr`` — ``model(lr)`` for any generator; a flow decodes at ``temperatures[0]`` (0 by default: the mean image).
* ``sample`` — flows: every temperature × ``samples`` random samples; sample ``s`` uses seed ``run.seed + s``.
* ``feed_through`` — flows: the input is an HR image; its downsampled LR is decoded with random latents at every
  temperature × sample (the official playground's "feed_through").
* ``restore`` — flows: the input is a degraded HR image; encode it (LR made with ``downsampler``), normalise the
  latents (:func:`restorekit.latents.normalize_latents`), scale them by each temperature, decode.
* ``latent_transfer`` — flows: the ``reference`` HR image's latents, centre-cropped to each target's latent sizes,
  decoded with the target's LR (targets are LR images, or HR with ``input_is_hr``).
* ``interpolate`` — flows: ``frames`` images from zero latents (or the ``reference``'s) to the input's latents,
  plus an animated GIF.

Outputs go to ``infer.output_dir`` (default ``<run.output_dir>/infer``) with ``summary.json`` (and ``samples.json``,
one record per output image: temperature, sample, seed, fallback). With ``input_is_hr`` the sr/sample/feed_through/
restore modes also write ``comparison.png`` and ``metrics.md``/``metrics.json`` (PSNR/SSIM, RGB and Y, vs HR).
See ``docs/inference.md``.
"""

from __future__ import annotations

import contextlib
import glob as globmod
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .data.io import IMAGE_SUFFIXES, Image, read_image, to_array, write_image
from .data.resize import downsample
from .errors import UserError
from .latents import (
    interpolate_latents,
    normalize_latents,
    sample_latents,
    scale_latents,
    transfer_latents,
    zeros_like_latents,
)
from .plan import Plan, build_network
from .spec import InferSpec
from .tiling import (
    Tile,
    flow_alignment,
    flow_decoder,
    pad_to_multiple,
    round_down,
    tiled_flow_decode,
    tiled_forward,
)

FLOW_MODES = frozenset({"sample", "restore", "latent_transfer", "interpolate", "feed_through"})
HR_INPUT_MODES = frozenset({"restore", "interpolate", "feed_through"})
REPORT_MODES = frozenset({"sr", "sample", "feed_through", "restore"})
SUFFIX = {"png": ".png", "tiff": ".tiff", "jpg": ".jpg", "webp": ".webp"}
REPORT_FILES = ("summary.json", "samples.json", "comparison.png", "metrics.md", "metrics.json")
GIF_FRAME_MS = 120
GAP = 4


# ----------------------------------------------------------------------------------------------------
# results


@dataclass(frozen=True)
class Fallback:
    """A decode that was not finite and was redone at a lower temperature (for latent transfer and
    interpolation: a lower latent scale)."""

    input: Path
    output: Path
    requested: float
    used: float
    reason: str

    def as_dict(self, root: Path) -> dict[str, Any]:
        return {"input": str(self.input), "output": _rel(self.output, root), "requested": self.requested,
                "used": self.used, "reason": self.reason}


@dataclass
class InferSummary:
    """What :func:`infer` did: ``exit_code`` (0, or 1 when anything failed), output files ``written`` and
    ``skipped`` (already there, ``overwrite = false``), ``failed`` (path, one-line reason) and NaN-guard
    ``fallbacks``."""

    exit_code: int
    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    fallbacks: list[Fallback] = field(default_factory=list)
    output_dir: Path | None = None

    def as_dict(self) -> dict[str, Any]:
        root = self.output_dir or Path(".")
        return {
            "exit_code": self.exit_code,
            "output_dir": str(root),
            "counts": {"written": len(self.written), "skipped": len(self.skipped), "failed": len(self.failed),
                       "fallbacks": len(self.fallbacks)},
            "written": [_rel(p, root) for p in self.written],
            "skipped": [_rel(p, root) for p in self.skipped],
            "failed": [{"path": str(p), "reason": r} for p, r in self.failed],
            "fallbacks": [f.as_dict(root) for f in self.fallbacks],
        }

    def text(self) -> str:
        """The summary printed at the end of a run."""
        lines = [
            f"infer: {len(self.written)} written, {len(self.skipped)} skipped, {len(self.failed)} failed"
            f"{f', {len(self.fallbacks)} NaN fallbacks' if self.fallbacks else ''} -> {self.output_dir}"
        ]
        lines += [f"  failed: {p}: {r}" for p, r in self.failed]
        lines += [f"  fallback: {f.output.name}: temperature {f.requested:g} -> {f.used:g} ({f.reason})"
                  for f in self.fallbacks]
        return "\n".join(lines)


def _rel(p: Path, root: Path) -> str:
    try:
        return p.relative_to(root).as_posix()
    except ValueError:
        return str(p)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text or type(exc).__name__)[:300]


# ----------------------------------------------------------------------------------------------------
# inputs and output names


@dataclass(frozen=True)
class InputItem:
    """An input image and its output location relative to the output folder, without suffix
    (``sub/name`` for an image found in a folder's subfolder, ``name`` otherwise)."""

    path: Path
    rel: Path


def _is_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")


def collect_inputs(patterns: Sequence[Path], exclude: Path | None = None) -> list[InputItem]:
    """Files, folders (recursive) and globs → input items sorted by path, duplicates removed.

    Folder images keep their relative sub-path in the output folder. Files under ``exclude`` (the output folder,
    when it lies inside an input folder) are left out. A pattern that matches nothing is a :class:`UserError`.
    """
    items: dict[Path, InputItem] = {}
    excl = exclude.resolve() if exclude is not None else None
    for pattern in patterns:
        text = str(pattern)
        if _is_glob(text):
            found = [Path(m) for m in globmod.glob(text, recursive=True)]
            files = sorted(p for p in found if _is_image(p))
            if not files:
                raise UserError(f"infer.inputs: {text}: no image matches")
            for f in files:
                items.setdefault(f.resolve(), InputItem(f, Path(f.stem)))
        elif pattern.is_dir():
            root = pattern.resolve()
            files = []
            for f in sorted(pattern.rglob("*")):
                if not _is_image(f) or any(part.startswith(".") for part in f.relative_to(pattern).parts):
                    continue
                if excl is not None and excl != root and excl in f.resolve().parents:
                    continue
                files.append(f)
            if not files:
                raise UserError(f"infer.inputs: {pattern}: no images in this folder")
            for f in files:
                items.setdefault(f.resolve(), InputItem(f, f.relative_to(pattern).with_suffix("")))
        elif pattern.is_file():
            items.setdefault(pattern.resolve(), InputItem(pattern, Path(pattern.stem)))
        else:
            raise UserError(f"infer.inputs: {pattern}: no such file or folder")
    return sorted(items.values(), key=lambda i: str(i.path))


@dataclass(frozen=True)
class Slot:
    """One output an input image gets: file-name suffix, label (reports), the temperature (or latent scale)
    requested, sample index and seed (random latents), interpolation frame, and whether it is the GIF."""

    suffix: str
    label: str
    temperature: float | None = None
    sample: int | None = None
    seed: int | None = None
    frame: int | None = None
    kind: Literal["image", "gif"] = "image"
    in_grid: bool = True

    def path(self, out_dir: Path, item: InputItem, ext: str) -> Path:
        base = out_dir / item.rel
        return base.with_name(base.name + self.suffix + (".gif" if self.kind == "gif" else ext))


def _tname(t: float) -> str:
    return f"{t:g}"


def make_slots(spec: InferSpec, *, flow: bool, seed: int, reference: Path | None) -> list[Slot]:
    """The outputs of every input image in ``spec.mode`` (same for all images)."""
    mode = spec.mode
    if mode == "sr":
        if not flow:
            return [Slot("", "SR")]
        t = spec.temperatures[0]
        return [Slot("", f"t={_tname(t)}", temperature=t, sample=0, seed=seed)]
    if mode in ("sample", "feed_through"):
        return [
            Slot(f"_t{_tname(t)}_s{s}_seed{seed + s}", f"t={_tname(t)} s{s}", temperature=t, sample=s,
                 seed=seed + s, in_grid=s == 0)
            for t in spec.temperatures
            for s in range(spec.samples if t != 0 else 1)  # temperature 0 is deterministic: one image
        ]
    if mode == "restore":
        return [Slot(f"_restored_t{_tname(t)}", f"restored t={_tname(t)}", temperature=t) for t in spec.temperatures]
    if mode == "latent_transfer":
        assert reference is not None
        return [Slot(f"_transfer_{reference.stem}", f"transfer from {reference.name}", temperature=1.0)]
    slots = [Slot(f"_f{i:02d}", f"frame {i}", temperature=1.0, frame=i) for i in range(spec.frames)]
    if spec.gif:
        slots.append(Slot("", "gif", kind="gif"))
    return slots


# ----------------------------------------------------------------------------------------------------
# image helpers


def upsample_bicubic(x: Tensor, scale: int) -> Tensor:
    """Bicubic ×scale (the baseline of the reports, and how alpha channels are upscaled), clamped to [0, 1]."""
    if scale == 1:
        return x.clone()
    return F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False).clamp(0, 1)


def write_gif(path: Path, frames: Sequence[Tensor]) -> None:
    """Animated GIF (looping, ``GIF_FRAME_MS`` per frame) of (3, H, W) frames in [0, 1], atomically."""
    import imageio.v3 as iio

    arr = np.stack([to_array(f, bits=8) for f in frames])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.gif")
    try:
        iio.imwrite(tmp, arr, extension=".gif", duration=GIF_FRAME_MS, loop=0)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def quantize(x: Tensor, bits: int) -> Tensor:
    """What a written image holds: clamped to [0, 1] and rounded to 8 or 16 bits."""
    q = 65535.0 if bits == 16 else 255.0
    return torch.round(x.clamp(0, 1) * q) / q


# ----------------------------------------------------------------------------------------------------
# metrics and the comparison grid


def _y_channel(hwc: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma (studio swing) of an RGB image in [0, 1], in [16/255, 235/255]."""
    return (16.0 + hwc @ np.array([65.481, 128.553, 24.966])) / 255.0


def image_metrics(sr: Tensor, hr: Tensor, border: int) -> dict[str, float]:
    """PSNR (dB) and SSIM of ``sr`` vs ``hr`` ((3, H, W) in [0, 1]) on RGB and on BT.601 Y, with ``border``
    pixels cropped on every side (scikit-image; SSIM with an 11×11 Gaussian window, σ 1.5, as in Wang et al.).
    A value that cannot be computed (image too small for SSIM) is NaN."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    a = hr.detach().double().cpu().permute(1, 2, 0).numpy()
    b = sr.detach().double().cpu().permute(1, 2, 0).numpy()
    if border > 0:
        a, b = a[border:-border, border:-border], b[border:-border, border:-border]
    out = {"psnr_rgb": math.nan, "psnr_y": math.nan, "ssim_rgb": math.nan, "ssim_y": math.nan}
    if a.size == 0:
        return out
    ya, yb = _y_channel(a), _y_channel(b)
    with np.errstate(divide="ignore"):
        out["psnr_rgb"] = float(peak_signal_noise_ratio(a, b, data_range=1.0))
        out["psnr_y"] = float(peak_signal_noise_ratio(ya, yb, data_range=1.0))
    if min(a.shape[:2]) >= 11:
        kw: dict[str, Any] = {"data_range": 1.0, "gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False}
        out["ssim_rgb"] = float(structural_similarity(a, b, channel_axis=-1, **kw))
        out["ssim_y"] = float(structural_similarity(ya, yb, **kw))
    return out


def _fmt(v: float, digits: int) -> str:
    if math.isnan(v):
        return "n/a"
    if math.isinf(v):
        return "inf"
    return f"{v:.{digits}f}"


def _json_num(v: float) -> float | None:
    return v if math.isfinite(v) else None


@dataclass
class Reports:
    """Metric rows and comparison-grid rows collected during a run (``input_is_hr`` only)."""

    border: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    grid: list[np.ndarray] = field(default_factory=list)

    def add(self, item: InputItem, hr: Tensor, bicubic: Tensor, outputs: Sequence[tuple[Slot, Tensor]]) -> None:
        self.rows.append({"image": item.path.name, "output": "bicubic", **image_metrics(bicubic, hr, self.border)})
        for slot, img in outputs:
            self.rows.append({"image": item.path.name, "output": slot.label, **image_metrics(img, hr, self.border)})
        tiles = [bicubic] + [img for slot, img in outputs if slot.in_grid] + [hr]
        self.grid.append(_hstack([to_array(t.clamp(0, 1), bits=8) for t in tiles]))

    def means(self) -> dict[str, dict[str, float]]:
        groups: dict[str, list[dict[str, Any]]] = {}
        for r in self.rows:
            groups.setdefault(r["output"], []).append(r)
        keys = ("psnr_rgb", "psnr_y", "ssim_rgb", "ssim_y")
        out: dict[str, dict[str, float]] = {}
        for label, rows in groups.items():
            vals = {k: [r[k] for r in rows if math.isfinite(r[k])] for k in keys}
            out[label] = {k: (float(np.mean(v)) if v else math.nan) for k, v in vals.items()}
        return out

    def write(self, out_dir: Path, suffix: str = "") -> list[Path]:
        if not self.rows:
            return []
        means = self.means()
        md = [
            f"# PSNR / SSIM against the HR images (border {self.border} px cropped; Y = BT.601 luma)",
            "",
            "Columns of comparison.png, left to right: bicubic, the outputs (first sample per temperature), HR.",
            "",
            "| image | output | PSNR RGB (dB) | PSNR Y (dB) | SSIM RGB | SSIM Y |",
            "|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            md.append(f"| {r['image']} | {r['output']} | {_fmt(r['psnr_rgb'], 2)} | {_fmt(r['psnr_y'], 2)} | "
                      f"{_fmt(r['ssim_rgb'], 4)} | {_fmt(r['ssim_y'], 4)} |")
        md += ["", "| mean over images | PSNR RGB (dB) | PSNR Y (dB) | SSIM RGB | SSIM Y |", "|---|---|---|---|---|"]
        for label, m in means.items():
            md.append(f"| {label} | {_fmt(m['psnr_rgb'], 2)} | {_fmt(m['psnr_y'], 2)} | {_fmt(m['ssim_rgb'], 4)} | "
                      f"{_fmt(m['ssim_y'], 4)} |")
        paths = [out_dir / f"metrics{suffix}.md", out_dir / f"metrics{suffix}.json", out_dir / f"comparison{suffix}.png"]
        _atomic_text(paths[0], "\n".join(md) + "\n")
        data = {
            "border": self.border,
            "rows": [{k: (_json_num(v) if isinstance(v, float) else v) for k, v in r.items()} for r in self.rows],
            "mean": {lbl: {k: _json_num(v) for k, v in m.items()} for lbl, m in means.items()},
        }
        _atomic_text(paths[1], json.dumps(data, indent=2) + "\n")
        grid = _vstack(self.grid)
        write_image(paths[2], torch.from_numpy(grid).permute(2, 0, 1).float() / 255.0, bits=8)
        return paths


def _hstack(images: Sequence[np.ndarray]) -> np.ndarray:
    h = max(i.shape[0] for i in images)
    parts = []
    for k, img in enumerate(images):
        img = img if img.ndim == 3 else np.repeat(img[..., None], 3, -1)
        pad = np.full((h, img.shape[1], 3), 255, np.uint8)
        pad[: img.shape[0]] = img[..., :3]
        parts.append(pad)
        if k + 1 < len(images):
            parts.append(np.full((h, GAP, 3), 255, np.uint8))
    return np.concatenate(parts, 1)


def _vstack(rows: Sequence[np.ndarray]) -> np.ndarray:
    w = max(r.shape[1] for r in rows)
    parts = []
    for k, r in enumerate(rows):
        pad = np.full((r.shape[0], w, 3), 255, np.uint8)
        pad[:, : r.shape[1]] = r
        parts.append(pad)
        if k + 1 < len(rows):
            parts.append(np.full((GAP, w, 3), 255, np.uint8))
    return np.concatenate(parts, 0)


def _atomic_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------------
# the model


def is_flow(model: Any) -> bool:
    """Whether ``model`` offers the :class:`restorekit.FlowModel` methods used here."""
    return all(callable(getattr(model, m, None)) for m in ("decode", "latent_shapes")) and callable(
        getattr(model, "encode", None)
    )


def _batch_shapes(model: Any, lr_shape: Sequence[int]) -> list[tuple[int, ...]]:
    shapes = []
    for s in model.latent_shapes(tuple(int(d) for d in lr_shape)):
        t = tuple(int(d) for d in s)
        shapes.append((int(lr_shape[0]),) + t[1:] if len(t) == 4 else (int(lr_shape[0]),) + t)
    return shapes


def _unwrap(module: Any) -> Any:
    inner = getattr(module, "module", None)
    return inner if isinstance(inner, nn.Module) and type(module).__name__ == "DistributedDataParallel" else module


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    if device.type == "cuda" and precision in ("bf16", "fp16"):
        return torch.autocast("cuda", dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
    return contextlib.nullcontext()


# ----------------------------------------------------------------------------------------------------
# the run


@dataclass
class Prepared:
    """A read input: ``lr`` (3, h, w) the network input; ``hr`` (3, H, W) the (cropped) HR image for HR inputs;
    ``alpha`` at output resolution (or None); the source's bit depth and grayness."""

    item: InputItem
    lr: Tensor
    hr: Tensor | None
    alpha: Tensor | None
    bits: int
    gray: bool
    todo: list[tuple[Slot, Path]]


@dataclass
class Outcome:
    """One input's results: images per slot, one-line errors per slot, fallbacks."""

    images: dict[Slot, Tensor] = field(default_factory=dict)
    errors: dict[Slot, str] = field(default_factory=dict)
    fallbacks: dict[Slot, tuple[float, str]] = field(default_factory=dict)


class _Runner:
    """Everything one inference run needs; :func:`infer` is its public face."""

    def __init__(self, plan: Plan, networks: Mapping[str, Any] | None) -> None:
        spec = plan.spec.infer
        if spec is None:
            raise UserError(f"{plan.source}: run.mode = 'infer' needs an [infer] table")
        self.plan, self.spec, self.source = plan, spec, plan.source
        self.rank = int(os.environ.get("RANK", "0"))
        self.world = max(1, int(os.environ.get("WORLD_SIZE", "1")))
        self.device = plan.device
        if self.device.type == "cuda" and self.device.index is None and self.world > 1:
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        self.out_dir = spec.output_dir if spec.output_dir is not None else plan.spec.run.output_dir / "infer"
        self.ext = SUFFIX[spec.format]
        self.seed = plan.spec.run.seed
        self.precision = plan.spec.run.precision
        self._check_options()
        self.items = collect_inputs(spec.inputs, exclude=self.out_dir)
        net_name = spec.network
        self.net_plan = plan.networks[net_name]
        self.component = self.net_plan.component.name
        self.model = self._model(networks)
        self.scale = int(getattr(self.model, "scale", 0) or 0)
        if self.scale < 1:
            raise UserError(f"{self.source}: networks.{net_name}: component {self.component!r} has no integer 'scale'")
        self.size_multiple = max(1, int(getattr(self.model, "size_multiple", 1) or 1))
        self.flow = is_flow(self.model)
        tile = spec.tile
        if tile is not None and round_down(tile.size, self.size_multiple) - tile.overlap < self.size_multiple:
            raise UserError(
                f"{self.source}: infer.tile: size ({tile.size}) must exceed overlap ({tile.overlap}) by at least "
                f"the size multiple of {self.component!r} ({self.size_multiple})"
            )
        if spec.mode in FLOW_MODES and not self.flow:
            raise UserError(
                f"{self.source}: infer.mode = {spec.mode!r} needs a flow network (encode/decode), but "
                f"networks.{net_name} is component {self.component!r}, which is not one"
            )
        self.hr_input = spec.mode in HR_INPUT_MODES or spec.input_is_hr
        self.hr_multiple = self.scale * (self.size_multiple if self.flow else 1)
        self.reports_on = spec.input_is_hr and spec.mode in REPORT_MODES
        self.ladder = [float(t) for t in spec.nan_ladder]
        if not self.ladder or self.ladder[-1] != 0.0:
            self.ladder.append(0.0)
        uses_reference = spec.mode in ("latent_transfer", "interpolate")
        if spec.mode == "latent_transfer" and spec.reference is None:
            raise UserError(f"{self.source}: infer.reference: latent_transfer needs a reference image")
        for name, used in (("reference", uses_reference), ("temperature_map", self.flow)):
            p = getattr(spec, name)
            if used and p is not None and not Path(p).is_file():
                raise UserError(f"{self.source}: infer.{name}: {p}: file not found")
        self.tmap = self._temperature_map() if spec.temperature_map is not None and self.flow else None
        self.slots = make_slots(spec, flow=self.flow, seed=self.seed, reference=spec.reference)
        self._check_outputs()
        self.ref_latents: list[Tensor] | None = None
        self.ref_hw: tuple[int, int] | None = None
        if spec.reference is not None and uses_reference:
            self._encode_reference(spec.reference)
        self.decode = flow_decoder(self.model) if self.flow else None

    # -- checks ------------------------------------------------------------------------------------------
    def _check_options(self) -> None:
        s = self.spec
        if any(t < 0 or not math.isfinite(t) for t in s.temperatures):
            raise UserError(f"{self.source}: infer.temperatures: must be finite and >= 0 (got {s.temperatures})")
        if len(set(s.temperatures)) != len(s.temperatures):
            raise UserError(f"{self.source}: infer.temperatures: duplicate values in {s.temperatures}")
        if not s.temperatures:
            raise UserError(f"{self.source}: infer.temperatures: give at least one temperature")
        if any(t < 0 or not math.isfinite(t) for t in s.nan_ladder):
            raise UserError(f"{self.source}: infer.nan_ladder: must be finite and >= 0 (got {s.nan_ladder})")
        if s.tile is not None and s.tile.size <= s.tile.overlap:
            raise UserError(
                f"{self.source}: infer.tile: size ({s.tile.size}) must be larger than overlap ({s.tile.overlap})"
            )

    def _model(self, networks: Mapping[str, Any] | None) -> Any:
        name = self.spec.network
        if networks is not None and name in networks:
            model = _unwrap(networks[name])
        else:
            model = build_network(self.net_plan, self.device)
        if isinstance(model, nn.Module):
            model = model.to(self.device).eval()
        return model

    def _temperature_map(self) -> Tensor:
        assert self.spec.temperature_map is not None
        img = read_image(self.spec.temperature_map)
        return img.rgb.mean(0, keepdim=True)[None]

    def _check_outputs(self) -> None:
        protected = {i.path.resolve(): i.path for i in self.items}
        for p in (self.spec.reference, self.spec.temperature_map):
            if p is not None:
                protected[Path(p).resolve()] = Path(p)
        reports = {(self.out_dir / n).resolve() for n in REPORT_FILES}
        seen: dict[Path, Path] = {}
        for item in self.items:
            for slot in self.slots:
                out = slot.path(self.out_dir, item, self.ext).resolve()
                if out in protected:
                    raise UserError(
                        f"{self.source}: infer.output_dir: output {out} would overwrite the input "
                        f"{protected[out]}; choose another output folder"
                    )
                if out in reports:
                    raise UserError(f"{self.source}: infer: input {item.path} would write {out.name}, a report file")
                if out in seen:
                    raise UserError(
                        f"{self.source}: infer.inputs: {seen[out]} and {item.path} both map to the output {out}"
                    )
                seen[out] = item.path

    def _encode_reference(self, ref: Path) -> None:
        img = read_image(ref)
        hr = self._crop_hr(img.rgb, ref)
        with torch.inference_mode(), _autocast(self.device, self.precision):
            hr_b = hr[None].to(self.device)
            lr_b = downsample(hr_b, self.scale, self.spec.downsampler)
            self.ref_latents = [z.float() for z in self.model.encode(hr_b, lr_b).latents]
        self.ref_hw = (int(hr.shape[-2]), int(hr.shape[-1]))
        self._precheck_reference_sizes()

    def _precheck_reference_sizes(self) -> None:
        """latent_transfer/interpolate: every target must fit in the reference (read sizes, not pixels)."""
        import imageio.v3 as iio

        assert self.ref_latents is not None and self.spec.reference is not None
        for item in self.items:
            try:
                shape = iio.improps(item.path).shape
            except Exception:  # noqa: BLE001 - unreadable targets are reported when they are processed
                continue
            h, w = int(shape[0]), int(shape[1])
            if self.hr_input:
                h, w = round_down(h, self.hr_multiple) // self.scale, round_down(w, self.hr_multiple) // self.scale
            if h < 1 or w < 1:
                continue
            lr_shape = self._padded_lr_shape(h, w)
            for k, (ref, tgt) in enumerate(zip(self.ref_latents, _batch_shapes(self.model, lr_shape))):
                if ref.shape[-2] < tgt[-2] or ref.shape[-1] < tgt[-1]:
                    assert self.ref_hw is not None
                    raise UserError(
                        f"{self.source}: infer.reference: {self.spec.reference} (HR {self.ref_hw[0]}x{self.ref_hw[1]}) "
                        f"is smaller than the target {item.path} (HR {lr_shape[2] * self.scale}x{lr_shape[3] * self.scale}); "
                        "use a reference at least as large as every target"
                    )

    def _padded_lr_shape(self, h: int, w: int) -> tuple[int, int, int, int]:
        align = self._align(h, w)
        return (1, 3, -(-h // align) * align, -(-w // align) * align)

    def _align(self, h: int, w: int) -> int:
        """The LR padding multiple: size_multiple, and for flows what makes latent crops exact (tiling)."""
        m = self.size_multiple
        if not self.flow or self.spec.tile is None:
            return m
        hp, wp = -(-h // m) * m, -(-w // m) * m
        try:
            return flow_alignment(self.scale, m, (hp, wp), _batch_shapes(self.model, (1, 3, hp, wp)))
        except ValueError:
            return m

    def _crop_hr(self, rgb: Tensor, path: Path) -> Tensor:
        h, w = rgb.shape[-2:]
        hh, ww = round_down(h, self.hr_multiple), round_down(w, self.hr_multiple)
        if hh < 1 or ww < 1:
            raise UserError(
                f"{path}: image {h}x{w} is smaller than {self.hr_multiple} pixels (scale x size multiple of "
                f"{self.component!r})"
            )
        return rgb[:, :hh, :ww]

    # -- reading -----------------------------------------------------------------------------------------
    def prepare(self, item: InputItem, todo: list[tuple[Slot, Path]]) -> Prepared:
        img: Image = read_image(item.path)
        if self.hr_input:
            hr = self._crop_hr(img.rgb, item.path)
            lr = downsample(hr[None], self.scale, self.spec.downsampler)[0]
            alpha = img.alpha[:, : hr.shape[-2], : hr.shape[-1]] if img.alpha is not None else None
        else:
            hr, lr = None, img.rgb
            alpha = upsample_bicubic(img.alpha[None], self.scale)[0] if img.alpha is not None else None
        return Prepared(item, lr, hr, alpha, img.bits, img.gray, todo)

    # -- computing ---------------------------------------------------------------------------------------
    def run_batch(self, batch: Sequence[Prepared]) -> list[Outcome]:
        lr = torch.stack([p.lr for p in batch]).to(self.device)
        hr = torch.stack([p.hr for p in batch]).to(self.device) if batch[0].hr is not None else None
        with torch.inference_mode(), _autocast(self.device, self.precision):
            if not self.flow:
                return self._run_plain(lr)
            return self._run_flow(lr, hr)

    def _run_plain(self, lr: Tensor) -> list[Outcome]:
        h, w = lr.shape[-2:]
        s = self.scale
        if self.spec.tile is not None:
            res = tiled_forward(self.model, lr, tile=self.spec.tile.size, overlap=self.spec.tile.overlap,
                                scale=s, size_multiple=self.size_multiple)
            out, bad = res.outputs[0], res.nonfinite[0].tolist()
        else:
            padded, _ = pad_to_multiple(lr, self.size_multiple)
            full = self.model(padded)
            if full.dim() != 4 or tuple(full.shape[-2:]) != (padded.shape[-2] * s, padded.shape[-1] * s):
                raise RuntimeError(
                    f"{self.component!r} returned shape {tuple(full.shape)} for input {tuple(padded.shape)} "
                    f"(scale {s})"
                )
            out = full[:, :, : h * s, : w * s].float()
            bad = (~torch.isfinite(out).flatten(1).all(1)).tolist()
        slot = self.slots[0]
        outcomes = []
        for b in range(lr.shape[0]):
            o = Outcome()
            if bad[b]:
                o.errors[slot] = "the network output is not finite"
            else:
                o.images[slot] = out[b].clamp(0, 1)
            outcomes.append(o)
        return outcomes

    def _noise(self, shapes: Sequence[tuple[int, ...]], seed: int, batch: int) -> list[Tensor]:
        """Standard-normal latents, the same for every image of a batch size 1 shape and seed (CPU draws,
        so results do not depend on the device)."""
        one = [(1,) + tuple(s[1:]) for s in shapes]
        per_item = []
        for _ in range(batch):
            gen = torch.Generator().manual_seed(seed)
            per_item.append(sample_latents(one, 1.0, gen))
        return [torch.cat([z[k] for z in per_item]).to(self.device) for k in range(len(shapes))]

    def _tmap_for(self, hr_hw: tuple[int, int], padded_hw: tuple[int, int]) -> Tensor | None:
        if self.tmap is None:
            return None
        m = F.interpolate(self.tmap.to(self.device), size=hr_hw, mode="bilinear", align_corners=False)
        ph, pw = padded_hw[0] - hr_hw[0], padded_hw[1] - hr_hw[1]
        return F.pad(m, (0, pw, 0, ph), mode="replicate") if ph or pw else m

    def _run_flow(self, lr: Tensor, hr: Tensor | None) -> list[Outcome]:
        mode = self.spec.mode
        batch, _, h, w = lr.shape
        s = self.scale
        align = self._align(h, w)
        lr_pad, _ = pad_to_multiple(lr, align)
        shapes = _batch_shapes(self.model, lr_pad.shape)
        tmap = self._tmap_for((h * s, w * s), (lr_pad.shape[-2] * s, lr_pad.shape[-1] * s))
        # every image slot: (base latents, factor, whether the temperature map applies)
        jobs: list[tuple[Slot, list[Tensor], float, bool]] = []
        image_slots = [sl for sl in self.slots if sl.kind == "image"]
        if mode in ("sr", "sample", "feed_through"):
            noise: dict[int, list[Tensor]] = {}
            for sl in image_slots:
                assert sl.seed is not None and sl.temperature is not None
                if sl.seed not in noise:
                    noise[sl.seed] = self._noise(shapes, sl.seed, batch)
                jobs.append((sl, noise[sl.seed], sl.temperature, True))
        elif mode == "restore":
            assert hr is not None
            base = normalize_latents([z.float() for z in self.model.encode(hr, lr).latents])
            for sl in image_slots:
                assert sl.temperature is not None
                jobs.append((sl, base, sl.temperature, True))
        elif mode == "latent_transfer":
            assert self.ref_latents is not None
            base = transfer_latents(self.ref_latents, shapes)
            jobs.append((image_slots[0], base, 1.0, False))
        else:  # interpolate
            assert hr is not None
            target = [z.float() for z in self.model.encode(hr, lr).latents]
            start = (transfer_latents(self.ref_latents, shapes) if self.ref_latents is not None
                     else zeros_like_latents(target))
            frames = interpolate_latents(start, target, self.spec.frames, self.spec.interpolation)
            for sl in image_slots:
                assert sl.frame is not None
                jobs.append((sl, frames[sl.frame], 1.0, False))

        def effective(base: Sequence[Tensor], t: float, use_map: bool, tm: Tensor | None) -> list[Tensor]:
            return scale_latents(base, t * tm if (use_map and tm is not None) else t)

        sets = [effective(base, t, use_map, tmap) for _sl, base, t, use_map in jobs]
        outs, nonfinite, bad_tiles = self._decode(lr_pad, sets)
        outcomes = [Outcome() for _ in range(batch)]
        for j, (sl, base, t, use_map) in enumerate(jobs):
            for b in range(batch):
                if not nonfinite[j][b]:
                    outcomes[b].images[sl] = outs[j][b, :, : h * s, : w * s].clamp(0, 1)
                    continue
                where = f" in {bad_tiles[(j, b)].describe()}" if (j, b) in bad_tiles else ""
                reason = f"non-finite decode{where}"
                for lt in [x for x in self.ladder if x < t]:
                    zb = [z[b : b + 1] for z in base]
                    tm = tmap[b : b + 1] if tmap is not None and tmap.shape[0] > 1 else tmap
                    o2, nf2, _ = self._decode(lr_pad[b : b + 1], [effective(zb, lt, use_map, tm)])
                    if not nf2[0][0]:
                        outcomes[b].images[sl] = o2[0][0, :, : h * s, : w * s].clamp(0, 1)
                        outcomes[b].fallbacks[sl] = (lt, reason)
                        break
                else:
                    tried = ", ".join(_tname(x) for x in [t] + [x for x in self.ladder if x < t])
                    outcomes[b].errors[sl] = f"{reason}; still not finite at temperatures {tried}"
        return outcomes

    def _decode(self, lr: Tensor, sets: Sequence[Sequence[Tensor]]) -> tuple[list[Tensor], list[list[bool]], dict[tuple[int, int], Tile]]:
        assert self.decode is not None
        if self.spec.tile is not None:
            res = tiled_flow_decode(self.model, lr, sets, tile=self.spec.tile.size, overlap=self.spec.tile.overlap,
                                    decode=self.decode)
            return res.outputs, res.nonfinite.tolist(), res.bad_tiles
        outs = [o.float() for o in self.decode(lr, sets)]
        flags = [(~torch.isfinite(o).flatten(1).all(1)).tolist() for o in outs]
        return outs, flags, {}


# ----------------------------------------------------------------------------------------------------
# the driver


def _shard(items: list[InputItem], rank: int, world: int) -> list[InputItem]:
    return items[rank::world] if world > 1 else items


def infer(plan: Plan, networks: Mapping[str, Any] | None = None, *, shard: bool = True) -> InferSummary:
    """Run ``plan``'s ``[infer]`` table (networks built from the plan, or the given trained ``networks``).

    Under torchrun (``WORLD_SIZE`` > 1) each rank takes its share of the inputs unless ``shard`` is false.

    User mistakes found before any output is written (bad options, no inputs, an output that would overwrite an
    input, a wrong mode for the network) raise :class:`UserError`. Per-image problems (unreadable file, a decode
    that stays non-finite) are reported in the summary, the other images are still written, and ``exit_code``
    is 1.
    """
    from tqdm import tqdm

    r = _Runner(plan, networks)
    spec = r.spec
    items = _shard(r.items, r.rank, r.world) if shard else r.items
    summary = InferSummary(exit_code=0, output_dir=r.out_dir)
    reports = Reports(border=r.scale) if r.reports_on else None
    records: dict[str, dict[str, Any]] = {}
    gif_slot = next((sl for sl in r.slots if sl.kind == "gif"), None)

    def record(item: InputItem, slot: Slot, path: Path, fallback: tuple[float, str] | None) -> None:
        rec: dict[str, Any] = {"input": str(item.path), "mode": spec.mode, "network": r.component}
        if slot.temperature is not None:
            key = "latent_scale" if spec.mode in ("latent_transfer", "interpolate") else "temperature"
            rec[key] = slot.temperature
            rec["used_" + key] = fallback[0] if fallback else slot.temperature
        for k in ("sample", "seed", "frame"):
            if getattr(slot, k) is not None:
                rec[k] = getattr(slot, k)
        if spec.temperature_map is not None and r.flow and spec.mode not in ("latent_transfer", "interpolate"):
            rec["temperature_map"] = str(spec.temperature_map)
        rec["fallback"] = {"used": fallback[0], "reason": fallback[1]} if fallback else None
        records[_rel(path, r.out_dir)] = rec

    def finish(p: Prepared, outcome: Outcome) -> None:
        todo = dict(p.todo)
        for slot, err in outcome.errors.items():
            summary.failed.append((p.item.path, f"{slot.label}: {err}"))
        for slot, img in outcome.images.items():
            path = todo.get(slot)
            if path is None:
                continue
            try:
                write_image(path, img, p.alpha, bits=p.bits, gray=p.gray)
            except (ValueError, OSError, TypeError) as exc:
                summary.failed.append((p.item.path, f"{path.name}: cannot write ({_one_line(exc)})"))
                continue
            summary.written.append(path)
            fb = outcome.fallbacks.get(slot)
            if fb is not None:
                summary.fallbacks.append(Fallback(p.item.path, path, float(slot.temperature or 0.0), fb[0], fb[1]))
            record(p.item, slot, path, fb)
        if gif_slot is not None and gif_slot in todo:
            frames = [outcome.images.get(sl) for sl in r.slots if sl.kind == "image"]
            if all(f is not None for f in frames):
                gif_path = todo[gif_slot]
                try:
                    write_gif(gif_path, [f for f in frames if f is not None])
                    summary.written.append(gif_path)
                    record(p.item, gif_slot, gif_path, None)
                except (ValueError, OSError) as exc:
                    summary.failed.append((p.item.path, f"{gif_path.name}: cannot write ({_one_line(exc)})"))
            else:
                summary.failed.append((p.item.path, f"{todo[gif_slot].name}: not written, some frames failed"))
        if reports is not None and p.hr is not None:
            outs = [(sl, quantize(img.float().cpu(), p.bits)) for sl, img in outcome.images.items()]
            if outs:
                bic = upsample_bicubic(p.lr[None].float().cpu(), r.scale)[0]
                reports.add(p.item, p.hr.float().cpu(), quantize(bic, p.bits), outs)

    def process(batch: list[Prepared]) -> None:
        try:
            outcomes = r.run_batch(batch)
        except (RuntimeError, ValueError, UserError) as exc:
            if len(batch) > 1:  # find the culprit: one image at a time
                for p in batch:
                    process([p])
                return
            hint = " (try [infer.tile])" if "out of memory" in str(exc).lower() else ""
            summary.failed.append((batch[0].item.path, _one_line(exc) + hint))
            return
        for p, o in zip(batch, outcomes):
            finish(p, o)

    def existing_only(item: InputItem, paths: list[tuple[Slot, Path]]) -> None:
        """Reports for an image whose outputs all exist: read them back instead of recomputing."""
        if reports is None:
            return
        try:
            p = r.prepare(item, [])
        except UserError:
            return
        o = Outcome()
        for slot, path in paths:
            if slot.kind != "image":
                continue
            try:
                img = read_image(path).rgb
            except UserError:
                continue
            if p.hr is not None and img.shape == p.hr.shape:
                o.images[slot] = img
        if p.hr is not None and o.images:
            outs = [(sl, img) for sl, img in o.images.items()]
            bic = upsample_bicubic(p.lr[None].float(), r.scale)[0]
            reports.add(item, p.hr.float(), quantize(bic, p.bits), outs)

    buckets: dict[tuple[int, ...], list[Prepared]] = {}
    bar = tqdm(total=len(items), desc=f"infer {spec.mode}", unit="img", disable=None if r.rank == 0 else True)
    try:
        for item in items:
            paths = [(sl, sl.path(r.out_dir, item, r.ext)) for sl in r.slots]
            todo = [(sl, p) for sl, p in paths if spec.overwrite or not p.exists()]
            summary.skipped += [p for sl, p in paths if (sl, p) not in todo]
            if not todo:
                existing_only(item, paths)
                bar.update(1)
                continue
            try:
                prep = r.prepare(item, todo)
            except UserError as exc:
                reason = _one_line(exc)
                prefix = f"{item.path}: "
                summary.failed.append((item.path, reason[len(prefix):] if reason.startswith(prefix) else reason))
                bar.update(1)
                continue
            key = tuple(prep.lr.shape) + ((tuple(prep.hr.shape)) if prep.hr is not None else ())
            bucket = buckets.setdefault(key, [])
            bucket.append(prep)
            if len(bucket) >= spec.batch_size:
                del buckets[key]
                process(bucket)
                bar.update(len(bucket))
        for bucket in list(buckets.values()):
            process(bucket)
            bar.update(len(bucket))
    finally:
        bar.close()

    summary.exit_code = 1 if summary.failed else 0
    _write_reports(r, summary, reports, records)
    print(summary.text())
    return summary


def _gather(summary: InferSummary, reports: Reports | None, records: dict[str, Any]) -> tuple[bool, Any]:
    """Under an initialised torch.distributed group: every rank's results on rank 0 (``(True, list)``)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return False, None
    payload = (summary, reports, records)
    gathered: list[Any] | None = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(payload, gathered, dst=0)
    return True, gathered


def _write_reports(r: _Runner, summary: InferSummary, reports: Reports | None, records: dict[str, Any]) -> None:
    suffix = ""
    if r.world > 1:
        merged, gathered = _gather(summary, reports, records)
        if merged:
            if r.rank != 0:
                return
            assert gathered is not None
            for s2, rep2, rec2 in gathered[1:]:
                summary.written += s2.written
                summary.skipped += s2.skipped
                summary.failed += s2.failed
                summary.fallbacks += s2.fallbacks
                records.update(rec2)
                if reports is not None and rep2 is not None:
                    reports.rows += rep2.rows
                    reports.grid += rep2.grid
            summary.exit_code = 1 if summary.failed else 0
        else:
            suffix = f".rank{r.rank}"
    if reports is not None:
        reports.write(r.out_dir, suffix)
    if records:
        path = r.out_dir / f"samples{suffix}.json"
        old: dict[str, Any] = {}
        if path.is_file():
            try:
                old = json.loads(path.read_text()).get("outputs", {})
            except (OSError, ValueError, AttributeError):
                old = {}
        old.update(records)
        _atomic_text(path, json.dumps({"outputs": dict(sorted(old.items()))}, indent=2) + "\n")
    if summary.written or summary.failed or summary.skipped or r.out_dir.is_dir():
        _atomic_text(r.out_dir / f"summary{suffix}.json", json.dumps(summary.as_dict(), indent=2) + "\n")


__all__ = [
    "Fallback",
    "InferSummary",
    "InputItem",
    "Slot",
    "collect_inputs",
    "image_metrics",
    "infer",
    "is_flow",
    "make_slots",
    "upsample_bicubic",
    "write_gif",
]
