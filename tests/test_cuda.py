"""The CUDA paths: mixed precision in training, flows kept in fp32 under fp16, the TF32 switch, pinned memory,
``cuda:N``, nccl DDP in one process, tiled inference and the NaN ladder on the device, the benchmark's CUDA
timing and memory. Every test is marked ``cuda`` and skipped without a device (``pytest -m cuda`` runs them)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from restorekit import Switches, bench, perf
from restorekit.cli import main
from restorekit.testing import write_images
from restorekit.tiling import tiled_flow_decode, tiled_flow_encode, tiled_forward
from restorekit_rrdb import RRDBNet
from restorekit_srflow import SRFlowNet
from fakes import pipeline, read, run, sample_image, save

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

SRFLOW = {"scale": 4, "nf": 8, "nb": 2, "gc": 4, "K": 2, "L": 3, "hidden_channels": 8, "stack_blocks": [0, 1]}


def tiny_srflow(device: str = "cuda") -> SRFlowNet:
    torch.manual_seed(0)
    net = SRFlowNet(**SRFLOW).eval()
    for p in net.flowUpsamplerNet.parameters():
        p.data.add_(0.02 * torch.randn_like(p))
    return net.to(device)


def train_spec(tmp_path: Path, precision: str, device: str = "cuda") -> Path:
    write_images(tmp_path / "hq", n=4, size=32)
    p = tmp_path / f"train_{precision}.toml"
    params = ", ".join(f"{k} = {json.dumps(v)}" for k, v in SRFLOW.items())
    p.write_text(f"""
[run]
mode = "train"
device = "{device}"
precision = "{precision}"
output_dir = "{(tmp_path / ('out_' + precision)).as_posix()}"

[networks.generator]
component = "srflow"
params = {{ {params} }}

[data.train]
hq = ["{(tmp_path / 'hq').as_posix()}"]
target_size = 32
batch_size = 2
workers = 0

[steps.flow]
networks = ["generator"]
optimizer = {{ lr = 1e-4 }}
[steps.flow.injectors.encode]
component = "generator"
params = {{ network = "generator", mode = "encode", inputs = {{ hr = "hq", lr = "lq" }} }}
[steps.flow.losses.nll]
component = "direct"
params = {{ key = "nll" }}

[train]
steps = 3
log_every = 1
tensorboard = false
save_generator = ["generator"]
""")
    return p


def log_records(out: Path) -> list[dict]:
    rows = []
    for f in out.rglob("*.jsonl"):
        rows += [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    return rows


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_training_with_autocast_and_grad_scaler(tmp_path: Path, precision: str) -> None:
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    assert main([str(train_spec(tmp_path, precision))]) == 0
    losses = [r["loss"] for r in log_records(tmp_path / f"out_{precision}") if "loss" in r]
    assert losses and all(np.isfinite(losses))


def test_fp16_autocast_keeps_the_flow_in_fp32() -> None:
    net = tiny_srflow()
    lr = torch.rand(2, 3, 16, 16, device="cuda")
    hr = torch.nn.functional.interpolate(lr, scale_factor=4, mode="bicubic").clamp(0, 1)
    with torch.no_grad():
        ref = net.encode(hr, lr)
        with torch.autocast("cuda", dtype=torch.float16):
            got = net.encode(hr, lr)
            back = net.decode(lr, latents=got.latents)
    # the latents and the log-determinant (a sum over every pixel, > 65504 in fp16) stay fp32 and finite
    assert all(z.dtype == torch.float32 for z in got.latents) and got.logdet.dtype == torch.float32
    assert torch.isfinite(got.logdet).all() and torch.isfinite(got.nll).all()
    # only the RRDB features ran in fp16: the NLL moves by far less than a bit per pixel
    assert (got.nll - ref.nll).abs().max() < 0.05
    assert back.dtype == torch.float32 and (back - hr).abs().max() < 0.05


def test_tf32_switch_and_run_tf32(tmp_path: Path, fakes, capsys) -> None:  # noqa: F811
    perf.set_tf32(True)
    assert perf.tf32_enabled()
    perf.set_tf32(False)
    assert not perf.tf32_enabled()
    save(tmp_path / "in" / "a.png", sample_image("astronaut", 16, 16))
    p = pipeline(tmp_path, {"inputs": ["in"], "output_dir": "out"}, component="rrdb",
                 params={"nf": 8, "nb": 1, "gc": 4, "scale": 2})
    code, _, err = run([p, "--device", "cuda", "--set", "run.tf32=true"], capsys)
    assert code == 0, err
    assert perf.tf32_enabled()
    perf.set_tf32(False)


def test_pinned_transfer() -> None:
    x = torch.rand(3, 64, 64)
    y = perf.pinned(x, torch.device("cuda"))
    torch.cuda.synchronize()
    assert y.is_cuda and torch.equal(y.cpu(), x)


def test_cuda_index_runs_on_that_device(tmp_path: Path, fakes, capsys) -> None:
    last = torch.cuda.device_count() - 1
    save(tmp_path / "in" / "a.png", sample_image("astronaut", 16, 16))
    p = pipeline(tmp_path, {"inputs": ["in"], "output_dir": "out"}, component="rrdb",
                 params={"nf": 8, "nb": 1, "gc": 4, "scale": 2})
    code, _, err = run([p, "--device", f"cuda:{last}"], capsys)
    assert code == 0, err
    cpu = tmp_path / "cpu"
    p2 = pipeline(tmp_path, {"inputs": ["in"], "output_dir": str(cpu)}, component="rrdb",
                  params={"nf": 8, "nb": 1, "gc": 4, "scale": 2}, name="p2.toml")
    assert run([p2], capsys)[0] == 0
    a, b = read(tmp_path / "out" / "a.png").astype(int), read(cpu / "a.png").astype(int)
    assert np.abs(a - b).max() <= 1  # same weights (seeded), same image up to rounding


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_nccl_ddp_with_one_process() -> None:
    import torch.distributed as dist
    from restorekit.runtime import NetworkView

    if not dist.is_nccl_available():
        pytest.skip("no nccl in this torch build")
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        net = RRDBNet(nf=8, nb=1, gc=4, scale=2).cuda()
        ref = RRDBNet(nf=8, nb=1, gc=4, scale=2).cuda()
        ref.load_state_dict(net.state_dict())
        view = NetworkView(net)
        view.wrap(torch.device("cuda", torch.cuda.current_device()))
        assert view.ddp is not None
        lr = torch.rand(2, 3, 8, 8, device="cuda")
        view(lr).square().mean().backward()
        ref(lr).square().mean().backward()
        for p, q in zip(net.parameters(), ref.parameters()):
            assert torch.allclose(p.grad, q.grad, atol=1e-6)
    finally:
        dist.destroy_process_group()


def test_tiled_inference_on_cuda_matches_untiled() -> None:
    torch.manual_seed(0)
    rrdb = RRDBNet(nf=8, nb=1, gc=4, scale=2).cuda().eval()
    lr = torch.rand(1, 3, 40, 40, device="cuda")
    with torch.no_grad():
        full = rrdb(lr)
        tiled = tiled_forward(rrdb, lr, tile=24, overlap=16).outputs[0]
    assert (tiled - full).abs().max() < 1e-4
    net = tiny_srflow()
    lr = torch.rand(1, 3, 24, 40, device="cuda")
    hr = torch.rand(1, 3, 96, 160, device="cuda")
    with torch.no_grad():
        zs = [0.5 * z for z in net.encode(hr, lr).latents]
        whole = net.decode(lr, latents=zs)
        res = tiled_flow_decode(net, lr, [zs], tile=16, overlap=8)
        enc = tiled_flow_encode(net, hr, lr, tile=16, overlap=12)
    assert not res.nonfinite.any() and torch.isfinite(res.outputs[0]).all()
    assert (res.outputs[0] - whole).abs().mean() < 1e-2
    assert all(a.shape == b.shape for a, b in zip(enc, zs))


def test_nan_ladder_on_cuda(tmp_path: Path, fakes, capsys) -> None:  # noqa: F811
    save(tmp_path / "in" / "a.png", sample_image("astronaut", 16, 16))
    p = pipeline(tmp_path, {"inputs": ["in"], "mode": "sample", "temperatures": [0.8], "output_dir": "out",
                            "nan_ladder": [0.5, 0.0]}, params={"nan_above": 0.6})
    code, _, err = run([p, "--device", "cuda"], capsys)
    assert code == 0, err
    meta = json.loads((tmp_path / "out" / "samples.json").read_text())["outputs"]
    assert meta["a_t0.8_s0_seed0.png"]["used_temperature"] == 0.5


def test_benchmark_on_cuda_reports_allocator_peaks(registry, tmp_path: Path) -> None:
    out = tmp_path / "cuda.json"
    args = ["--benchmark", "--model", "rrdb:{nb = 1, nf = 8, gc = 4}", "--sizes", "16", "--repeats", "2",
            "--device", "cuda", "--precisions", "fp32,bf16", "--json", str(out)]
    assert main(args, registry=registry) == 0
    rows = [r for r in json.loads(out.read_text())["rows"] if r["path"] == "forward"]
    assert {r["precision"] for r in rows} == {"fp32", "bf16"}
    for r in rows:
        assert r["memory_kind"] == "cuda-max-allocated" and r["peak_mb"] > 0 and r["ms"] > 0
    fp32 = next(r for r in rows if r["precision"] == "fp32")
    assert fp32["max_abs_diff"] <= 1e-5


def test_benchmark_flow_bf16_reports_difference_to_fp32(registry, tmp_path: Path) -> None:
    cfg = bench.BenchConfig(samples=2, repeats=1, warmup=0, memory=False, devices=["cuda"])
    rows = bench.run_case(bench.BenchModel("tiny", tiny_srflow("cpu"), True), torch.device("cuda"), "bf16", 16, 1,
                          cfg, lambda _m: None)
    fwd = next(r for r in rows if r.path == "forward")
    assert fwd.max_abs_diff is not None and np.isfinite(fwd.max_abs_diff)  # bf16 against the fp32 plain path


def test_factored_map_on_cuda_matches_the_cpu_network() -> None:
    # SRFlow's opt-in switch on the device (factored 2·LR map, cached tap matrices), against the plain
    # network on the CPU (IEEE fp32: cuDNN's default TF32 off); and a training step through the frozen-map backward
    cpu = tiny_srflow("cpu")
    gpu = tiny_srflow("cuda")
    factored = Switches(inference=("factor_cond",), training=("fold_actnorm", "fold_scale", "factor_cond"))
    assert perf.fast_inference(gpu, factored) == 1
    lr = torch.rand(2, 3, 8, 12)
    zs = [torch.randn(2, *s) for s in cpu.latent_shapes(lr.shape)]
    before = (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision)
    perf.set_tf32(False)
    try:
        with torch.no_grad():
            want = cpu.decode(lr, latents=zs)
            got = gpu.decode(lr.cuda(), latents=[z.cuda() for z in zs]).cpu()
    finally:
        torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision = before
    assert float((got - want).abs().max()) <= 1e-4
    gpu.train()
    perf.lean_training(gpu, factored)
    gpu.RRDB.requires_grad_(False)
    hr = torch.rand(2, 3, 32, 48, device="cuda")
    loss = gpu.encode(hr, lr.cuda()).nll.mean()
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in gpu.parameters() if p.grad is not None)
