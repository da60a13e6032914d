"""The Python API: :func:`load` a generator from a checkpoint, :func:`run` a pipeline file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from .catalogue import load_catalogue, looks_like_name
from .errors import UserError
from .perf import PROBE_SIDE, choose_layout, fast_inference
from .plan import ResolvedGenerator, build_generator, resolve_device, resolve_generator
from .registry import PluginRegistry


def load(
    checkpoint: str | os.PathLike[str],
    *,
    component: str | None = None,
    device: str | torch.device | None = None,
    preset: str | None = None,
    strict: bool = True,
    registry: PluginRegistry | None = None,
    catalogue: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    fast: bool = True,
    **params: Any,
) -> nn.Module:
    """Load a generator from a checkpoint file or a catalogue name, ready for inference (eval mode).

    ``checkpoint`` that is not an existing file but a name in the model catalogue (``restore-run --list-models``;
    ``catalogue`` adds catalogue files) loads that model: bundled, cached, or downloaded once into the cache
    (``$RESTOREKIT_HOME``); its component, scale and parameter count are checked against the entry.
    The component is read from restorekit's own files, given by ``component``, or detected from the
    tensors' names by the installed plugins. Architecture params are read off the tensors where possible;
    ``preset`` and keyword ``params`` fill in or override them (a mismatch with the file is an error).
    The result maps a float32 (B,C,h,w) batch in [0,1] to the SR batch: ``model(lr)``.

    ``fast`` (default): the inference fast paths ``restore-run`` uses — the generator's declared switches
    (:class:`restorekit.Switches`) and the memory layout a probe finds faster (:func:`restorekit.perf.choose_layout`;
    the choice is kept as ``model.restorekit_layout``: ``restorekit.perf.in_layout(model.restorekit_layout, lr)``
    feeds input in that layout). The probe (a few forward passes at 64x64) costs about a second on a CPU for the
    bundled SRFlow; ``fast=False`` skips it. The same seed gives the same
    pixels as ``restore-run``. ``fast=False``: the network as built (NCHW, no switches).
    """
    if isinstance(checkpoint, str) and not checkpoint.strip():
        raise UserError("empty model name: give a catalogue name (restore-run --list-models) or a checkpoint file")
    registry = registry or PluginRegistry.load()
    gen = resolve(checkpoint, registry=registry, component=component, preset=preset, catalogue=catalogue, **params)
    dev = resolve_device(str(device)) if device is not None else torch.device("cpu")
    module = build_generator(gen, strict=strict, device=dev).eval()
    if fast:
        fast_inference(module, gen.component.switches)
        probe = torch.rand(1, 3, PROBE_SIDE, PROBE_SIDE, generator=torch.Generator().manual_seed(0)).to(dev)
        layout = "contiguous"
        try:
            with torch.no_grad():  # not inference_mode: the weights must stay usable for training
                layout = choose_layout(module, probe)
        except (RuntimeError, ValueError, UserError):  # a network that cannot run the probe keeps NCHW
            pass
        module.restorekit_layout = layout
    module.register_forward_pre_hook(RangeGuard())
    return module


def resolve(
    checkpoint: str | os.PathLike[str],
    *,
    registry: PluginRegistry,
    component: str | None = None,
    preset: str | None = None,
    catalogue: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    **params: Any,
) -> ResolvedGenerator:
    """Which generator, params and weights file :func:`load` would build (headers read, tensors not): a file
    path, or a catalogue name when no such file exists. ``.path`` and ``.entry`` say where the weights come
    from."""
    text = str(checkpoint)
    is_name = not Path(checkpoint).exists() and isinstance(checkpoint, str) and looks_like_name(checkpoint)
    if is_name:
        entries = load_catalogue(catalogue, registry=registry)
        return resolve_generator(registry, model=text, component=component, preset=preset, params=params,
                                 catalogue=entries, source=text)
    return resolve_generator(registry, checkpoint=checkpoint, component=component, preset=preset, params=params,
                             source=text)


class InputRangeWarning(UserWarning):
    """``model(lr)`` got an input far outside [0, 1] (an 8-bit image in 0..255, say)."""


class RangeGuard:
    """A forward pre-hook: the first input far outside [0, 1] (below -0.5 or above 1.5: resampling overshoot is
    fine) warns once per model, with the fix. A class, not a closure, so that the model still pickles."""

    def __init__(self) -> None:
        self.warned = False

    def __call__(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        x = args[0] if args else None
        if self.warned or not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.numel() == 0:
            return
        lo, hi = float(x.detach().amin()), float(x.detach().amax())
        if lo < -0.5 or hi > 1.5:
            self.warned = True
            import warnings

            hint = "divide by 255 (lr / 255)" if hi <= 255.5 and lo >= -0.5 else "scale it to [0, 1]"
            warnings.warn(f"{type(module).__name__}: input values span [{lo:g}, {hi:g}], but restorekit models take "
                          f"float images in [0, 1]; {hint} (this warning is shown once per model)",
                          InputRangeWarning, stacklevel=3)
