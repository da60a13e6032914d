"""What restorekit promises every flow, checked on SRFlow and HCFlow alike (one test body, both flows).

Round trip (through ``EncodeResult.flow_lr`` where the flow predicts its own LR), temperature-0 determinism, seed
reproducibility through the one sampler, temperature maps, tiling with one image-wide latent, the NaN guard, the
latent-tool modes of ``restore-run``, ``--benchmark`` rows and the conformance kit (whose two-step training goes
spec → plan → train; SRFlow's kit run is in test_conformance.py). Networks are tiny, with their zero-initialised weights given small values and their ActNorms
initialised from data, so that every layer computes something.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import torch
from fakes import TINY_SRFLOW, pipeline, read, run, sample_image, save
from torch import Tensor, nn

import restorekit
from restorekit import latent_norm, sample_latents, scale_latents, zeros_like_latents
from restorekit.tiling import flow_decoder, plan_tiles, tiled_flow_decode

pytest.importorskip("restorekit_hcflow", reason="restorekit-hcflow is not installed (pip install -e plugins/hcflow)")

TINY_HCFLOW = {
    "scale": 4, "steps_per_level": 2, "cond_steps_per_level": [1, 1], "main_coupling_hidden": 8,
    "cond_coupling_hidden": 8, "cond_rrdb_blocks": [1, 1], "cond_features": 8, "cond_growth": 4,
}
FLOWS = {"srflow": TINY_SRFLOW, "hcflow": TINY_HCFLOW}


@pytest.fixture(scope="module")
def registry() -> restorekit.PluginRegistry:
    return restorekit.PluginRegistry.load()


def _images(batch: int, h: int, w: int, scale: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """(hr, lr): smooth natural-looking crops and their bicubic downscales."""
    names = ["astronaut", "coffee", "chelsea", "rocket"]
    hr = torch.stack([torch.from_numpy(sample_image(names[(seed + i) % 4], h * scale, w * scale)).permute(2, 0, 1)
                      for i in range(batch)]).float()
    lr = torch.nn.functional.interpolate(hr, size=(h, w), mode="bicubic", align_corners=False, antialias=True)
    return hr, lr.clamp(0, 1)


def build(registry: restorekit.PluginRegistry, name: str) -> nn.Module:
    comp = registry.get("generator", name).component
    torch.manual_seed(0)
    net = comp.build(comp.params(**FLOWS[name]))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for pname, p in net.named_parameters():
            if "actnorm" not in pname.lower() and not p.any():  # zero-initialised: couplings and priors
                p.normal_(0.0, 0.02, generator=gen)
        hr, lr = _images(2, 8, 8, net.scale)
        net.train()
        net.encode(hr, lr)  # ActNorms initialised from data
    return net.eval()


@pytest.fixture(scope="module", params=sorted(FLOWS))
def flow(request: pytest.FixtureRequest, registry: restorekit.PluginRegistry) -> Iterator[tuple[str, nn.Module]]:
    yield request.param, build(registry, request.param)


@torch.no_grad()
def test_is_a_flow_and_encode_decode_round_trip(flow: tuple[str, nn.Module]) -> None:
    name, net = flow
    assert isinstance(net, restorekit.FlowModel)
    hr, lr = _images(2, 8, 12, net.scale)
    enc = net.encode(hr, lr)
    assert [tuple(z.shape[1:]) for z in enc.latents] == [tuple(s) for s in net.latent_shapes(lr.shape)]
    assert enc.nll.shape == enc.logdet.shape == (2,) and torch.isfinite(enc.nll).all()
    assert (enc.flow_lr is not None) == (name == "hcflow")  # HCFlow's bijection has an LR slot
    back = net.decode(lr if enc.flow_lr is None else enc.flow_lr, enc.latents)
    assert (back - hr).abs().max().item() < 1e-4
    if enc.flow_lr is not None:  # with the given LR in that slot: an SR image, not the input
        assert (net.decode(lr, enc.latents) - hr).abs().max().item() > 1e-3


@torch.no_grad()
def test_temperature_zero_is_deterministic_and_the_latent_mean(flow: tuple[str, nn.Module]) -> None:
    _, net = flow
    _, lr = _images(2, 8, 8, net.scale)
    a = net.decode(lr, temperature=0.0, generator=torch.Generator().manual_seed(1))
    b = net.decode(lr, temperature=0.0, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and torch.isfinite(a).all()
    zeros = zeros_like_latents(sample_latents(net.latent_shapes(lr.shape), 1.0, batch=2))
    assert torch.equal(net.decode(lr, zeros), a)
    assert torch.equal(net(lr), a)  # model(lr): the mean image


@torch.no_grad()
def test_a_seed_gives_one_sample_and_temperatures_scale_the_same_noise(flow: tuple[str, nn.Module]) -> None:
    _, net = flow
    _, lr = _images(1, 8, 8, net.scale)
    seeded = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    a = net.decode(lr, temperature=0.8, generator=seeded(5))
    assert torch.equal(a, net.decode(lr, temperature=0.8, generator=seeded(5)))
    assert (a - net.decode(lr, temperature=0.8, generator=seeded(6))).abs().max() > 1e-3
    shapes = net.latent_shapes(lr.shape)
    unit = sample_latents(shapes, 1.0, seeded(5), batch=1)
    assert torch.allclose(net.decode(lr, scale_latents(unit, 0.8)), a, atol=1e-6)
    # a temperature map: 0 on the left half, 0.8 on the right
    tmap = torch.zeros(1, 1, 8 * net.scale, 8 * net.scale)
    tmap[..., 4 * net.scale:] = 0.8
    drawn = sample_latents(shapes, tmap, seeded(5), batch=1)
    for z in drawn:
        w = z.shape[-1]
        assert not z[..., : w // 2].any() and z[..., w // 2:].abs().max() > 0
    assert torch.equal(net.decode(lr, temperature=tmap, generator=seeded(5)), net.decode(lr, drawn))


@torch.no_grad()
def test_several_latent_sets_for_one_lr_decode_as_each_alone(flow: tuple[str, nn.Module]) -> None:
    """B latent sets with an LR batch of 1 (how samples are drawn): each output equals its own decode."""
    _, net = flow
    _, lr = _images(1, 8, 8, net.scale)
    sets = sample_latents(net.latent_shapes(lr.shape), 0.8, torch.Generator().manual_seed(3), batch=3)
    together = net.decode(lr, sets)
    for i in range(3):
        assert torch.allclose(together[i:i + 1], net.decode(lr, [z[i:i + 1] for z in sets]), atol=1e-5)


@torch.no_grad()
def test_tiled_decode_with_one_image_wide_latent_equals_untiled(flow: tuple[str, nn.Module]) -> None:
    _, net = flow
    _, lr = _images(1, 16, 88, net.scale)
    shapes = net.latent_shapes(lr.shape)
    sets = [sample_latents(shapes, t, torch.Generator().manual_seed(2), batch=1) for t in (0.0, 0.8)]
    overlap = 60  # more than both tiny networks' receptive radius on each side
    fulls = flow_decoder(net)(lr, sets)
    res = tiled_flow_decode(net, lr, sets, tile=overlap + 16, overlap=overlap)
    assert len(plan_tiles(16, 88, overlap + 16, overlap, net.size_multiple)) > 1
    assert not res.nonfinite.any()
    for tiled, full in zip(res.outputs, fulls):
        assert (tiled - full).abs().max().item() < 1e-4


def test_nan_guard_redoes_a_non_finite_sample_at_a_lower_temperature(
    flow: tuple[str, nn.Module], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    name, net = flow
    cls = type(net)
    decode = cls.decode

    def poisoned(self: Any, lr: Tensor, latents: Any = None, *args: Any, **kwargs: Any) -> Tensor:
        out = decode(self, lr, latents, *args, **kwargs)
        if latents is not None:  # a sample hotter than 0.6 (its latents' RMS) is not finite
            hot = latent_norm(latents) > 0.6
            out = torch.where(hot.view(-1, 1, 1, 1).to(out.device), torch.full_like(out, float("nan")), out)
        return out

    monkeypatch.setattr(cls, "decode", poisoned)
    save(tmp_path / "in" / "a.png", sample_image("astronaut", 12, 12))
    p = pipeline(tmp_path, {"inputs": ["in"], "mode": "sample", "temperatures": [0.3, 0.9], "output_dir": "out",
                            "nan_ladder": [0.5, 0.0]}, component=name, params=FLOWS[name])
    code, out, err = run([p], capsys)
    assert code == 0, err
    meta = json.loads((tmp_path / "out" / "samples.json").read_text())["outputs"]
    assert meta["a_t0.9_s0_seed0.png"]["used_temperature"] == 0.5
    assert meta["a_t0.9_s0_seed0.png"]["fallback"]["reason"].startswith("non-finite decode")
    assert meta["a_t0.3_s0_seed0.png"]["fallback"] is None
    hot = read(tmp_path / "out" / "a_t0.9_s0_seed0.png")
    assert hot.shape == (48, 48, 3) and "temperature 0.9 -> 0.5" in out


@pytest.mark.parametrize("mode", ["restore", "latent_transfer", "interpolate"])
def test_latent_tool_modes_run(
    flow: tuple[str, nn.Module], mode: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name, _ = flow
    save(tmp_path / "in" / "a.png", sample_image("coffee", 48, 48))
    save(tmp_path / "ref.png", sample_image("chelsea", 64, 64))
    spec: dict[str, Any] = {"inputs": ["in"], "mode": mode, "output_dir": "out", "input_is_hr": True}
    if mode == "latent_transfer":
        spec["reference"] = str(tmp_path / "ref.png")
    if mode == "interpolate":
        spec.update(frames=3, gif=False)
    code, _, err = run([pipeline(tmp_path, spec, component=name, params=FLOWS[name])], capsys)
    assert code == 0, err
    outs = sorted(o for o in (tmp_path / "out").rglob("a_*.png"))
    assert outs and all(read(o).shape == (48, 48, 3) for o in outs), outs


def test_benchmark_rows(flow: tuple[str, nn.Module], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    name, _ = flow
    table = "{" + ", ".join(f"{k} = {json.dumps(v)}" for k, v in FLOWS[name].items()) + "}"
    out = tmp_path / "bench.json"
    code, _, err = run(["--benchmark", "--model", f"{name}:{table}", "--sizes", "8", "--samples", "2",
                        "--repeats", "1", "--warmup", "0", "--device", "cpu", "--no-memory", "--json", out], capsys)
    assert code == 0, err
    rows = {r["path"]: r for r in json.loads(out.read_text())["rows"]}
    assert {"forward", "sample", "bicubic"} <= set(rows)
    assert rows["sample"]["samples"] == 2 and rows["sample"]["max_abs_diff"] <= 1e-4
    assert rows["forward"]["max_abs_diff"] <= 1e-4 and rows["forward"]["scale"] == 4


# SRFlow with the same params: test_conformance.py, which runs the kit on every shipped component (marked slow there:
# the kit exports SRFlow three times)
@pytest.mark.parametrize("name", ["hcflow"])
def test_conformance_kit(name: str, registry: restorekit.PluginRegistry, tmp_path: Path) -> None:
    from restorekit.testing import check_generator

    model = check_generator(registry, name, FLOWS[name], tmp_dir=tmp_path)
    assert isinstance(model, restorekit.FlowModel)


def test_saved_generator_reloads_by_file(flow: tuple[str, nn.Module], tmp_path: Path) -> None:
    name, net = flow
    restorekit.save_generator(tmp_path / "g.safetensors", net, name, dict(net.arch_params))
    again = restorekit.load(tmp_path / "g.safetensors")
    _, lr = _images(1, 8, 8, net.scale)
    with torch.no_grad():
        assert torch.allclose(again(lr), net(lr), atol=1e-6)
    assert type(again) is type(net)
    np.testing.assert_equal(sorted(again.state_dict()), sorted(net.state_dict()))


def test_sr_space_validators(flow: tuple[str, nn.Module], registry: restorekit.PluginRegistry) -> None:
    """lr_psnr, diversity and nll over the same samples: finite, and nll is the flow's own NLL per dimension of the
    dequantised image, plus 8 (docs/evaluation.md)."""
    name, net = flow
    hr, lr = _images(2, 8, 8, net.scale, seed=1)
    samples = [restorekit.Sample(f"img{i}.png", lr[i : i + 1], hr[i : i + 1]) for i in range(2)]
    ctx = restorekit.ValidationContext(device=torch.device("cpu"), scale=net.scale, temperature=0.8, samples=3, seed=4)
    metrics: dict[str, float] = {}
    for validator, params in (("lr_psnr", {}), ("diversity", {"distance": "l1"}), ("nll", {})):
        comp = registry.get("validator", validator).component
        metrics.update(comp.build(comp.params(**params))(net, samples, ctx).metrics)
    assert metrics and all(np.isfinite(v) for v in metrics.values()), metrics
    assert any(k.startswith("diversity") and v > 0 for k, v in metrics.items()), metrics  # T = 0.8: samples differ
    with torch.no_grad():
        u = [torch.rand(h.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64).float() for h in hr]
        want = sum(float(net.encode(h[None] + (n[None] - 0.5) / 256, l[None]).nll) / 3 + 8 for h, n, l in zip(hr, u, lr))
    assert metrics["nll"] == pytest.approx(want / 2, rel=1e-5)  # the 8-bit convention, dequantised (seed 0)
