"""Fakes and helpers shared by the tests (not a test module): tiny generators, a plugin registering them,
registries, sample images and pipeline files, and running ``restore-run`` in-process.

``fakeflow`` is an exactly invertible 2-level conditional flow (pixel_unshuffle + an affine map conditioned on the
bicubic-upsampled LR) that can be told to overflow above a latent magnitude; ``bicubic`` is a parameter-free SR
model; :func:`srflow_tiny` is a tiny real SRFlow with jittered weights.
"""

from __future__ import annotations

import http.server
import threading
from pathlib import Path
from typing import Any, Sequence

import imageio.v3 as iio
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

import restorekit.cli as cli
from restorekit import EncodeResult, GeneratorComponent, ModelEntry, Params, hookimpl
from restorekit.latents import sample_latents
from restorekit.registry import PluginRegistry


# ----------------------------------------------------------------------------------------------------
# fake generators


class FakeFlow(nn.Module):
    """An exactly invertible conditional "flow" with the FlowModel interface, scale 2, size_multiple 2.

    encode: x = (hr - up) / 0.1 * exp(a) + b with (a, b) from two 3x3 convolutions of up = bicubic(lr); then
    pixel_unshuffle(x) -> 12 channels at H/2: the first 6 are the level-1 latent, the other 6 are unshuffled again
    into the top latent (24 channels at H/4). decode inverts it. Receptive field: ~3 LR pixels.
    ``nan_above``: a decode whose latents have an RMS above it returns NaN for that item (overflow stand-in).
    """

    def __init__(self, *, scale: int = 2, hidden: int = 4, nan_above: float | None = None) -> None:
        super().__init__()
        self.scale, self.size_multiple, self.nan_above = scale, 2, nan_above
        self.arch_params = {"scale": scale, "hidden": hidden, "nan_above": nan_above}
        self.net = nn.Sequential(nn.Conv2d(3, hidden, 3, padding=1), nn.Tanh(), nn.Conv2d(hidden, 6, 3, padding=1))
        self.cond_calls = 0
        self.decode_calls = 0

    def conditional_features(self, lr: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        self.cond_calls += 1
        up = F.interpolate(lr, scale_factor=self.scale, mode="bicubic", align_corners=False)
        ab = self.net(up)
        return up, 0.5 * torch.tanh(ab[:, :3]), ab[:, 3:]

    def latent_shapes(self, lr_shape: Sequence[int]) -> list[tuple[int, ...]]:
        b, _, h, w = lr_shape
        hh, ww = h * self.scale, w * self.scale
        return [(b, 6, hh // 2, ww // 2), (b, 24, hh // 4, ww // 4)]

    def _check(self, lr: Tensor) -> None:
        if lr.shape[-2] % 2 or lr.shape[-1] % 2:
            raise ValueError(f"FakeFlow: LR size {tuple(lr.shape[-2:])} is not a multiple of 2")

    def encode(self, hr: Tensor, lr: Tensor, add_noise: bool = False) -> EncodeResult:
        self._check(lr)
        up, a, b = self.conditional_features(lr)
        x = (hr - up) / 0.1 * torch.exp(a) + b
        y = F.pixel_unshuffle(x, 2)
        latents = [y[:, :6], F.pixel_unshuffle(y[:, 6:], 2)]
        logdet = a.sum((1, 2, 3))
        nll = sum(0.5 * (z**2).sum((1, 2, 3)) for z in latents) - logdet
        return EncodeResult(latents, nll / (hr[0].numel() * np.log(2)), logdet)

    def decode(self, lr: Tensor, latents: Sequence[Tensor] | None = None, temperature: Any = 0.0,
               generator: torch.Generator | None = None, cond: Any = None) -> Tensor:
        self._check(lr)
        self.decode_calls += 1
        if latents is None:
            latents = sample_latents(self.latent_shapes(lr.shape), temperature, generator, device=lr.device)
        up, a, b = cond if cond is not None else self.conditional_features(lr)
        eps, top = latents
        x = F.pixel_shuffle(torch.cat([eps, F.pixel_shuffle(top, 2)], 1), 2)
        hr = up + 0.1 * (x - b) * torch.exp(-a)
        if self.nan_above is not None:
            flat = torch.cat([z.flatten(1) for z in latents], 1)
            hot = flat.pow(2).mean(1).sqrt() > self.nan_above
            hr = torch.where(hot.view(-1, 1, 1, 1), torch.full_like(hr, float("nan")), hr)
        return hr

    def forward(self, lr: Tensor, temperature: float = 0.0, generator: torch.Generator | None = None) -> Tensor:
        h, w = lr.shape[-2:]
        x = F.pad(lr, (0, w % 2, 0, h % 2), mode="replicate")
        return self.decode(x, temperature=temperature, generator=generator)[..., : h * self.scale, : w * self.scale]


class FakeFlowParams(Params):
    scale: int = Field(2, description="Upscaling factor.")
    hidden: int = Field(4, description="Hidden channels.")
    nan_above: float | None = Field(None, description="Latent RMS above which a decode returns NaN.")


class Bicubic(nn.Module):
    """A parameter-free SR model (bicubic x scale)."""

    def __init__(self, *, scale: int = 2) -> None:
        super().__init__()
        self.scale, self.size_multiple, self.arch_params = scale, 1, {"scale": scale}

    def forward(self, lr: Tensor) -> Tensor:
        return F.interpolate(lr, scale_factor=self.scale, mode="bicubic", align_corners=False).clamp(0, 1)


class BicubicParams(Params):
    scale: int = Field(2, description="Upscaling factor.")


class FakePlugin:
    """Registers ``fakeflow`` and ``bicubic``; keeps every built module (to look at call counters)."""

    def __init__(self) -> None:
        self.built: list[nn.Module] = []

    def _keep(self, module: nn.Module) -> nn.Module:
        self.built.append(module)
        return module

    @hookimpl
    def restorekit_generators(self) -> list[GeneratorComponent[Any]]:
        return [
            GeneratorComponent(name="fakeflow", params=FakeFlowParams,
                               build=lambda p: self._keep(FakeFlow(scale=p.scale, hidden=p.hidden, nan_above=p.nan_above))),
            GeneratorComponent(name="bicubic", params=BicubicParams, build=lambda p: self._keep(Bicubic(scale=p.scale))),
        ]


def first_party_registry() -> PluginRegistry:
    """A registry with the first-party plugins registered directly (no entry points; they ship with restorekit)."""
    import restorekit.builtins
    import restorekit_rrdb.plugin
    import restorekit_srflow.plugin
    import restorekit_validators.plugin

    reg = PluginRegistry()
    reg.register(restorekit.builtins, "builtins")
    reg.register(restorekit_rrdb.plugin, "rrdb")
    reg.register(restorekit_srflow.plugin, "srflow")
    reg.register(restorekit_validators.plugin, "validators")
    return reg


def make_registry(fakes: FakePlugin | None = None) -> PluginRegistry:
    """The first-party plugins plus the fakes (``fakeflow``, ``bicubic``)."""
    reg = first_party_registry()
    reg.register(fakes or FakePlugin(), "fakes")
    return reg


# ----------------------------------------------------------------------------------------------------
# images and pipelines


def sample_image(name: str, h: int, w: int) -> np.ndarray:
    """A (h, w, 3) float image in [0, 1]: a scikit-image sample resized (antialiased) to h x w."""
    import skimage.data
    import skimage.transform

    img = getattr(skimage.data, name)()
    img = img if img.ndim == 3 else np.stack([img] * 3, -1)
    side = min(img.shape[:2])
    img = img[:side, :side, :3]
    return np.clip(skimage.transform.resize(img, (h, w), anti_aliasing=True), 0, 1)


def save(path: Path, arr: np.ndarray, *, bits: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    scale = 65535.0 if bits == 16 else 255.0
    data = np.round(arr * scale).astype(np.uint16 if bits == 16 else np.uint8)
    iio.imwrite(path, data)
    return path


def pipeline(tmp_path: Path, infer: dict[str, Any], *, component: str = "fakeflow",
             params: dict[str, Any] | None = None, checkpoint: Path | None = None, seed: int = 0,
             name: str = "pipeline.toml") -> Path:
    """An inference pipeline file, written with restorekit's own TOML writer (``restorekit.quick.to_toml``)."""
    from restorekit.quick import to_toml

    generator: dict[str, Any] = {"component": component}
    if params:
        generator["params"] = params
    if checkpoint is not None:
        generator["checkpoint"] = checkpoint
    data = {"run": {"mode": "infer", "device": "cpu", "seed": seed, "output_dir": "runs"},
            "networks": {"generator": generator}, "infer": infer}
    p = tmp_path / name
    p.write_text(to_toml(data))
    return p


CLI_REGISTRY: PluginRegistry | None = None
"""The registry :func:`run` hands ``restore-run`` (the ``fakes`` fixture sets it; None: the entry points)."""


def run(args: list[str], capsys: pytest.CaptureFixture[str], *,
        registry: PluginRegistry | None = None) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in args], registry=registry or CLI_REGISTRY)
    out, err = capsys.readouterr()
    return code, out, err


def read(path: Path) -> np.ndarray:
    return iio.imread(path)


def png_header(path: Path) -> tuple[int, int]:
    """(bit depth, colour type) from a PNG's IHDR."""
    data = path.read_bytes()[:33]
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return data[24], data[25]


# ----------------------------------------------------------------------------------------------------
# the real SRFlow, tiny

TINY_SRFLOW = {"nf": 8, "nb": 1, "gc": 4, "K": 1, "L": 3, "hidden_channels": 8, "stack_blocks": [0]}


def srflow_tiny(**overrides: Any) -> nn.Module:
    """A tiny real SRFlow (nf 8, nb 1, K 1, L 3, hidden 8, stack_blocks [0], x4; ``overrides`` change params, e.g.
    ``L=2``, which halves what tracing it for export costs), every parameter jittered: a fresh flow's couplings start
    as identities (zero-initialised last convolutions), which would hide the conditioning."""
    comp = make_registry().get("generator", "srflow").component
    params = comp.params.model_validate({**TINY_SRFLOW, **overrides})
    torch.manual_seed(0)
    model = comp.build(params).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


# ----------------------------------------------------------------------------------------------------
# generated LPIPS weights (formula checks only: never report a number computed from them)

LPIPS_CONVS = {0: (3, 64, 11), 3: (64, 192, 5), 6: (192, 384, 3), 8: (384, 256, 3), 10: (256, 256, 3)}


def write_lpips_weights(trunk: Path, linear: Path, seed: int = 3) -> dict[str, dict[str, Tensor]]:
    """Generated AlexNet weights under torchvision's keys at ``trunk`` and v0.1-style linear layers
    (``lin<i>.model.1.weight``) at ``linear``; returns both state dicts."""
    g = torch.Generator().manual_seed(seed)
    t: dict[str, Tensor] = {}
    for k, (cin, cout, ks) in LPIPS_CONVS.items():
        t[f"features.{k}.weight"] = torch.randn(cout, cin, ks, ks, generator=g) / float(np.sqrt(cin * ks * ks))
        t[f"features.{k}.bias"] = torch.randn(cout, generator=g) * 0.01
    t["classifier.1.weight"] = torch.zeros(2, 2)
    lin = {f"lin{i}.model.1.weight": torch.rand(1, c[1], 1, 1, generator=g) for i, c in enumerate(LPIPS_CONVS.values())}
    for path, sd in ((trunk, t), (linear, lin)):
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(sd, path)
    return {"trunk": t, "lin": lin}


# ----------------------------------------------------------------------------------------------------
# packaging

_NOT_BUILT = ("build", "*.egg-info", ".git", ".venv", "__pycache__", ".pytest_cache", ".hypothesis", "runs", "tests",
              "benchmarks")


def build_copy(src: Path, dest: Path) -> Path:
    """A copy of the project at ``src`` to build from (pip wheel/install): setuptools writes build/ and *.egg-info
    beside the sources, so building the copy under tmp_path leaves nothing in the repository."""
    import shutil

    return Path(shutil.copytree(src, dest, ignore=shutil.ignore_patterns(*_NOT_BUILT)))


def tiny_srflow(hidden: int = 8) -> nn.Module:
    """A small real SRFlow (nf 8, nb 2, K 2, L 3, stack_blocks [0, 1], x4) whose flow is jittered (a fresh flow's
    couplings are identities): what the benchmark and fast-path tests run."""
    from restorekit_srflow import SRFlowNet

    torch.manual_seed(0)
    net = SRFlowNet(scale=4, nf=8, nb=2, gc=4, K=2, L=3, stack_blocks=[0, 1], hidden_channels=hidden).eval()
    for p in net.flowUpsamplerNet.parameters():
        p.data.add_(0.02 * torch.randn_like(p))
    return net


# ----------------------------------------------------------------------------------------------------
# a local HTTP server: Range support, a mode that drops the connection mid-body, request log


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        srv: Any = self.server
        rng = self.headers.get("Range")
        srv.requests.append((self.path, rng))
        if self.path not in srv.files:
            body = b"not here"
            self.send_response(404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        data, ctype = srv.files[self.path]
        start = 0
        if rng and srv.ranges and rng.startswith("bytes=") and rng.endswith("-"):
            start = int(rng[len("bytes="):-1])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.drops.get(self.path, 0) > 0:  # send part of the body, then hang up
            srv.drops[self.path] -= 1
            self.wfile.write(body[: srv.drop_at])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


class Server:
    def __init__(self) -> None:
        self.httpd: Any = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.files, self.httpd.requests, self.httpd.drops = {}, [], {}
        self.httpd.ranges, self.httpd.drop_at = True, 100_000
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()
        self.running = True

    def add(self, path: str, data: bytes, ctype: str = "application/octet-stream") -> str:
        self.httpd.files[path] = (data, ctype)
        return self.url(path)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    @property
    def requests(self) -> list[tuple[str, str | None]]:
        return self.httpd.requests

    def stop(self) -> None:
        if self.running:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.running = False


def catalogue_file(tmp_path: Path, *entries: ModelEntry) -> Path:
    """Write entries as a catalogue TOML file (the override mechanism plugins and $RESTOREKIT_CATALOGUE use)."""
    from restorekit.quick import to_toml

    data = {"models": {e.name: e.model_dump(exclude={"name", "source"}, exclude_none=True, exclude_defaults=True)
                       for e in entries}}
    path = tmp_path / "extra_catalogue.toml"
    path.write_text(to_toml(data))
    return path
