"""The ``lpips`` validator: spatial LPIPS (Zhang et al. 2018) with the AlexNet trunk and the v0.1 linear layers.

For two images in [-1, 1]: both are shifted and scaled per channel (``(x - shift) / scale``, shift = (-0.030,
-0.088, -0.188), scale = (0.458, 0.448, 0.450)), run through AlexNet's five convolution stages (the ReLU after each
convolution is a tapped layer), every tapped feature is divided by its channel-wise L2 norm (plus 1e-10), the squared
difference is weighted per channel by the layer's linear 1x1 convolution (no bias) into one channel, each layer's map
is resized bilinearly (``align_corners=False``, by the scale factor image size / map size) to the image size, and the five maps are summed. An image's LPIPS is
the mean of its map; ``lpips`` reports the mean over an image's outputs, then over the images.

Weights are never downloaded: the trunk is the file torchvision's ``alexnet`` uses
(``<torch hub dir>/checkpoints/alexnet-owt-7be5be79.pth``, or ``params.trunk``), the linear layers are the
``alex.pth`` an installed ``lpips`` (or ``torchmetrics``) package ships (or ``params.linear``).
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from restorekit import Params, ScoringValidator, SRSamples, UserError, ValidationContext, read_state_dict
from torch import Tensor, nn

from .srspace import finite, ntire_crop

TRUNK_FILE = "alexnet-owt-7be5be79.pth"
"""The AlexNet ImageNet weights torchvision's ``alexnet(weights="IMAGENET1K_V1")`` downloads into the hub cache."""
TRUNK_KEYS = (0, 3, 6, 8, 10)
"""The indices of the five convolutions in torchvision's ``alexnet().features`` (its state-dict keys)."""
CHANNELS = (64, 192, 384, 256, 256)
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)


class AlexTrunk(nn.Module):
    """AlexNet's feature stack up to the fifth ReLU; returns the five ReLU outputs."""

    def __init__(self) -> None:
        super().__init__()
        c = CHANNELS
        self.convs = nn.ModuleList([
            nn.Conv2d(3, c[0], 11, stride=4, padding=2),
            nn.Conv2d(c[0], c[1], 5, padding=2),
            nn.Conv2d(c[1], c[2], 3, padding=1),
            nn.Conv2d(c[2], c[3], 3, padding=1),
            nn.Conv2d(c[3], c[4], 3, padding=1),
        ])

    def forward(self, x: Tensor) -> list[Tensor]:
        taps = []
        for i, conv in enumerate(self.convs):
            if i in (1, 2):  # max pooling before the second and third convolutions
                x = F.max_pool2d(x, kernel_size=3, stride=2)
            x = F.relu(conv(x))
            taps.append(x)
        return taps


def upsample(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear (``align_corners=False``) resize to ``size`` as the reference does it: by the scale factors
    ``size / x's size`` (which also sets the sampling positions); by ``size`` where float rounding of the factor would
    give another size."""
    factors = (size[0] / x.shape[-2], size[1] / x.shape[-1])
    out = F.interpolate(x, scale_factor=factors, mode="bilinear", align_corners=False)
    if tuple(out.shape[-2:]) != size:
        out = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return out


class LPIPSNet(nn.Module):
    """``distance_map(a, b)``: the spatial LPIPS map of two uint8 (C, H, W) images, (H, W)."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = AlexTrunk()
        self.lins = nn.ModuleList([nn.Conv2d(c, 1, 1, bias=False) for c in CHANNELS])
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        """(B, 1, H, W) maps of two (B, 3, H, W) batches in [-1, 1]."""
        fa = self.trunk((a - self.shift) / self.scale)
        fb = self.trunk((b - self.shift) / self.scale)
        total = None
        for lin, x, y in zip(self.lins, fa, fb):
            x = x / (x.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            y = y / (y.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            layer = upsample(lin((x - y) ** 2), (int(a.shape[-2]), int(a.shape[-1])))
            total = layer if total is None else total + layer
        assert total is not None
        return total

    @torch.no_grad()
    def distance_map(self, sr: Tensor, gt: Tensor) -> Tensor:
        dev = self.shift.device
        a = sr.to(dev, torch.float32)[None] / 255.0 * 2 - 1
        b = gt.to(dev, torch.float32)[None] / 255.0 * 2 - 1
        return self(a, b)[0, 0].cpu()


MIN_SIDE = 31
"""The smallest image side AlexNet's five stages accept (11x11 stride-4 convolution, two 3x3 stride-2 poolings)."""


def check_size(who: str, name: str, gt: Tensor) -> None:
    if min(gt.shape[-2:]) < MIN_SIDE:
        raise UserError.at(who, name, f"{gt.shape[-2]}x{gt.shape[-1]} is smaller than the {MIN_SIDE} pixels "
                           "LPIPS's AlexNet needs (use distance = 'l1' or larger images)")


def trunk_path() -> Path:
    """Where torchvision keeps the AlexNet weights: ``<torch.hub.get_dir()>/checkpoints/alexnet-owt-7be5be79.pth``
    (``$TORCH_HOME/hub/...``, by default ``~/.cache/torch/hub/...``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / TRUNK_FILE


def linear_path() -> Path | None:
    """The v0.1 AlexNet linear layers an installed ``lpips`` or ``torchmetrics`` package ships (found without
    importing the package), or None."""
    for package, rel in (("lpips", "weights/v0.1/alex.pth"), ("torchmetrics", "functional/image/lpips_models/alex.pth")):
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            continue
        for root in (spec.submodule_search_locations or []) if spec is not None else []:
            path = Path(root) / rel
            if path.is_file():
                return path
    return None


def _read(path: Path, what: str) -> dict[str, Tensor]:
    try:
        return dict(read_state_dict(path))
    except UserError as exc:
        raise UserError.at(what, None, exc) from None
    except Exception as exc:  # an unreadable or foreign file
        raise UserError(f"{what} {path} cannot be read ({type(exc).__name__}: {exc})") from None


@lru_cache(maxsize=4)
def _load(trunk: Path, linear: Path) -> LPIPSNet:
    """One network per pair of files, shared by every validator that uses it (lpips, diversity)."""
    net = LPIPSNet()
    sd = _read(trunk, "AlexNet weights")
    state: dict[str, Tensor] = {}
    for i, k in enumerate(TRUNK_KEYS):
        for part in ("weight", "bias"):
            key = f"features.{k}.{part}"
            if key not in sd:
                raise UserError(f"{trunk} is not torchvision's AlexNet (no {key!r})")
            state[f"trunk.convs.{i}.{part}"] = sd[key]
    lin = _read(linear, "LPIPS linear layers")
    for i, c in enumerate(CHANNELS):
        found = [v for key, v in lin.items() if key.startswith(f"lin{i}.") and key.endswith("weight")]
        if len(found) != 1:
            raise UserError(f"{linear} has no single 'lin{i}.*weight' (not the LPIPS v0.1 alex.pth)")
        state[f"lins.{i}.weight"] = found[0].reshape(1, c, 1, 1)
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise UserError(f"the LPIPS weights do not fit AlexNet: {str(exc).splitlines()[-1].strip()}") from None
    return net.eval()


def load_lpips(trunk: Path | None = None, linear: Path | None = None, *, who: str = "lpips") -> LPIPSNet:
    """The LPIPS network from the weight files; a missing file is one line naming it and where it goes."""
    t = Path(trunk) if trunk is not None else trunk_path()
    if not t.is_file():
        if trunk is None:
            raise UserError.at(who, None, f"the AlexNet weights were not found: put torchvision's {TRUNK_FILE} "
                               f"in {t.parent} (or set params.trunk)")
        raise UserError.at(who, "params.trunk", f"{t} does not exist")
    lin = Path(linear) if linear is not None else linear_path()
    if lin is None:
        raise UserError.at(who, None, "the LPIPS v0.1 linear layers (alex.pth) were not found: install them with "
                           "pip install 'restorekit[lpips]' (the lpips package ships them), or set params.linear")
    if not lin.is_file():
        raise UserError.at(who, "params.linear", f"{lin} does not exist")
    try:
        return _load(t.resolve(), lin.resolve())
    except UserError as exc:  # the messages name the file; the caller's name goes first
        raise UserError.at(who, None, exc) from None


class LPIPSParams(Params):
    """Params of the ``lpips`` validator."""

    trunk: Path | None = Field(None, description=f"AlexNet weights (torchvision format); unset: {TRUNK_FILE} in "
                               "the torch hub cache (<torch hub dir>/checkpoints).")
    linear: Path | None = Field(None, description="LPIPS v0.1 linear layers (alex.pth); unset: the installed lpips "
                                "or torchmetrics package's.")
    crop_multiple: int = Field(8, ge=1, description="The ground truth is cropped top-left to a multiple of this.")


class LPIPS(ScoringValidator):
    """The ``lpips`` validator: per image, the mean over its outputs of the mean of the spatial LPIPS map."""

    def __init__(self, params: LPIPSParams | None = None) -> None:
        self.params = params or LPIPSParams()
        self.net = load_lpips(self.params.trunk, self.params.linear)

    def score(self, item: SRSamples, ctx: ValidationContext) -> dict[str, float]:
        gt, srs = ntire_crop("lpips", item, self.params.crop_multiple)
        check_size("lpips", item.name, gt)
        if not all(finite(o) for o in item.srs):
            return {"lpips": float("nan")}
        self.net.to(ctx.device)
        values = [float(self.net.distance_map(sr, gt).double().mean()) for sr in srs]
        return {"lpips": sum(values) / len(values)}


def build_lpips(params: LPIPSParams) -> Any:
    return LPIPS(params)
