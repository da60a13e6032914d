"""Flow checks: encode/decode round trip, latent shapes, finite ``nll`` and log-determinant."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..components import FlowModel
from .data import smooth_images
from .generators import lr_batch
from .kit import fail


@torch.no_grad()
def check_flow(model: nn.Module, *, atol: float = 1e-3, name: str = "generator") -> None:
    """A :class:`~restorekit.FlowModel`: ``encode(hr, lr)`` gives latents of ``latent_shapes``, finite ``nll`` and
    ``logdet`` of shape (B,); ``decode(lr, latents)`` gives ``hr`` back (within ``atol``; with the flow's own LR,
    ``encode(...).flow_lr``, in the LR slot for a flow that has one); ``decode`` at temperature
    0 is finite and the right size."""
    if not isinstance(model, FlowModel):
        raise fail(name, "is not a FlowModel (encode, decode, latent_shapes)")
    model.eval()
    lr = lr_batch(model, 2, 2)
    s = model.scale  # type: ignore[attr-defined]
    hr = F.interpolate(lr, scale_factor=s, mode="bicubic", align_corners=False).clamp(0, 1)
    hr = (hr + 0.05 * smooth_images(2, hr.shape[1], hr.shape[2], seed=9)[..., : hr.shape[3]]).clamp(0, 1)
    enc = model.encode(hr, lr)  # type: ignore[operator]
    shapes = [tuple(x) for x in model.latent_shapes(lr.shape)]  # type: ignore[operator]
    got = [tuple(z.shape[1:]) for z in enc.latents]
    if got != shapes:
        raise fail(name, f"encode gave latents {got}, latent_shapes says {shapes}")
    for field in ("nll", "logdet"):
        value = getattr(enc, field)
        if tuple(value.shape) != (2,) or not torch.isfinite(value).all():
            raise fail(name, f"encode's {field} must be a finite (B,) tensor, got {tuple(value.shape)} {value}")
    flow_lr = getattr(enc, "flow_lr", None)
    if flow_lr is not None and tuple(flow_lr.shape) != tuple(lr.shape):
        raise fail(name, f"encode's flow_lr has shape {tuple(flow_lr.shape)}, the LR {tuple(lr.shape)}")
    back = model.decode(lr if flow_lr is None else flow_lr, latents=enc.latents)  # type: ignore[operator]
    err = (back - hr).abs().max().item()
    if not err <= atol:
        raise fail(name, f"decode(encode(hr)) differs from hr by {err:.2e} (> {atol})")
    mean = model.decode(lr, temperature=0.0)  # type: ignore[operator]
    if tuple(mean.shape) != tuple(hr.shape) or not torch.isfinite(mean).all():
        raise fail(name, f"decode at temperature 0 gave {tuple(mean.shape)}, expected a finite {tuple(hr.shape)}")
