"""The kit's own plumbing: its assertion messages, its tiny generator ``kit_upsampler``, :func:`make_registry`,
component lookup, :func:`check_params` and the scratch folder of a check."""

from __future__ import annotations

import json
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch.nn.functional as F
from pydantic import BaseModel, Field, ValidationError
from torch import Tensor, nn

from ..components import GeneratorComponent, Kind, Params
from ..hookspecs import hookimpl
from ..registry import PluginRegistry


def fail(who: str, message: str) -> AssertionError:
    return AssertionError(f"{who}: {message}")


# ----------------------------------------------------------------------------------------------------
# the kit's own tiny generator (losses and validators train with it)


class KitUpsamplerParams(Params):
    scale: int = Field(2, ge=1, le=8, description="Upscaling factor.")
    channels: int = Field(3, ge=1, description="Image channels in and out.")
    width: int = Field(8, ge=1, description="Hidden feature channels.")


class KitUpsampler(nn.Module):
    """A tiny learnable upsampler (conv, ReLU, conv, pixel shuffle, plus a bilinear skip)."""

    def __init__(self, *, scale: int = 2, channels: int = 3, width: int = 8) -> None:
        super().__init__()
        self.scale, self.size_multiple = scale, 1
        self.arch_params = {"scale": scale, "channels": channels, "width": width}
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, channels * scale * scale, 3, padding=1), nn.PixelShuffle(scale),
        )

    def forward(self, lr: Tensor) -> Tensor:
        skip = F.interpolate(lr, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return skip + self.body(lr)


class _KitPlugin:
    @hookimpl
    def restorekit_generators(self) -> list[GeneratorComponent[Any]]:
        return [GeneratorComponent(
            name="kit_upsampler", params=KitUpsamplerParams,
            build=lambda p: KitUpsampler(scale=p.scale, channels=p.channels, width=p.width),
            summary="Tiny learnable upsampler of restorekit.testing",
        )]


def make_registry(*plugins: object, builtins: bool = True, kit: bool = True) -> PluginRegistry:
    """A fresh registry holding ``plugins`` (modules or objects with hook implementations, or ``(name, plugin)``
    pairs), restorekit's builtins (the ``generator`` injector, ``pixel`` and ``direct`` losses) and the kit's
    ``kit_upsampler`` generator. A plugin that fails to register fails here, with its reason."""
    from .. import builtins as core_builtins

    reg = PluginRegistry()
    if builtins:
        reg.register(core_builtins, "builtins")
    if kit:
        reg.register(_KitPlugin(), "restorekit.testing")
    for item in plugins:
        name, plugin = item if isinstance(item, tuple) else (getattr(item, "__name__", type(item).__name__), item)
        reg.register(plugin, name)
    for info in reg.plugin_infos():
        if info.status != "ok":
            raise fail(f"plugin {info.name!r}", f"is {info.status}: {info.reason}")
    return reg


def resolve_component(registry: PluginRegistry, kind: Kind, name: str) -> Any:
    from ..errors import UserError

    try:
        return registry.get(kind, name).component
    except UserError as exc:
        raise fail(f"{kind} {name!r}", str(exc)) from None



# ----------------------------------------------------------------------------------------------------
# params


def check_params(component: Any, params: Mapping[str, Any] | None = None) -> BaseModel:
    """The component's ``params`` is a pydantic model that rejects unknown keys, describes every field and has a
    JSON schema; ``params`` (default: none, i.e. every default) validates. Returns the validated params."""
    who = f"{type(component).__name__.removesuffix('Component').lower()} {component.name!r}"
    model = component.params
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise fail(who, f"params must be a pydantic model class, got {model!r}")
    if model.model_config.get("extra") != "forbid":
        raise fail(who, f"{model.__name__} must reject unknown keys: derive from restorekit.Params")
    undocumented = [n for n, f in model.model_fields.items() if not f.description]
    if undocumented:
        raise fail(who, f"{model.__name__} fields without a description: {', '.join(undocumented)}")
    json.dumps(model.model_json_schema())
    try:
        parsed = model.model_validate(dict(params or {}))
    except ValidationError as exc:
        raise fail(who, f"params {dict(params or {})} do not validate: {exc.errors()[0]['msg']}") from None
    try:
        model.model_validate({**dict(params or {}), "__restorekit_kit_unknown__": 1})
    except ValidationError:
        pass
    else:
        raise fail(who, f"{model.__name__} accepted an unknown key")
    return parsed



# ----------------------------------------------------------------------------------------------------
# scratch folders


@contextmanager
def work_folder(tmp_dir: str | Path | None) -> Iterator[Path]:
    if tmp_dir is not None:
        Path(tmp_dir).mkdir(parents=True, exist_ok=True)
        yield Path(tmp_dir)
    else:
        with tempfile.TemporaryDirectory(prefix="restorekit-kit-") as d:
            yield Path(d)

