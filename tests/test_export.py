"""restore-run export / restorekit.export_model: ONNX (on onnxruntime) and torch.export artifacts equal to eager at
LR sizes the trace never saw, SRFlow's sampling graph with given latents, sidecars, one-line errors, the kit."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import restorekit
from restorekit import ExportedModel, UserError, export_model, sample_latents
from restorekit.catalogue.hashes import sha256_file
from restorekit.export import DEFAULT_OPSET, ExportResult
from restorekit.export.writer import EXAMPLE_UNITS
from restorekit.testing import check_export

from fakes import FakeFlow, make_registry, run, srflow_tiny

ort = pytest.importorskip("onnxruntime", reason="the export extra (pip install 'restorekit[export]')")
pytest.importorskip("onnxscript", reason="the export extra (pip install 'restorekit[export]')")

FIXTURES = Path(__file__).resolve().parent / "fixtures"
UNSEEN = ((1, 3, 4), (2, 6, 5))  # (batch, height, width) in units of size_multiple; the trace saw (2, 5, 7)
# a tiny x2 SRFlow of one level (no split): a fifth of what the x4 three-level one costs to export to ONNX, for the
# tests of the lr-only mean graph and of the sidecar (the multi-latent graphs: the bundled and fixture models below)
ONE_LEVEL = {"scale": 2, "L": 1}


def rel(a: Tensor | np.ndarray, b: Tensor) -> float:
    a = torch.as_tensor(a)
    return float((a - b).abs().max() / b.abs().max())


def lr_batch(model: nn.Module, batch: int, hu: int, wu: int, seed: int = 3) -> Tensor:
    m = model.size_multiple
    return torch.rand(batch, 3, m * hu, m * wu, generator=torch.Generator().manual_seed(seed))


def rrdb(kind: str) -> nn.Module:
    """The RRDB family at fixture/test size: the SRFlow release's RRDB and ESRGAN (the official-format fixture file
    with its two wirings), Real-ESRGAN x4plus and x2plus (pixel-unshuffle) layouts, the bundled model. Files load
    as ``restore-run export`` builds them: NCHW, no fast-path switches (``fast=False`` also skips the layout probe)."""
    fixture = FIXTURES / "rrdb_x4" / "official.pth"
    if kind == "srflow-release-rrdb":
        return restorekit.load(fixture, variant="srflow", fast=False)
    if kind == "esrgan":
        return restorekit.load(fixture, variant="esrgan", fast=False)
    if kind == "bundled-rrdb-x4":
        return restorekit.load("bundled-rrdb-x4", fast=False)
    comp = make_registry().get("generator", "rrdb").component
    params = {"realesrgan-x4plus": {"scale": 4}, "realesrgan-x2plus": {"scale": 2, "pixel_unshuffle": True}}[kind]
    torch.manual_seed(0)
    model = comp.build(comp.params.model_validate({"nf": 8, "nb": 1, "gc": 4, **params})).eval()
    return model


@pytest.mark.slow  # five ONNX exports, three of full-size files (the default run exports RRDBs through the kit)
@pytest.mark.parametrize("kind", ["srflow-release-rrdb", "esrgan", "realesrgan-x4plus", "realesrgan-x2plus",
                                  "bundled-rrdb-x4"])
def test_rrdb_family_onnx_equals_eager_on_onnxruntime_at_unseen_sizes(kind: str, tmp_path: Path) -> None:
    model = rrdb(kind)
    out = tmp_path / f"{kind}.onnx"
    export_model(model, out, check=False)  # checked here, on plain onnxruntime
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["lr"]
    for b, hu, wu in UNSEEN:
        assert (hu, wu) != EXAMPLE_UNITS
        lr = lr_batch(model, b, hu, wu)
        (got,) = session.run(None, {"lr": lr.numpy()})
        with torch.no_grad():
            want = model(lr)
        assert got.shape == tuple(want.shape) == (b, 3, lr.shape[2] * model.scale, lr.shape[3] * model.scale)
        assert rel(got, want) <= 1e-4


@pytest.fixture(scope="module")
def x2_pt2(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    """Real-ESRGAN x2plus (pixel-unshuffle: LR sizes in multiples of 2) exported once to .pt2, unchecked, for the
    tests that read the artifact back."""
    model = rrdb("realesrgan-x2plus")
    out = tmp_path_factory.mktemp("pt2") / "x2.pt2"
    export_model(model, out, check=False)
    return model, out


def test_pt2_round_trip_equals_eager_with_dynamic_shapes(x2_pt2: tuple[nn.Module, Path]) -> None:
    model, out = x2_pt2
    program = torch.export.load(str(out)).module()
    for b, hu, wu in UNSEEN:
        lr = lr_batch(model, b, hu, wu)
        with torch.no_grad():
            assert rel(program(lr), model(lr)) <= 1e-6


@pytest.mark.slow  # the bundled / fixture SRFlow: a full-size trace (CI runs slow tests too)
def test_srflow_sampling_graph_takes_lr_then_the_latents_and_equals_decode(tmp_path: Path) -> None:
    model = restorekit.load("bundled-srflow-x4", fast=False)  # as restore-run export builds it
    out = tmp_path / "sampler.onnx"
    export_model(model, out, check=False)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    shapes = model.latent_shapes((1, 3, 8, 8))
    assert names == ["lr"] + [f"z{i}" for i in range(len(shapes))]
    for b, hu, wu in UNSEEN:
        lr = lr_batch(model, b, hu, wu)
        gen = torch.Generator().manual_seed(7)
        zs = sample_latents(model.latent_shapes(lr.shape), 0.8, gen, batch=b)
        feeds = {"lr": lr.numpy(), **{f"z{i}": z.numpy() for i, z in enumerate(zs)}}
        (got,) = session.run(None, feeds)
        with torch.no_grad():
            want = model.decode(lr, zs)
        assert rel(got, want) <= 1e-4
    import onnx

    ops = {node.op_type for node in onnx.load(str(out)).graph.node}
    assert not ops & {"Log", "Inverse", "RandomNormal", "RandomNormalLike", "Det"}  # no log-det, no inverse, no noise


@pytest.fixture(scope="module")
def mean_onnx(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path, ExportResult]:
    """The tiny one-level SRFlow saved as a restorekit file, and that file's temperature-0 graph exported (and
    checked) to ONNX once: (model, checkpoint, result); the artifact and its sidecar lie beside the checkpoint."""
    folder = tmp_path_factory.mktemp("mean")
    model = srflow_tiny(**ONE_LEVEL)
    ckpt = folder / "tiny.safetensors"
    restorekit.save_generator(ckpt, model, "srflow", model.arch_params)
    return model, ckpt, export_model(ckpt, folder / "mean.onnx", temperature=0)


def test_srflow_t0_graph_takes_lr_only_and_equals_the_mean_image(
        mean_onnx: tuple[nn.Module, Path, ExportResult]) -> None:
    model, _, result = mean_onnx
    assert result.sidecar["graph"] == "mean"
    runner = ExportedModel(result.path)
    assert runner.inputs == ["lr"]
    for b, hu, wu in UNSEEN:
        lr = lr_batch(model, b, hu, wu)
        with torch.no_grad():
            assert rel(runner(lr), model.decode(lr, temperature=0.0)) <= 1e-4


@pytest.mark.slow  # the bundled / fixture SRFlow: a full-size trace (CI runs slow tests too)
def test_srflow_fixture_sampling_graph_and_tiny_encode_graph_round_trip_as_pt2(tmp_path: Path) -> None:
    model = restorekit.load(FIXTURES / "srflow_x4" / "official.pth", fast=False)  # the official-format fixture
    export_model(model, tmp_path / "s.pt2", check=False)
    sampler = torch.export.load(str(tmp_path / "s.pt2")).module()
    lr = lr_batch(model, 2, 3, 4)
    zs = sample_latents(model.latent_shapes(lr.shape), 0.6, torch.Generator().manual_seed(1), batch=2)
    with torch.no_grad():
        assert rel(sampler(lr, *zs), model.decode(lr, zs)) <= 1e-5
    model = srflow_tiny()
    export_model(model, tmp_path / "e.pt2", graph="encode", check=False)
    encoder = torch.export.load(str(tmp_path / "e.pt2")).module()
    hr = F.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False).clamp(0, 1)
    with torch.no_grad():
        got, want = encoder(hr, lr), model.encode(hr, lr).latents
    assert len(got) == len(want)
    assert max(rel(a, b) for a, b in zip(got, want)) <= 1e-4


def test_only_the_decoding_graphs_hold_the_1x1_inverses() -> None:
    model = srflow_tiny()
    steps = len([m for m in model.modules() if type(m).__name__ == "InvConv1x1"])
    held = {kind: [n for n, _ in model.export_graph(kind).module.flow.named_buffers(recurse=False)]
            for kind in ("sample", "mean", "encode")}
    assert len(held["sample"]) == len(held["mean"]) == steps > 0
    assert all(n.startswith("inverse_") for n in held["sample"] + held["mean"]) and held["encode"] == []


def test_sidecar_records_what_a_runtime_needs(mean_onnx: tuple[nn.Module, Path, ExportResult]) -> None:
    _, ckpt, result = mean_onnx
    side = json.loads(result.sidecar_path.read_text())
    assert result.sidecar_path == result.path.with_name("mean.onnx.json")
    assert side == result.sidecar
    model = restorekit.load(ckpt)
    assert side["format"] == "onnx" and side["opset"] == DEFAULT_OPSET and side["graph"] == "mean"
    # (a recorded size_multiple of 2 is what the runner enforces: test_sizes_outside_the_export_are_one_line)
    assert (side["scale"], side["size_multiple"], side["input_range"]) == (2, 1, [0.0, 1.0])
    assert side["precision"] == "fp32" and side["dtype"] == "float32"
    assert side["inputs"] == [{"name": "lr", "dims": ["batch", 3, "height", "width"]}]
    assert side["outputs"] == [{"name": "sr", "dims": ["batch", 3, "height*2", "width*2"]}]
    assert side["source"]["sha256"] == sha256_file(ckpt)
    assert side["parity"]["max_relative_error"] <= 1e-4
    table = side["flow"]["latent_shapes"]
    assert len(table) >= 2
    for row in table:
        assert row["latents"] == [list(s) for s in model.latent_shapes((1, 3, *row["lr"]))]
    assert "N(0, T^2)" in side["flow"]["temperature"] and "sample_latents" in side["flow"]["temperature"]
    assert side["flow"]["latent_names"] == [f"z{i}" for i in range(len(table[0]["latents"]))]


def test_fp16_export_runs_on_onnxruntime_close_to_fp32_eager(tmp_path: Path) -> None:
    model = rrdb("realesrgan-x4plus")
    result = export_model(model, tmp_path / "h.onnx", precision="fp16")
    assert result.sidecar["dtype"] == "float16"
    assert result.max_relative_error is not None and 1e-6 < result.max_relative_error <= 2e-2


# ------------------------------------------------------------------------------------------------
# one-line errors, nothing written


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_cli_export_writes_artifact_and_sidecar(tmp_path: Path, capsys) -> None:
    model = rrdb("realesrgan-x4plus")
    ckpt = tmp_path / "in" / "g.safetensors"
    ckpt.parent.mkdir()
    restorekit.save_generator(ckpt, model, "rrdb", model.arch_params)
    (tmp_path / "out").mkdir()
    code, out, err = run(["export", "--model", ckpt, "--output", tmp_path / "out" / "r.onnx", "--opset", "18"], capsys)
    assert code == 0, err
    assert leftovers(tmp_path / "out") == ["r.onnx", "r.onnx.json"]
    assert "max relative difference to eager" in out
    assert json.loads((tmp_path / "out" / "r.onnx.json").read_text())["opset"] == 18


@pytest.mark.parametrize(("args", "message"), [
    (["--model", "bundled-rrdb-x4", "--output", "{tmp}/r.txt"], "unknown export format '.txt'"),
    (["--model", "bundled-rrdb-x4", "--output", "{tmp}/file/r.onnx"], "exists and is not a folder"),
    (["--model", "bundled-rrdb-x4", "--output", "{tmp}/r.onnx", "--graph", "sample"], "is not a flow"),
    (["--model", "bundled-srflow-x4", "--output", "{tmp}/r.onnx", "--precision", "fp16"], "cannot be exported in fp16"),
    (["--model", "bundled-rrdb-x4", "--output", "{tmp}/r.pt2", "--opset", "17"], "only for ONNX files"),
])
def test_cli_errors_are_one_line_and_write_nothing(args: list[str], message: str, tmp_path: Path, capsys) -> None:
    (tmp_path / "file").write_text("x")
    code, out, err = run(["export", *[a.format(tmp=tmp_path) for a in args]], capsys)
    assert code == 2
    assert err.count("\n") == 1 and message in err, err
    assert leftovers(tmp_path) == ["file"]


def test_missing_onnx_packages_are_one_line(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import fails as if not installed
    with pytest.raises(UserError, match=r"^exporting to ONNX needs onnxscript, which is not installed "
                                         r"\(pip install 'restorekit\[export\]'\)$"):
        export_model(rrdb("realesrgan-x4plus"), tmp_path / "r.onnx")
    assert leftovers(tmp_path) == []


def test_sizes_outside_the_export_are_one_line(x2_pt2: tuple[nn.Module, Path]) -> None:
    runner = ExportedModel(x2_pt2[1])  # pixel-unshuffle: multiples of 2
    with pytest.raises(UserError, match=r"LR size 7x8 is outside what this export supports: height and width must "
                                        r"be positive multiples of 2"):
        runner(torch.rand(1, 3, 7, 8))


class Branchy(nn.Module):
    """A generator whose output depends on a Python branch on tensor values: it cannot be traced."""

    scale, size_multiple = 2, 1

    def forward(self, lr: Tensor) -> Tensor:
        up = F.interpolate(lr, scale_factor=2, mode="nearest")
        return up if float(lr.mean()) > 0.5 else 1 - up


def test_a_generator_that_cannot_export_gets_one_line_why(tmp_path: Path) -> None:
    with pytest.raises(UserError) as info:
        export_model(Branchy(), tmp_path / "b.onnx", name="branchy")
    assert str(info.value).startswith("branchy: cannot export the 'forward' graph: torch.export failed (")
    assert "\n" not in str(info.value)
    with pytest.raises(UserError, match=r"^fakeflow: cannot export: FakeFlow is a flow without export_graph\(\)"):
        export_model(FakeFlow(), tmp_path / "f.pt2", name="fakeflow")
    assert leftovers(tmp_path) == []


def test_pipeline_network_exports(tmp_path: Path, capsys) -> None:
    spec = tmp_path / "p.toml"
    spec.write_text('''[run]
mode = "infer"

[networks.generator]
component = "rrdb"
params = { nf = 8, nb = 1, gc = 4, scale = 2 }

[infer]
inputs = ["in"]
output_dir = "out"
''')
    (tmp_path / "in").mkdir()
    code, out, err = run(["export", "--pipeline", spec, "--network", "generator", "--output", tmp_path / "g.pt2"],
                         capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "g.pt2.json").read_text())["scale"] == 2
    code, out, err = run(["export", "--pipeline", spec, "--network", "nope", "--output", tmp_path / "n.pt2"], capsys)
    assert code == 2 and "has no network 'nope' (networks: generator)" in err


# ------------------------------------------------------------------------------------------------
# the conformance kit


class Drifting(nn.Module):
    """Traces, but its graph is not what eager computes: each eager call scales by its call count, which the trace
    bakes in."""

    scale, size_multiple = 1, 1

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, lr: Tensor) -> Tensor:
        self.calls += 1
        return lr * float(self.calls)


class Shuffle(nn.Module):
    """Exports faithfully: one convolution and a pixel shuffle (the kit on the real generators: test_conformance)."""

    scale, size_multiple = 2, 1

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 12, 3, padding=1)

    def forward(self, lr: Tensor) -> Tensor:
        return F.pixel_shuffle(self.conv(lr), 2)


def test_the_kit_checks_an_export_claim(tmp_path: Path) -> None:
    errors = check_export(Shuffle().eval(), name="generator 'shuffle'", tmp_dir=tmp_path / "a")
    assert set(errors) == {"kit_export_forward.pt2", "kit_export_forward.onnx"}  # flows: test_conformance
    assert max(errors.values()) <= 1e-4
    with pytest.raises(AssertionError, match=r"^generator 'branchy': claims exportable=True, but the 'forward' graph "
                                             r"does not export to \.pt2: "):
        check_export(Branchy(), name="generator 'branchy'", tmp_dir=tmp_path / "b")
    with pytest.raises(AssertionError, match=r"^generator 'drifting': the exported 'forward' graph \(\.pt2\) differs "
                                             r"from eager by .* relative \(limit 1e-04\)$"):
        check_export(Drifting(), name="generator 'drifting'", tmp_dir=tmp_path / "c")


# ------------------------------------------------------------------------------------------------
# restore-run --benchmark --onnx


@pytest.mark.slow  # an ONNX export, then both paths timed
def test_benchmark_onnx_rows_sit_next_to_eager(registry) -> None:
    from restorekit.bench import BenchConfig, run_benchmark

    cfg = BenchConfig(models=["rrdb:{nf = 8, nb = 1, gc = 4, scale = 2}"], sizes=[12], onnx=True, memory=False,
                      repeats=2, warmup=0)
    rows, _ = run_benchmark(cfg, registry)
    paths = [r.path for r in rows]
    assert paths == ["forward", "forward-onnx", "bicubic"]
    onnx_row = rows[1]
    assert onnx_row.note.startswith("onnxruntime ") and onnx_row.plain_ms and onnx_row.speedup_vs_plain
    assert onnx_row.max_abs_diff is not None and onnx_row.max_abs_diff < 1e-4
