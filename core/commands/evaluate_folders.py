"""``restore-run evaluate --gt DIR --sr DIR --scale 4 --samples N [--json FILE]``: score a folder of SR outputs
against a ground-truth folder with the NTIRE 2021 "Learning the SR space" protocol, no pipeline file.

Both folders are listed as every input is (:mod:`restorekit.data.find`); the ground-truth images are taken in
sorted order. Outputs are found by NTIRE's names (``{index:06d}_sample{i:05d}.png`` with ``index`` the position of
the GT file, ``{index:06d}.png`` for one sample) or by restorekit's (``<stem>.png``, or ``<stem>_t<T>_s<i>_seed<S>.png``
from ``restore-run``'s sample mode, ``<stem>`` the GT's name relative to its folder; ``--temperature`` picks one
temperature).
Every image is read as uint8 RGB; the GT is cropped top-left to a multiple of 8, the outputs to its size. Metrics:
the validators ``lr_psnr``, ``lpips`` (skipped, in one line, when its weights are missing), ``diversity`` (LPIPS and
L1 distances), ``psnr`` and ``ssim``; per-image values are the means over the samples, the dataset value the mean
over images.
"""

from __future__ import annotations

import json
import math
import re
import time
import warnings
from argparse import Namespace
from pathlib import Path, PurePosixPath
from typing import Any

import torch

from . import CommandParser
from ..components import SRSamples, ValidationContext
from ..data.find import ImageEntry, find_images
from ..data.io import read_image
from ..errors import UserError
from ..eval_report import EvalRow, text_tables, write_reports
from ..files import ensure_dir, write_text
from ..plan.checks import resolve_device
from ..scoring import mean_rows

CROP = 8
RESTOREKIT_SAMPLE = re.compile(r"^(?P<stem>.+)_t(?P<t>[0-9.e+-]+)_s(?P<s>\d+)_seed(?P<seed>\d+)$")


def build_parser(prog: str) -> CommandParser:
    p = CommandParser(prog=prog, description="Score SR outputs against ground truth (NTIRE 2021 SR-space protocol).")
    p.add_argument("--gt", type=Path, required=True, help="Folder of ground-truth images (taken in sorted order).")
    p.add_argument("--sr", type=Path, required=True, help="Folder of outputs (NTIRE or restorekit names).")
    p.add_argument("--scale", type=int, required=True, help="The upscaling factor (LR-PSNR downscales by it).")
    p.add_argument("--samples", type=int, default=1, help="Outputs per image (default 1).")
    p.add_argument("--temperature", type=float, default=None,
                   help="restorekit sample names: the temperature to score (when the folder holds several).")
    p.add_argument("--json", type=Path, default=None, help='Write {"mean": {...}, "per_image": [...]} here.')
    p.add_argument("--report", type=Path, default=None, help="Also write eval.md and the CSV files in this folder.")
    p.add_argument("--lpips-trunk", type=Path, default=None, help="AlexNet weights (default: the torch hub cache).")
    p.add_argument("--lpips-linear", type=Path, default=None, help="LPIPS v0.1 linear layers (default: lpips package).")
    p.add_argument("--device", default="cpu", help="Where LPIPS runs (cpu, cuda, cuda:N).")
    p.add_argument("--registry", default=None, help="A registry.toml overlay.")
    return p


def _ntire_names(index: int, samples: int) -> list[str]:
    return [f"{index:06d}.png"] if samples == 1 else [f"{index:06d}_sample{i:05d}.png" for i in range(samples)]


def _restorekit_names(stem: str, files: dict[str, Path], samples: int, temperature: float | None,
                      sr_dir: Path) -> list[str] | None:
    """The outputs of GT ``stem`` under restorekit's names: ``<stem>.<ext>``, or the sample mode's files at one
    temperature (sorted by sample index); None when there are none."""
    found: dict[float, dict[int, str]] = {}
    for name in files:
        m = RESTOREKIT_SAMPLE.match(_stem(name))
        if m and m["stem"] == stem:
            found.setdefault(float(m["t"]), {})[int(m["s"])] = name
    if not found:
        plain = [n for n in files if _stem(n) == stem]
        return plain[:1] or None
    temps = sorted(found)
    if temperature is None:
        if len(temps) > 1:
            raise UserError(f"--sr {sr_dir}: outputs of {stem!r} at temperatures "
                            f"{', '.join(f'{t:g}' for t in temps)}: pick one with --temperature")
        temperature = temps[0]
    if temperature not in found:
        raise UserError(f"--sr {sr_dir}: no output of {stem!r} at temperature {temperature:g} "
                        f"(found {', '.join(f'{t:g}' for t in temps)})")
    by_index = found[temperature]
    want = 1 if temperature == 0 else samples
    missing = [i for i in range(want) if i not in by_index]
    if missing:
        raise UserError(f"--sr {sr_dir}: missing sample {missing[0]} of {stem!r} at temperature {temperature:g} "
                        f"({stem}_t{temperature:g}_s{missing[0]}_seed*)")
    return [by_index[i] for i in range(want)]


def _stem(name: str) -> str:
    """A relative image name without its suffix (``sub/0801.png`` → ``sub/0801``)."""
    return PurePosixPath(name).with_suffix("").as_posix()


def match_outputs(gt_files: list[ImageEntry], sr_dir: Path, samples: int,
                  temperature: float | None) -> list[list[Path]]:
    """For each GT image, its output files in ``sr_dir`` (NTIRE names, else restorekit's, by the GT's name
    relative to its folder); a missing one is a one-line error."""
    files = {e.name: e.path for e in find_images([sr_dir], "--sr")}
    ntire = _ntire_names(0, samples)[0] in files
    out: list[list[Path]] = []
    for index, gt in enumerate(gt_files):
        if ntire:
            names = _ntire_names(index, samples)
            missing = [n for n in names if n not in files]
            if missing:
                raise UserError(f"--sr {sr_dir}: {missing[0]} is missing (output of {gt.name}, GT #{index} in sorted "
                                "order)")
        else:
            stem = _stem(gt.name)
            found = _restorekit_names(stem, files, samples, temperature, sr_dir)
            if found is None:
                raise UserError(f"--sr {sr_dir}: no output for {gt.name}: expected {_ntire_names(index, samples)[0]} "
                                f"(NTIRE names) or {stem}.png / {stem}_t<T>_s<i>_seed<S>.png (restorekit names)")
            names = found
        out.append([files[n] for n in names])
    return out


def _read(path: Path) -> torch.Tensor:
    """(1, 3, H, W) float in [0, 1] with exact k/255 values (8-bit files)."""
    rgb = read_image(path).rgb
    return ((rgb * 255.0).round() / 255.0)[None]


def load_item(index: int, gt: Path, srs: list[Path], scale: int) -> SRSamples:
    """The GT cropped top-left to a multiple of 8 and every output cropped to it; sizes checked (one line each)."""
    hq = _read(gt)
    h, w = (hq.shape[-2] // CROP) * CROP, (hq.shape[-1] // CROP) * CROP
    if h == 0 or w == 0:
        raise UserError.at(gt, None, f"{hq.shape[-2]}x{hq.shape[-1]} is smaller than {CROP} pixels")
    if h % scale or w % scale:
        raise UserError.at(gt, None,
                           f"cropped to {h}x{w} (a multiple of {CROP}) it is not a multiple of --scale {scale}")
    outs = []
    for path in srs:
        sr = _read(path)
        sh, sw = sr.shape[-2], sr.shape[-1]
        if (sh, sw) in ((hq.shape[-2] // scale, hq.shape[-1] // scale), (h // scale, w // scale)):
            raise UserError.at(path, None, f"{sh}x{sw} is 1/{scale} of the ground truth {gt.name} "
                               f"({hq.shape[-2]}x{hq.shape[-1]}): an LR image, not an output")
        if sh < h or sw < w or sh >= hq.shape[-2] + CROP or sw >= hq.shape[-1] + CROP:
            ratio = f" ({hq.shape[-2] / sh:.3g}x smaller: wrong --scale or wrong folder?)" if sh < h else ""
            raise UserError.at(path, None, f"size {sh}x{sw} does not match the ground truth {gt.name} "
                               f"({hq.shape[-2]}x{hq.shape[-1]}){ratio}")
        outs.append(sr[..., :h, :w])
    lq = hq[..., :h:scale, :w:scale]  # unused by these metrics (lr_psnr compares with the downscaled GT)
    return SRSamples(gt.name, lq, hq[..., :h, :w], outs, 0.0)


def _validators(registry: Any, args: Namespace, notes: list[str]) -> list[tuple[str, Any]]:
    """(name, validator) for lr_psnr, lpips, diversity (lpips, l1), psnr, ssim; LPIPS skipped in one line."""

    def build(name: str, params: dict[str, Any]) -> Any:
        comp = registry.get("validator", name).component
        return comp.build(comp.params.model_validate(params))

    lp = {k: v for k, v in (("trunk", args.lpips_trunk), ("linear", args.lpips_linear)) if v is not None}
    out = [("lr_psnr", build("lr_psnr", {}))]
    try:
        out.append(("lpips", build("lpips", lp)))
        out.append(("diversity", build("diversity", {"distance": "lpips", **lp})))
    except UserError as exc:
        if lp:  # a weights file the user named is not there: a mistake, not a skip
            raise
        notes.append(f"LPIPS skipped ({exc})")
        warnings.warn(notes[-1], stacklevel=2)
    out += [("diversity", build("diversity", {"distance": "l1"})), ("psnr", build("psnr", {})),
            ("ssim", build("ssim", {}))]
    return out


def run(args: Namespace, registry: Any) -> int:
    if args.scale < 1:
        raise UserError(f"--scale must be at least 1, got {args.scale}")
    if args.samples < 1:
        raise UserError(f"--samples must be at least 1, got {args.samples}")
    gt_files = find_images([args.gt], "--gt")
    device = resolve_device(args.device, "--device")
    if args.json is not None:  # checked before any scoring: a run's results are never lost to a bad path
        if args.json.is_dir():
            raise UserError(f"--json {args.json}: is a folder; give a file name")
        ensure_dir(args.json.parent, "--json")
    if args.report is not None:
        ensure_dir(args.report, "--report")
    pairs = match_outputs(gt_files, args.sr, args.samples, args.temperature)
    notes: list[str] = []
    validators = _validators(registry, args, notes)
    ctx = ValidationContext(device=device, scale=args.scale, samples=args.samples)
    rows: list[dict[str, Any]] = []
    with torch.no_grad():
        for index, (gt, srs) in enumerate(zip(gt_files, pairs)):
            item = load_item(index, gt.path, srs, args.scale)
            row: dict[str, Any] = {"name": gt.name, "index": index, "samples": len(srs)}
            for _, v in validators:
                row.update(v.score(item, ctx))
            rows.append(row)
    mean = {k: v for k, v in mean_rows(rows).items() if k not in ("index", "samples")}
    result = EvalRow(args.sr.name or str(args.sr), None, mean, rows)
    print(text_tables([result]))
    if args.json is not None:
        report = {"mean": mean, "per_image": rows, "gt": str(args.gt), "sr": str(args.sr), "scale": args.scale,
                  "samples": args.samples, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "notes": notes}
        write_text(args.json, json.dumps(report, indent=2, default=str) + "\n")
    if args.report is not None:
        write_reports([result], args.report, title=f"Evaluation of {args.sr}", notes=notes, plot=False)
    return 1 if any(isinstance(v, float) and math.isnan(v) for v in mean.values()) else 0
