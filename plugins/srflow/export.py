"""SRFlow's export graphs (``SRFlowNet.export_graph``): the reverse pass as a traceable module.

* ``sample``: ``(lr, z0, …, zN) → sr``, the latents in the order of :meth:`SRFlowArch.latent_shapes` (split latents
  from the shallowest level, top z last), used exactly as given: ``decode(lr, latents)``;
* ``mean``: ``lr → sr`` at temperature 0 (zero latents made inside the graph from the LR size);
* ``encode``: ``(hr, lr) → (z0, …, zN)``, the latents of ``encode(hr, lr)`` (no dequantisation noise).

The graphs run the plain path (no factored conditional maps, no folded ActNorms, no cached terms) on a copy of the
network. The decoding graphs compute every invertible 1×1 convolution's inverse once here, in float64 as
``InvConv1x1`` computes it, and keep it as a buffer: the graph holds it as a constant (ONNX has no matrix inverse);
the encode graph convolves with the weights themselves and holds no inverse. No log-determinant is computed.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from restorekit import ExportGraph, UserError, sample_latents
from torch import Tensor, nn

from .arch import SRFlowArch
from .layers import Conv2dActNorm, FlowStep, Split2d, ZeroConv2d

TEMPERATURE = ("latents ~ N(0, T^2): standard-normal noise multiplied by the temperature T; T = 0 is the mean image "
               "(the 'mean' graph). restorekit.sample_latents draws them as restore-run does: top z first, then the "
               "split latents from the deepest level; other generators give other samples for the same seed.")


def _plain_copy(net: SRFlowArch) -> SRFlowArch:
    """A copy of ``net`` in eval mode with every fast-path switch off (the path that traces)."""
    plain = copy.deepcopy(net).eval()
    plain.factor_cond = False
    plain.gradient_checkpointing = False
    for m in plain.modules():
        if isinstance(m, Conv2dActNorm):
            m.fold_actnorm = False
        elif isinstance(m, ZeroConv2d):
            m.fold_scale = False
    return plain


class _Flow(nn.Module):
    """The network's flow, the shared part of the three graphs; ``decoding``: with its 1×1 inverses as constants."""

    def __init__(self, net: SRFlowArch, decoding: bool) -> None:
        super().__init__()
        self.net = _plain_copy(net)
        for index, layer in enumerate(self.net.flowUpsamplerNet.layers):
            if decoding and isinstance(layer, FlowStep):
                c = int(layer.invconv.weight.shape[0])
                inv = layer.invconv.inverse_and_logabsdet()[0].detach()
                self.register_buffer(f"inverse_{index}", inv.view(c, c, 1, 1).clone())

    def decode(self, lr: Tensor, latents: list[Tensor]) -> Tensor:
        net = self.net
        cond = net.conditional_features(lr, cache=False)
        flow = net.flowUpsamplerNet
        x, eps = latents[-1], latents[:-1]
        split = len(eps)
        for index in range(len(flow.layers) - 1, -1, -1):
            layer, level = flow.layers[index], flow.level_of[index]
            if isinstance(layer, FlowStep):
                if layer.affine is not None:
                    terms = layer.affine.cond_terms(cond.map_for(level), logdet=False)
                    x, _ = layer.affine(x, None, None, reverse=True, terms=terms)
                x = F.conv2d(x, getattr(self, f"inverse_{index}"))
                x, _ = layer.actnorm(x, None, reverse=True)
            elif isinstance(layer, Split2d):
                split -= 1
                x, _, _ = layer(x, None, reverse=True, eps=eps[split])
            else:
                x, _ = layer(x, None, reverse=True)
        if net.skip != "none":
            x = x + net._skip_image(lr, cond)
        return x

    def encode(self, hr: Tensor, lr: Tensor) -> list[Tensor]:
        net = self.net
        cond = net.conditional_features(lr, cache=False)
        x = hr - net._skip_image(lr, cond) if net.skip != "none" else hr
        latents: list[Tensor] = []
        for index, (layer, level) in enumerate(zip(net.flowUpsamplerNet.layers, net.flowUpsamplerNet.level_of)):
            if isinstance(layer, FlowStep):
                x, _ = layer.actnorm(x, None)
                x, _ = layer.invconv(x, None)
                if layer.affine is not None:
                    terms = layer.affine.cond_terms(cond.map_for(level), logdet=False)
                    x, _ = layer.affine(x, None, None, terms=terms)
            elif isinstance(layer, Split2d):
                x, _, z = layer(x, None)
                assert z is not None
                latents.append(z)
            else:
                x, _ = layer(x, None)
        latents.append(x)
        return latents


class SampleGraph(nn.Module):
    """``(lr, *latents) → sr``: ``decode(lr, latents)`` without log-determinant."""

    def __init__(self, net: SRFlowArch) -> None:
        super().__init__()
        self.flow = _Flow(net, decoding=True)

    def forward(self, lr: Tensor, *latents: Tensor) -> Tensor:
        return self.flow.decode(lr, list(latents))


class MeanGraph(nn.Module):
    """``lr → sr`` at temperature 0: zero latents of the sizes ``latent_shapes`` gives, made from the LR size."""

    def __init__(self, net: SRFlowArch) -> None:
        super().__init__()
        self.flow = _Flow(net, decoding=True)
        shapes = net.latent_shapes((1, 1, 2**net.L, 2**net.L))  # per LR pixel: level l has scale / 2^l
        self.levels = [(int(c), int(h), 2**net.L) for c, h, _ in shapes]

    def forward(self, lr: Tensor) -> Tensor:
        b, h, w = lr.shape[0], lr.shape[-2], lr.shape[-1]
        zeros = [lr.new_zeros((b, c, h * per // den, w * per // den)) for c, per, den in self.levels]
        return self.flow.decode(lr, zeros)


class EncodeGraph(nn.Module):
    """``(hr, lr) → latents`` (the latents of ``encode``, no noise added, no NLL)."""

    def __init__(self, net: SRFlowArch) -> None:
        super().__init__()
        self.flow = _Flow(net, decoding=False)

    def forward(self, hr: Tensor, lr: Tensor) -> tuple[Tensor, ...]:
        return tuple(self.flow.encode(hr, lr))


def export_graph(model: Any, kind: str) -> ExportGraph:
    """The :class:`restorekit.ExportGraph` of ``kind`` (``sample``, ``mean``, ``encode``) for an SRFlow network."""
    n = len(model.latent_shapes((1, 1, model.size_multiple, model.size_multiple)))
    names = tuple(f"z{i}" for i in range(n))
    info = {"latent_names": list(names), "latent_order": "encode order: split latents from the shallowest level, "
            "top z last (model.latent_shapes)", "temperature": TEMPERATURE}
    fp32 = ("fp32",)  # the flow overflows fp16 (its couplings divide by scales down to affine_eps)

    def with_latents(lr: Tensor) -> tuple[Tensor, ...]:
        gen = torch.Generator().manual_seed(0)
        zs = sample_latents(model.latent_shapes(lr.shape), 0.8, gen, batch=int(lr.shape[0]), dtype=lr.dtype)
        return (lr, *zs)

    if kind == "sample":
        return ExportGraph(kind=kind, module=SampleGraph(model), inputs=("lr", *names), outputs=("sr",),
                           make_inputs=with_latents, reference=lambda lr, *zs: model.decode(lr, list(zs)),
                           precisions=fp32, info=info)
    if kind == "mean":
        return ExportGraph(kind=kind, module=MeanGraph(model), inputs=("lr",), outputs=("sr",),
                           make_inputs=lambda lr: (lr,), reference=lambda lr: model.decode(lr, temperature=0.0),
                           precisions=fp32, info=info)
    if kind == "encode":
        def hr_lr(lr: Tensor) -> tuple[Tensor, ...]:
            gen = torch.Generator().manual_seed(0)
            hr = F.interpolate(lr, scale_factor=model.scale, mode="bicubic", align_corners=False)
            return ((hr + 0.02 * torch.randn(hr.shape, generator=gen, dtype=hr.dtype)).clamp(0, 1), lr)

        return ExportGraph(kind=kind, module=EncodeGraph(model), inputs=("hr", "lr"), outputs=names,
                           make_inputs=hr_lr, reference=lambda hr, lr: tuple(model.encode(hr, lr).latents),
                           precisions=fp32, info=info)
    raise UserError(f"srflow: no {kind!r} export graph (SRFlow exports 'sample', 'mean' and 'encode')")


__all__ = ["EncodeGraph", "MeanGraph", "SampleGraph", "export_graph"]
