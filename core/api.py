"""The Python API: :func:`load` a generator from a checkpoint, :func:`run` a pipeline file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from .catalogue import check_component, check_loaded, fetch, load_catalogue, lookup, looks_like_name
from .checkpoint import read_state_dict, restorekit_metadata
from .errors import UserError
from .plan import detect_generator, generator_params, load_weights, resolve_device
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
    """
    if isinstance(checkpoint, str) and not checkpoint.strip():
        raise UserError("empty model name: give a catalogue name (restore-run --list-models) or a checkpoint file")
    path = Path(checkpoint)
    registry = registry or PluginRegistry.load()
    entry = None
    if not path.exists() and isinstance(checkpoint, str) and looks_like_name(checkpoint):
        entry = lookup(checkpoint, load_catalogue(catalogue, registry=registry), where=f"{checkpoint}: not a file")
        if component is not None and component != entry.component:
            raise UserError(f"{checkpoint}: catalogue entry is a {entry.component!r} model, not {component!r}")
        if entry.component not in registry.names("generator"):  # before downloading anything
            raise UserError(f"{checkpoint}: catalogue entry needs the generator {entry.component!r}, which no installed "
                            "plugin provides (restore-run --list-plugins)")
        path = fetch(entry)
        preset = preset if preset is not None else entry.preset
        params = {**entry.params, **params}
    sd = read_state_dict(path)
    meta_component, file_params = restorekit_metadata(path)
    name = component or meta_component
    resolved = registry.get("generator", name) if name else detect_generator(registry, sd, str(path))
    if entry is not None:
        check_component(entry, resolved.component.name, path)
    if meta_component is not None and resolved.component.name != meta_component:
        file_params = {}
    parsed = generator_params(
        resolved, params=params, preset=preset, state_dict=sd, file_params=file_params,
        source=str(path), where="params",
    )
    module: nn.Module = resolved.component.build(parsed)
    load_weights(module, resolved.component, parsed, sd, strict=strict, source=str(path))  # type: ignore[arg-type]
    if entry is not None:
        check_loaded(entry, resolved.component.name, module, path)
    dev = resolve_device(str(device)) if device is not None else torch.device("cpu")
    module.register_forward_pre_hook(RangeGuard())
    return module.to(dev).eval()


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
