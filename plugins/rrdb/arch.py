"""RRDBNet, the ESRGAN generator, as a plain ``nn.Module`` (no restorekit imports).

Module names follow the official SRFlow repository (``conv_first``, ``RRDB_trunk.N.RDBk.convj``,
``trunk_conv``, ``upconvM``, ``HRconv``, ``conv_last``), so official state dicts load with no renaming;
``restorekit_rrdb.formats`` converts the BasicSR and old-ESRGAN layouts to these names.

Two wirings of the long skip share the same parameters (see ``docs/srflow-architecture.md`` §2.3):

* ``variant="esrgan"`` (xinntao-ESRGAN, BasicSR, Real-ESRGAN): ``F = conv_first(x) + trunk_conv(T)``;
* ``variant="srflow"`` (the SRFlow repository and every SRFlow checkpoint): ``F = T + trunk_conv(T)``,

with ``T`` the output of the last trunk block.

``bicubic_skip=True`` (restorekit's bundled models; no published checkpoint) adds the bicubic upsampling of the
input to the output, so the network learns only the residual detail and starts as bicubic (``conv_last`` at zero).

``pixel_unshuffle=True`` is Real-ESRGAN's layout for its x2 and x1 models: the input is pixel-unshuffled by
``4 // scale`` (so ``conv_first`` takes ``in_nc * (4 // scale)**2`` channels) and the network then upsamples
by 4, as for ``scale=4``. Such a network needs LR sizes that are multiples of ``size_multiple = 4 // scale``.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Variant = Literal["esrgan", "srflow"]


def _lrelu(x: Tensor) -> Tensor:
    return F.leaky_relu(x, 0.2)


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3x3 convolutions; ``x + 0.2 * conv5([x, x1..x4])``."""

    def __init__(self, *, nf: int = 64, gc: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(nf, gc, 3, 1, 1)
        self.conv2 = nn.Conv2d(nf + gc, gc, 3, 1, 1)
        self.conv3 = nn.Conv2d(nf + 2 * gc, gc, 3, 1, 1)
        self.conv4 = nn.Conv2d(nf + 3 * gc, gc, 3, 1, 1)
        self.conv5 = nn.Conv2d(nf + 4 * gc, nf, 3, 1, 1)
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4, self.conv5):
            nn.init.kaiming_normal_(conv.weight, a=0, mode="fan_in")
            conv.weight.data.mul_(0.1)
            nn.init.zeros_(conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        x1 = _lrelu(self.conv1(x))
        x2 = _lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = _lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = _lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x + 0.2 * x5


class RRDB(nn.Module):
    """Residual-in-residual dense block: three RDBs and a scaled residual."""

    def __init__(self, *, nf: int = 64, gc: int = 32) -> None:
        super().__init__()
        self.RDB1 = ResidualDenseBlock(nf=nf, gc=gc)
        self.RDB2 = ResidualDenseBlock(nf=nf, gc=gc)
        self.RDB3 = ResidualDenseBlock(nf=nf, gc=gc)

    def forward(self, x: Tensor) -> Tensor:
        return x + 0.2 * self.RDB3(self.RDB2(self.RDB1(x)))


class RRDBFeatures(NamedTuple):
    """What ``RRDBNet.forward(x, return_features=True)`` returns.

    ``out``: the SR image (None when not asked for). ``last_lr_fea``: F (LR resolution, nf channels).
    ``fea_up``: ``{2: fea_up2, 4: fea_up4, ...}`` the activated upsampling-stage outputs.
    ``blocks``: ``{index: B_index}`` the requested trunk block outputs (0-based).
    """

    out: Tensor | None
    last_lr_fea: Tensor
    fea_up: dict[int, Tensor]
    blocks: dict[int, Tensor]


class RRDBNet(nn.Module):
    """ESRGAN's RRDB network for scale 1, 2, 4, 8 or 16 (one nearest-x2 + conv stage per factor 2).

    ``model(lr)`` maps a (B, in_nc, h, w) batch to (B, out_nc, scale*h, scale*w). Attributes for restorekit:
    ``scale``, ``size_multiple`` (h and w must be multiples of it: 1, or ``4 // scale`` with
    ``pixel_unshuffle``) and ``arch_params`` (the keyword arguments that rebuild the module).
    """

    size_multiple: int = 1

    def __init__(
        self,
        *,
        in_nc: int = 3,
        out_nc: int = 3,
        nf: int = 64,
        nb: int = 23,
        gc: int = 32,
        scale: int = 4,
        variant: Variant = "esrgan",
        pixel_unshuffle: bool = False,
        bicubic_skip: bool = False,
    ) -> None:
        super().__init__()
        if scale not in (1, 2, 4, 8, 16):
            raise ValueError(f"RRDBNet: scale must be 1, 2, 4, 8 or 16, got {scale}")
        if variant not in ("esrgan", "srflow"):
            raise ValueError(f"RRDBNet: variant must be 'esrgan' or 'srflow', got {variant!r}")
        if pixel_unshuffle and scale not in (1, 2):
            raise ValueError(f"RRDBNet: pixel_unshuffle needs scale 1 or 2, got {scale}")
        if bicubic_skip and in_nc != out_nc:
            raise ValueError(f"RRDBNet: bicubic_skip needs in_nc == out_nc, got {in_nc} and {out_nc}")
        self.in_nc, self.out_nc, self.nf, self.nb, self.gc = in_nc, out_nc, nf, nb, gc
        self.scale = scale
        self.variant: Variant = variant
        self.pixel_unshuffle = pixel_unshuffle
        self.unshuffle_factor = 4 // scale if pixel_unshuffle else 1
        self.size_multiple = self.unshuffle_factor
        self.arch_params: dict[str, object] = {
            "in_nc": in_nc, "out_nc": out_nc, "nf": nf, "nb": nb, "gc": gc, "scale": scale,
            "variant": variant, "pixel_unshuffle": pixel_unshuffle,
        }
        self.bicubic_skip = bicubic_skip
        if bicubic_skip:  # recorded only when on: the published layouts' params stay as they were
            self.arch_params["bicubic_skip"] = True
        self.gradient_checkpointing = False
        self.conv_first = nn.Conv2d(in_nc * self.unshuffle_factor**2, nf, 3, 1, 1)
        self.RRDB_trunk = nn.Sequential(*[RRDB(nf=nf, gc=gc) for _ in range(nb)])
        self.trunk_conv = nn.Conv2d(nf, nf, 3, 1, 1)
        self.n_up = 2 if pixel_unshuffle else int(math.log2(scale))
        for m in range(1, self.n_up + 1):
            setattr(self, f"upconv{m}", nn.Conv2d(nf, nf, 3, 1, 1))
        self.HRconv = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_last = nn.Conv2d(nf, out_nc, 3, 1, 1)
        if bicubic_skip:
            # the network starts as exactly bicubic upsampling and learns the residual detail
            nn.init.zeros_(self.conv_last.weight)
            nn.init.zeros_(self.conv_last.bias)

    def extra_repr(self) -> str:
        return (
            f"in_nc={self.in_nc}, out_nc={self.out_nc}, nf={self.nf}, nb={self.nb}, gc={self.gc}, "
            f"scale={self.scale}, variant={self.variant!r}"
            + (", pixel_unshuffle=True" if self.pixel_unshuffle else "")
            + (", bicubic_skip=True" if self.bicubic_skip else "")
        )

    def _trunk(self, fea: Tensor, keep: Sequence[int]) -> tuple[Tensor, dict[int, Tensor]]:
        blocks: dict[int, Tensor] = {}
        wanted = set(keep)
        for i, block in enumerate(self.RRDB_trunk):
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                from torch.utils.checkpoint import checkpoint

                fea = checkpoint(block, fea, use_reentrant=False)
            else:
                fea = block(fea)
            if i in wanted:
                blocks[i] = fea
        return fea, blocks

    def forward(
        self, x: Tensor, *, return_features: bool = False, block_ids: Sequence[int] = (), up_to: int | None = None,
        image: bool = True,
    ) -> Tensor | RRDBFeatures:
        """The SR image, or with ``return_features`` the :class:`RRDBFeatures` of ``x``. ``up_to`` (features only):
        the largest upsampling factor whose features are needed — later stages are not run; ``image=False``: no SR
        image (``out`` is None). Both skip only work whose result is not returned."""
        for b in block_ids:
            if not 0 <= b < self.nb:
                raise ValueError(f"RRDBNet: block index {b} out of range 0..{self.nb - 1}")
        lr = x
        if self.unshuffle_factor > 1:
            x = F.pixel_unshuffle(x, self.unshuffle_factor)
        f0 = self.conv_first(x)
        trunk, blocks = self._trunk(f0, block_ids)
        if self.variant == "srflow":
            fea = trunk + self.trunk_conv(trunk)
        else:
            fea = f0 + self.trunk_conv(trunk)
        last_lr_fea = fea
        fea_up: dict[int, Tensor] = {}
        image = image or not return_features
        stages = self.n_up if image or up_to is None else min(self.n_up, max(0, int(up_to).bit_length() - 1))
        for m in range(1, stages + 1):
            conv = getattr(self, f"upconv{m}")
            fea = _lrelu(conv(F.interpolate(fea, scale_factor=2, mode="nearest")))
            fea_up[2**m] = fea
        out = self.conv_last(_lrelu(self.HRconv(fea))) if image else None
        if out is not None and self.bicubic_skip:
            out = out + bicubic_upsample(lr, self.scale)
        if return_features:
            return RRDBFeatures(out, last_lr_fea, fea_up, blocks)
        assert out is not None
        return out


def bicubic_upsample(x: Tensor, scale: int) -> Tensor:
    """``x`` upsampled by ``scale`` with bicubic interpolation (a = -0.75, half-pixel centres, not clamped): the
    global skip of ``bicubic_skip`` networks, the same interpolation as the bicubic baseline of inference reports."""
    if scale == 1:
        return x
    return F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (every tensor of ``module.parameters()``)."""
    return sum(p.numel() for p in module.parameters())
