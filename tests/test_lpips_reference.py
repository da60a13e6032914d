"""LPIPS and diversity against the reference implementation: the ``lpips`` package, which NTIRE 2021's scoring
script (measure.py) runs as ``LPIPS(spatial=True)``.

Runs only where ``lpips`` and ``torchvision`` are installed (they are not restorekit dependencies):

    pip install --no-deps torchvision==0.28.0 lpips
    python -m pytest tests/test_lpips_reference.py

The reference network is built with a random AlexNet trunk (``pnet_rand=True``: nothing is downloaded) and the
v0.1 linear layers the lpips package ships; its trunk is saved under torchvision's keys and both files are handed
to restorekit's validators. Only differences between the two are asserted; no LPIPS value of random weights is
reported anywhere. Measured on CPU (torch 2.13.0, torchvision 0.28.0, lpips 0.1.4, three trunk seeds): the spatial
maps are equal bit for bit, image means differ by at most 1.5e-7 relative and diversity scores by at most 1.6e-6
(restorekit averages in float64, the reference in float32); the bounds asserted are 1e-6 and 1e-5, under the 1e-4
the evaluation promises (docs/evaluation.md).
"""

from __future__ import annotations

import importlib
import sys
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fakes import make_registry
from restorekit import SRSamples, ValidationContext, imresize_uint8
from torch import Tensor, nn

_DEFINED: list[Any] = []
"""The torch library that declares torchvision's two operators where its compiled ops cannot load (kept alive)."""


def import_torchvision() -> ModuleType:
    """torchvision, or a skip. PyPI's Linux torchvision wheels are CUDA builds: on the CPU torch pinned here their
    compiled operators cannot load, and ``import torchvision`` then stops at registering fake kernels for two of
    them (``operator torchvision::nms does not exist``). Declaring those two operators (schemas only, never called)
    lets the pure-Python models the lpips package uses (``torchvision.models.alexnet``) import."""
    try:
        return importlib.import_module("torchvision")
    except ImportError as exc:
        pytest.skip(f"the LPIPS reference test needs torchvision ({exc}): pip install --no-deps torchvision==0.28.0 "
                    "lpips")
    except RuntimeError as exc:
        if "torchvision::" not in str(exc):
            raise
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    lib = torch.library.Library("torchvision", "DEF")
    for op in ("nms", "qnms"):
        lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _DEFINED.append(lib)
    return importlib.import_module("torchvision")


class Reference:
    """The lpips package's spatial LPIPS with a random trunk, and the two weight files restorekit reads."""

    def __init__(self, net: nn.Module, trunk: Path, linear: Path) -> None:
        self.net, self.trunk, self.linear = net, trunk, linear

    @torch.no_grad()
    def map(self, sr: np.ndarray, gt: np.ndarray) -> Tensor:
        """The reference's (H, W) map of two (H, W, 3) uint8 images, fed as measure.py feeds them."""
        def t(a: np.ndarray) -> Tensor:  # measure.py's t(): HWC uint8 to (1, 3, H, W) float32 / 255
            return torch.from_numpy(a.transpose(2, 0, 1)[None].astype(np.float32)) / 255

        return self.net(2 * t(sr) - 1, 2 * t(gt) - 1)[0, 0]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    import_torchvision()
    try:
        lpips = importlib.import_module("lpips")
    except ImportError as exc:
        pytest.skip(f"the LPIPS reference test needs the lpips package ({exc}): pip install --no-deps lpips")
    with torch.random.fork_rng(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torchvision: lpips passes the deprecated 'pretrained'
        torch.manual_seed(0)
        net = lpips.LPIPS(net="alex", version="0.1", spatial=True, pnet_rand=True, verbose=False)
    trunk: dict[str, Tensor] = {}
    for block in net.net.children():  # slice1..slice5 keep torchvision's indices in alexnet().features
        for index, layer in block.named_children():
            if isinstance(layer, nn.Conv2d):
                trunk[f"features.{index}.weight"] = layer.weight.detach().clone()
                trunk[f"features.{index}.bias"] = layer.bias.detach().clone()
    assert sorted(trunk) == sorted(f"features.{k}.{p}" for k in (0, 3, 6, 8, 10) for p in ("weight", "bias"))
    path = tmp_path_factory.mktemp("hub") / "alexnet-owt-7be5be79.pth"
    torch.save(trunk, path)
    linear = Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth"
    return Reference(net, path, linear)


def validator(name: str, **params: Any) -> Any:
    comp = make_registry().get("validator", name).component
    return comp.build(comp.params.model_validate(params))


def chw(a: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)


def as_float(a: np.ndarray) -> Tensor:
    return chw(a)[None].float() / 255.0


def natural(name: str, y: int, x: int, h: int, w: int) -> np.ndarray:
    import skimage.data

    return np.ascontiguousarray(getattr(skimage.data, name)()[y:y + h, x:x + w, :3])


def noisy(a: np.ndarray, spread: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(a.astype(int) + rng.integers(-spread, spread + 1, a.shape), 0, 255).astype(np.uint8)


def bicubic_x4(gt: np.ndarray) -> np.ndarray:
    """A 4x SR stand-in: the MATLAB-bicubic LR image upscaled 4x by torch's bicubic, as uint8."""
    lr = imresize_uint8(chw(gt), 0.25).float()[None] / 255
    up = F.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False)[0].clamp(0, 1)
    return (up * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def random_u8(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3)).astype(np.uint8)


PAIRS: dict[str, Callable[[], tuple[np.ndarray, np.ndarray]]] = {
    "astronaut 131x203 + noise": lambda: (natural("astronaut", 37, 11, 131, 203),
                                          noisy(natural("astronaut", 37, 11, 131, 203), 30, 1)),
    "astronaut 120x200 + noise": lambda: (natural("astronaut", 200, 150, 120, 200),
                                          noisy(natural("astronaut", 200, 150, 120, 200), 12, 7)),
    "chelsea 4x bicubic 300x448": lambda: (natural("chelsea", 0, 0, 300, 448),
                                           bicubic_x4(natural("chelsea", 0, 0, 300, 448))),
    "random 123x97 + noise": lambda: (random_u8(123, 97, 2), noisy(random_u8(123, 97, 2), 40, 3)),
    "random 77x141, unrelated": lambda: (random_u8(77, 141, 4), random_u8(77, 141, 5)),
}


def assert_same_map(reference: Reference, gt: np.ndarray, sr: np.ndarray) -> None:
    from restorekit_validators.lpips import load_lpips

    want = reference.map(sr, gt).double()
    got = load_lpips(reference.trunk, reference.linear).distance_map(chw(sr), chw(gt)).double()
    assert got.shape == want.shape == gt.shape[:2]
    assert float(want.abs().max()) > 0
    assert float((got - want).abs().max()) <= 1e-6 * float(want.abs().max())
    assert float(got.mean()) == pytest.approx(float(want.mean()), rel=1e-6)


@pytest.mark.parametrize("case", list(PAIRS))
def test_spatial_map_equals_the_lpips_package(reference: Reference, case: str) -> None:
    assert_same_map(reference, *PAIRS[case]())


@pytest.mark.parametrize("case", ["astronaut 120x200 + noise", "random 77x141, unrelated"])
def test_spatial_map_equals_the_2020_reference_upsampling(reference: Reference, case: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The PerceptualSimilarity repository's upsample of NTIRE 2021's time (measure.py runs a checkout of it):
    bilinear by the scale factors out/in per axis (lpips 0.1.4 resizes to the size). Where float rounding of a
    factor loses a row (131x203, 300x448, 123x97 above) that code cannot add the layers up and stops; restorekit
    resizes those to the size, as lpips 0.1.4. These sizes it handles."""
    calls: list[int] = []

    def upsample(x: Tensor, out_HW: tuple[int, int] = (64, 64)) -> Tensor:  # noqa: N803 (passed by this name)
        calls.append(1)
        factors = (out_HW[0] / x.shape[2], out_HW[1] / x.shape[3])
        return F.interpolate(x, scale_factor=factors, mode="bilinear", align_corners=False)

    monkeypatch.setattr(sys.modules["lpips.lpips"], "upsample", upsample)
    assert_same_map(reference, *PAIRS[case]())
    assert len(calls) == 5


def test_lpips_and_diversity_equal_the_scoring_script(reference: Reference) -> None:
    """Per image, as measure.py's lpips_analysis: the GT cropped top-left to a multiple of 8, each sample to the
    GT's size; LPIPS_mean = the mean of the samples' map means; score = 100 (G - L) / G with G the smallest map mean
    and L the mean of the per-pixel minimum. The linear layers are found in the installed lpips package."""
    from restorekit_validators.lpips import linear_path

    assert linear_path() is not None and linear_path().resolve() == reference.linear.resolve()
    lp = validator("lpips", trunk=str(reference.trunk))
    div = validator("diversity", trunk=str(reference.trunk))
    ctx = ValidationContext(device=torch.device("cpu"), scale=4)
    images = {"chelsea 300x451": (natural("chelsea", 0, 0, 300, 451), 4, 20),
              "random 123x97": (random_u8(123, 97, 6), 3, 60)}
    for name, (gt_full, n, spread) in images.items():
        srs = [noisy(gt_full, spread, seed) for seed in range(n)]
        h, w = gt_full.shape[0] // 8 * 8, gt_full.shape[1] // 8 * 8
        gt = gt_full[:h, :w]
        maps = [reference.map(s[:h, :w], gt) for s in srs]
        means = [m.mean().item() for m in maps]
        g = float(np.min(means))
        loc = torch.stack(maps, dim=2).min(dim=2).values.mean().item()
        item = SRSamples(name, as_float(gt_full[::4, ::4]), as_float(gt_full), [as_float(s) for s in srs])
        assert lp.score(item, ctx)["lpips"] == pytest.approx(float(np.mean(means)), rel=1e-6), name
        assert div.score(item, ctx)["diversity_lpips"] == pytest.approx(100 * (g - loc) / g, rel=1e-5), name
