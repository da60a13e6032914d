"""The one door for weights (restorekit.plan.weights): headers at plan time, the tensors read once per run, and
``restorekit.load`` giving the pixels ``restore-run`` gives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import restorekit
from restorekit import perf
import safetensors.torch
import torch
from fakes import TINY_SRFLOW, read, sample_image, save, srflow_tiny
from restorekit.checkpoint import save_generator
from restorekit.cli import main
from restorekit.plan import resolve_generator


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every full read of a weights file (safetensors ``load_file``, ``torch.load`` without mmap)."""
    seen: list[str] = []
    real_load_file, real_torch_load = safetensors.torch.load_file, torch.load

    def load_file(path: Any, *args: Any, **kw: Any) -> Any:
        seen.append(str(path))
        return real_load_file(path, *args, **kw)

    def torch_load(path: Any, *args: Any, **kw: Any) -> Any:
        if not kw.get("mmap"):
            seen.append(str(path))
        return real_torch_load(path, *args, **kw)

    monkeypatch.setattr(safetensors.torch, "load_file", load_file)
    monkeypatch.setattr(torch, "load", torch_load)
    return seen


def tiny_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.safetensors"
    save_generator(path, srflow_tiny(), "srflow", {**TINY_SRFLOW, "scale": 4})
    return path


def test_a_run_reads_the_weights_once(tmp_path: Path, registry, reads: list[str], fixtures: Path) -> None:
    img = save(tmp_path / "in.png", sample_image("astronaut", 16, 16))
    for model in (tiny_file(tmp_path), fixtures / "rrdb_x4" / "official.pth", "bundled-srflow-x4"):
        reads.clear()
        out = tmp_path / f"out-{Path(str(model)).stem}"
        assert main(["--model", str(model), "--input", str(img), "--output", str(out), "--device", "cpu"],
                    registry=registry) == 0
        assert len(reads) == 1, (model, reads)  # planning read headers only; building read the tensors


def test_resolving_reads_headers_only(tmp_path: Path, registry, reads: list[str], fixtures: Path) -> None:
    for path in (tiny_file(tmp_path), fixtures / "rrdb_x4" / "official.pth"):
        gen = resolve_generator(registry, checkpoint=path, source=str(path))
        assert reads == [] and gen.path == path and gen.entry is None
    gen = resolve_generator(registry, model="bundled-srflow-x4", source="m")
    assert reads == [] and gen.entry is not None and gen.path is not None and gen.component.name == "srflow"


def test_load_gives_restore_runs_pixels_for_the_same_seed(tmp_path: Path, registry, capsys) -> None:
    path = tiny_file(tmp_path)
    img = save(tmp_path / "in.png", sample_image("astronaut", 16, 20))
    out = tmp_path / "out"
    args = ["--model", str(path), "--input", str(img), "--output", str(out), "--device", "cpu",
            "--temperature", "0.8", "--seed", "7"]
    assert main(args, registry=registry) == 0, capsys.readouterr().err
    written = read(out / "in_t0.8_s0_seed7.png")
    lr = torch.from_numpy(read(img)).permute(2, 0, 1)[None].float() / 255
    for fast in (True, False):
        model = restorekit.load(path, registry=registry, fast=fast)
        # the probe's choice is kept on the model (a tiny network is too small to probe: the default layout)
        assert getattr(model, "restorekit_layout", None) == ("contiguous" if fast else None)
        with torch.no_grad():
            sr = model.decode(perf.in_layout(getattr(model, "restorekit_layout", None), lr), temperature=0.8, generator=torch.Generator().manual_seed(7))
        pixels = torch.round(sr[0].clamp(0, 1) * 255).to(torch.uint8).permute(1, 2, 0).numpy()
        assert np.array_equal(pixels, written), (fast, int(np.abs(pixels.astype(int) - written).max()))
