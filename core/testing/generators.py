"""Generator checks: builds from params, forward to ``scale``× output, ``size_multiple``, save/load round trip."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from ..components import FlowModel, GeneratorComponent
from ..registry import PluginRegistry
from .data import smooth_images
from .kit import check_params, fail


def build_generator(component: GeneratorComponent[Any], params: Mapping[str, Any] | None = None) -> nn.Module:
    """Build the generator from ``params`` (default: its defaults) and check the :class:`~restorekit.SRModel`
    attributes: an ``nn.Module`` with integer ``scale`` and ``size_multiple`` >= 1 and JSON-able ``arch_params``
    that rebuild the same architecture."""
    who = f"generator {component.name!r}"
    parsed = check_params(component, params)
    model = component.build(parsed)
    if not isinstance(model, nn.Module):
        raise fail(who, f"build(params) must return an nn.Module, got {type(model).__name__}")
    for attr in ("scale", "size_multiple"):
        value = getattr(model, attr, None)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise fail(who, f"the module's {attr} must be an int >= 1, got {value!r}")
    arch = getattr(model, "arch_params", None)
    if not isinstance(arch, Mapping):
        raise fail(who, f"the module's arch_params must be a dict of its params, got {type(arch).__name__}")
    try:
        json.dumps(dict(arch))
    except TypeError as exc:
        raise fail(who, f"arch_params are not JSON-able ({exc})") from None
    rebuilt = component.build(component.params.model_validate(dict(arch)))
    mine = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()}
    if mine != theirs:
        raise fail(who, "arch_params do not rebuild the same architecture (state-dict keys or shapes differ)")
    return model


def in_channels(model: nn.Module) -> int:
    arch = getattr(model, "arch_params", {}) or {}
    for key in ("in_nc", "in_channels", "channels", "num_in_ch"):
        if isinstance(arch.get(key), int):
            return int(arch[key])
    return 3


def lr_batch(model: nn.Module, batch: int, multiple_of: int, seed: int = 0) -> Tensor:
    side = max(model.size_multiple * multiple_of, 4)  # type: ignore[operator]
    side += (-side) % model.size_multiple  # type: ignore[operator]
    return smooth_images(batch, in_channels(model), side, seed)


@torch.no_grad()
def check_forward(model: nn.Module, *, batch: int = 2, name: str = "generator") -> Tensor:
    """``model(lr)`` maps a (B,C,h,w) float batch in [0,1] to a finite (B,C',h*scale,w*scale) batch, the same in
    a batch as one image at a time. Returns the output."""
    model.eval()
    lr = lr_batch(model, batch, 4)
    out = model(lr)
    s = model.scale
    if not isinstance(out, Tensor) or out.dim() != 4:
        raise fail(name, f"model(lr) must return a 4-d tensor, got {type(out).__name__}")
    if (out.shape[0], out.shape[2], out.shape[3]) != (batch, lr.shape[2] * s, lr.shape[3] * s):
        raise fail(name, f"model(lr) of shape {tuple(lr.shape)} gave {tuple(out.shape)}, expected "
                          f"({batch}, C, {lr.shape[2] * s}, {lr.shape[3] * s}) for scale {s}")
    if not out.is_floating_point() or not torch.isfinite(out).all():
        raise fail(name, "model(lr) is not a finite float tensor")
    if not isinstance(model, FlowModel):
        one = model(lr[1:2]) if batch > 1 else out
        if batch > 1 and not torch.allclose(one, out[1:2], atol=1e-4, rtol=1e-4):
            raise fail(name, "the second image of a batch differs from the same image run alone")
    return out


@torch.no_grad()
def check_size_multiple(model: nn.Module, *, name: str = "generator") -> None:
    """Every LR size that is a multiple of ``size_multiple`` gives exactly ``scale``× output; a size that is not
    is padded by restorekit (reflect), run and cropped back to ``scale``×."""
    from ..tiling import pad_to_multiple

    model.eval()
    m, s = model.size_multiple, model.scale
    for k in (1, 3):
        h = m * max(k, math.ceil(4 / m))
        lr = smooth_images(1, in_channels(model), h + m, seed=k)[:, :, :h, :]  # h x (h + m): both multiples of m
        out = model(lr)
        if tuple(out.shape[2:]) != (lr.shape[2] * s, lr.shape[3] * s):
            raise fail(name, f"size_multiple is {m}, but an LR of {tuple(lr.shape[2:])} gave {tuple(out.shape[2:])}")
    if m > 1:
        odd = smooth_images(1, in_channels(model), 4 * m + 1, seed=5)
        padded, _ = pad_to_multiple(odd, m)
        out = model(padded)[:, :, : odd.shape[2] * s, : odd.shape[3] * s]
        if tuple(out.shape[2:]) != (odd.shape[2] * s, odd.shape[3] * s) or not torch.isfinite(out).all():
            raise fail(name, f"a padded LR of {tuple(padded.shape[2:])} did not give a finite {s}x output")



def jitter(model: nn.Module, seed: int = 0) -> None:
    """Move every floating tensor off its initial value (zero-initialised layers would make checks trivial)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            if t.is_floating_point():
                t.add_(torch.randn(t.shape, generator=gen).to(t) * 0.02)


def _same_output(a: nn.Module, b: nn.Module, lr: Tensor) -> bool:
    with torch.no_grad():
        if isinstance(a, FlowModel):
            latents = [torch.randn(lr.shape[0], *shape, generator=torch.Generator().manual_seed(3))
                       for shape in a.latent_shapes(lr.shape)]  # type: ignore[operator]
            return torch.equal(a.decode(lr, latents=latents), b.decode(lr, latents=latents))  # type: ignore[operator]
        return torch.equal(a(lr), b(lr))


def check_state_dict_roundtrip(registry: PluginRegistry, name: str, model: nn.Module, tmp_dir: str | Path) -> nn.Module:
    """Save ``model`` (weights jittered) with :func:`restorekit.save_generator` and load it back with
    :func:`restorekit.load`: same component, same tensors, same outputs. Returns the loaded model."""
    from ..api import load
    from ..checkpoint import save_generator

    who = f"generator {name!r}"
    jitter(model)
    model.eval()
    path = Path(tmp_dir) / f"kit_{name}.safetensors"
    save_generator(path, model, name, dict(model.arch_params))  # type: ignore[arg-type]
    loaded = load(path, registry=registry)
    ours, theirs = model.state_dict(), loaded.state_dict()
    if set(ours) != set(theirs):
        raise fail(who, f"state-dict keys differ after save and load: {sorted(set(ours) ^ set(theirs))[:3]}")
    changed = [k for k in ours if not torch.equal(ours[k], theirs[k])]
    if changed:
        raise fail(who, f"{len(changed)} tensors changed in save and load (e.g. {changed[0]})")
    if not _same_output(model, loaded, lr_batch(model, 1, 2)):
        raise fail(who, "the loaded model's output differs from the saved model's")
    return loaded
