"""``restorekit.testing``: the conformance kit a plugin author calls from their own tests.

Every check raises :class:`AssertionError` with a sentence saying what the component got wrong, so it reads well
under pytest (the kit does not import pytest). Typical use::

    from restorekit.testing import check_generator, check_loss, check_validator, make_registry
    import my_plugin.plugin

    def test_my_generator(tmp_path):
        reg = make_registry(my_plugin.plugin)
        check_generator(reg, "mynet", {"scale": 2}, tmp_dir=tmp_path)

What each kind gets:

* every component: :func:`check_params` (a pydantic model that rejects unknown keys and describes every field);
* generator: :func:`check_generator` = builds from the given or default params (:func:`build_generator`), maps an LR
  batch to ``scale``× output (:func:`check_forward`), honours ``size_multiple`` (:func:`check_size_multiple`),
  survives a state-dict round trip through :func:`restorekit.save_generator` and :func:`restorekit.load`
  (:func:`check_state_dict_roundtrip`), a flow also an encode/decode round trip with finite log-determinant
  (:func:`check_flow`), and trains for a few steps through the real training path (:func:`check_training`);
* loss: :func:`check_loss` = callable (plain function or ``nn.Module``) on a tiny state, finite scalar with finite
  gradients, then a few training steps;
* validator: :func:`check_validator` = called with a model, :class:`~restorekit.Sample` items and a
  :class:`~restorekit.ValidationContext`, returns finite metrics and one ``per_image`` row per sample, then runs as a
  validator of a tiny training;
* injector: :func:`check_injector` = returns a dict of new state entries.

:func:`make_registry` builds a fresh registry with your plugin (and restorekit's builtins and the kit's own tiny
generator ``kit_upsampler``, which losses and validators train with when you bring no generator of your own).
"""

from __future__ import annotations

import copy
import json
import math
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field, ValidationError
from torch import Tensor, nn

from .components import (
    KINDS,
    FlowModel,
    GeneratorComponent,
    InjectorComponent,
    Kind,
    LossComponent,
    Params,
    Sample,
    ValidationContext,
    ValidationResult,
    ValidatorComponent,
)
from .hookspecs import hookimpl
from .registry import PluginRegistry

__all__ = [
    "KitUpsampler",
    "build_generator",
    "check_component",
    "check_flow",
    "check_forward",
    "check_generator",
    "check_injector",
    "check_loss",
    "check_params",
    "check_size_multiple",
    "check_state_dict_roundtrip",
    "check_training",
    "check_validator",
    "make_registry",
    "make_samples",
    "tiny_state",
    "write_images",
]

Spec = Mapping[str, Any]


def _fail(who: str, message: str) -> AssertionError:
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
    from . import builtins as core_builtins

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
            raise _fail(f"plugin {info.name!r}", f"is {info.status}: {info.reason}")
    return reg


def _resolve(registry: PluginRegistry, kind: Kind, name: str) -> Any:
    from .errors import UserError

    try:
        return registry.get(kind, name).component
    except UserError as exc:
        raise _fail(f"{kind} {name!r}", str(exc)) from None


# ----------------------------------------------------------------------------------------------------
# params


def check_params(component: Any, params: Mapping[str, Any] | None = None) -> BaseModel:
    """The component's ``params`` is a pydantic model that rejects unknown keys, describes every field and has a
    JSON schema; ``params`` (default: none, i.e. every default) validates. Returns the validated params."""
    who = f"{type(component).__name__.removesuffix('Component').lower()} {component.name!r}"
    model = component.params
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise _fail(who, f"params must be a pydantic model class, got {model!r}")
    if model.model_config.get("extra") != "forbid":
        raise _fail(who, f"{model.__name__} must reject unknown keys: derive from restorekit.Params")
    undocumented = [n for n, f in model.model_fields.items() if not f.description]
    if undocumented:
        raise _fail(who, f"{model.__name__} fields without a description: {', '.join(undocumented)}")
    json.dumps(model.model_json_schema())
    try:
        parsed = model.model_validate(dict(params or {}))
    except ValidationError as exc:
        raise _fail(who, f"params {dict(params or {})} do not validate: {exc.errors()[0]['msg']}") from None
    try:
        model.model_validate({**dict(params or {}), "__restorekit_kit_unknown__": 1})
    except ValidationError:
        pass
    else:
        raise _fail(who, f"{model.__name__} accepted an unknown key")
    return parsed


# ----------------------------------------------------------------------------------------------------
# images and samples


def _smooth_images(n: int, channels: int, size: int, seed: int) -> Tensor:
    """Smooth random images in [0, 1] (noise upsampled from 1/4 size), like photos to a restorer."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, channels, max(size // 4, 2), max(size // 4, 2), generator=gen)
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)


def make_samples(n: int = 2, *, scale: int = 2, size: int = 32, channels: int = 3, seed: int = 0) -> list[Sample]:
    """``n`` validation samples: smooth random HQ (1,C,size,size) and its area-downsampled LQ."""
    hq = _smooth_images(n, channels, size, seed)
    lq = F.interpolate(hq, scale_factor=1 / scale, mode="area")
    return [Sample(f"kit_{i}", lq[i : i + 1], hq[i : i + 1]) for i in range(n)]


def write_images(folder: str | Path, n: int = 4, *, size: int = 32, seed: int = 0) -> Path:
    """Write ``n`` smooth random RGB PNGs into ``folder``; returns the folder."""
    from .data.io import write_image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(_smooth_images(n, 3, size, seed)):
        write_image(folder / f"kit_{i}.png", img)
    return folder


# ----------------------------------------------------------------------------------------------------
# generators


def build_generator(component: GeneratorComponent[Any], params: Mapping[str, Any] | None = None) -> nn.Module:
    """Build the generator from ``params`` (default: its defaults) and check the :class:`~restorekit.SRModel`
    attributes: an ``nn.Module`` with integer ``scale`` and ``size_multiple`` >= 1 and JSON-able ``arch_params``
    that rebuild the same architecture."""
    who = f"generator {component.name!r}"
    parsed = check_params(component, params)
    model = component.build(parsed)
    if not isinstance(model, nn.Module):
        raise _fail(who, f"build(params) must return an nn.Module, got {type(model).__name__}")
    for attr in ("scale", "size_multiple"):
        value = getattr(model, attr, None)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise _fail(who, f"the module's {attr} must be an int >= 1, got {value!r}")
    arch = getattr(model, "arch_params", None)
    if not isinstance(arch, Mapping):
        raise _fail(who, f"the module's arch_params must be a dict of its params, got {type(arch).__name__}")
    try:
        json.dumps(dict(arch))
    except TypeError as exc:
        raise _fail(who, f"arch_params are not JSON-able ({exc})") from None
    rebuilt = component.build(component.params.model_validate(dict(arch)))
    mine = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()}
    if mine != theirs:
        raise _fail(who, "arch_params do not rebuild the same architecture (state-dict keys or shapes differ)")
    return model


def _in_channels(model: nn.Module) -> int:
    arch = getattr(model, "arch_params", {}) or {}
    for key in ("in_nc", "in_channels", "channels", "num_in_ch"):
        if isinstance(arch.get(key), int):
            return int(arch[key])
    return 3


def _lr_batch(model: nn.Module, batch: int, multiple_of: int, seed: int = 0) -> Tensor:
    side = max(model.size_multiple * multiple_of, 4)  # type: ignore[operator]
    side += (-side) % model.size_multiple  # type: ignore[operator]
    return _smooth_images(batch, _in_channels(model), side, seed)


@torch.no_grad()
def check_forward(model: nn.Module, *, batch: int = 2, name: str = "generator") -> Tensor:
    """``model(lr)`` maps a (B,C,h,w) float batch in [0,1] to a finite (B,C',h*scale,w*scale) batch, the same in
    a batch as one image at a time. Returns the output."""
    model.eval()
    lr = _lr_batch(model, batch, 4)
    out = model(lr)
    s = model.scale
    if not isinstance(out, Tensor) or out.dim() != 4:
        raise _fail(name, f"model(lr) must return a 4-d tensor, got {type(out).__name__}")
    if (out.shape[0], out.shape[2], out.shape[3]) != (batch, lr.shape[2] * s, lr.shape[3] * s):
        raise _fail(name, f"model(lr) of shape {tuple(lr.shape)} gave {tuple(out.shape)}, expected "
                          f"({batch}, C, {lr.shape[2] * s}, {lr.shape[3] * s}) for scale {s}")
    if not out.is_floating_point() or not torch.isfinite(out).all():
        raise _fail(name, "model(lr) is not a finite float tensor")
    if not _is_flow(model):
        one = model(lr[1:2]) if batch > 1 else out
        if batch > 1 and not torch.allclose(one, out[1:2], atol=1e-4, rtol=1e-4):
            raise _fail(name, "the second image of a batch differs from the same image run alone")
    return out


@torch.no_grad()
def check_size_multiple(model: nn.Module, *, name: str = "generator") -> None:
    """Every LR size that is a multiple of ``size_multiple`` gives exactly ``scale``× output; a size that is not
    is padded by restorekit (reflect), run and cropped back to ``scale``×."""
    from .tiling import pad_to_multiple

    model.eval()
    m, s = model.size_multiple, model.scale
    for k in (1, 3):
        h = m * max(k, math.ceil(4 / m))
        lr = _smooth_images(1, _in_channels(model), h + m, seed=k)[:, :, :h, :]  # h x (h + m): both multiples of m
        out = model(lr)
        if tuple(out.shape[2:]) != (lr.shape[2] * s, lr.shape[3] * s):
            raise _fail(name, f"size_multiple is {m}, but an LR of {tuple(lr.shape[2:])} gave {tuple(out.shape[2:])}")
    if m > 1:
        odd = _smooth_images(1, _in_channels(model), 4 * m + 1, seed=5)
        padded, _ = pad_to_multiple(odd, m)
        out = model(padded)[:, :, : odd.shape[2] * s, : odd.shape[3] * s]
        if tuple(out.shape[2:]) != (odd.shape[2] * s, odd.shape[3] * s) or not torch.isfinite(out).all():
            raise _fail(name, f"a padded LR of {tuple(padded.shape[2:])} did not give a finite {s}x output")


def _is_flow(model: nn.Module) -> bool:
    return isinstance(model, FlowModel)


def _jitter(model: nn.Module, seed: int = 0) -> None:
    """Move every floating tensor off its initial value (zero-initialised layers would make checks trivial)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            if t.is_floating_point():
                t.add_(torch.randn(t.shape, generator=gen).to(t) * 0.02)


def _same_output(a: nn.Module, b: nn.Module, lr: Tensor) -> bool:
    with torch.no_grad():
        if _is_flow(a):
            latents = [torch.randn(lr.shape[0], *shape, generator=torch.Generator().manual_seed(3))
                       for shape in a.latent_shapes(lr.shape)]  # type: ignore[operator]
            return torch.equal(a.decode(lr, latents=latents), b.decode(lr, latents=latents))  # type: ignore[operator]
        return torch.equal(a(lr), b(lr))


def check_state_dict_roundtrip(registry: PluginRegistry, name: str, model: nn.Module, tmp_dir: str | Path) -> nn.Module:
    """Save ``model`` (weights jittered) with :func:`restorekit.save_generator` and load it back with
    :func:`restorekit.load`: same component, same tensors, same outputs. Returns the loaded model."""
    from .api import load
    from .checkpoint import save_generator

    who = f"generator {name!r}"
    _jitter(model)
    model.eval()
    path = Path(tmp_dir) / f"kit_{name}.safetensors"
    save_generator(path, model, name, dict(model.arch_params))  # type: ignore[arg-type]
    loaded = load(path, registry=registry)
    ours, theirs = model.state_dict(), loaded.state_dict()
    if set(ours) != set(theirs):
        raise _fail(who, f"state-dict keys differ after save and load: {sorted(set(ours) ^ set(theirs))[:3]}")
    changed = [k for k in ours if not torch.equal(ours[k], theirs[k])]
    if changed:
        raise _fail(who, f"{len(changed)} tensors changed in save and load (e.g. {changed[0]})")
    if not _same_output(model, loaded, _lr_batch(model, 1, 2)):
        raise _fail(who, "the loaded model's output differs from the saved model's")
    return loaded


@torch.no_grad()
def check_flow(model: nn.Module, *, atol: float = 1e-3, name: str = "generator") -> None:
    """A :class:`~restorekit.FlowModel`: ``encode(hr, lr)`` gives latents of ``latent_shapes``, finite ``nll`` and
    ``logdet`` of shape (B,); ``decode(lr, latents)`` gives ``hr`` back (within ``atol``); ``decode`` at temperature
    0 is finite and the right size."""
    if not _is_flow(model):
        raise _fail(name, "is not a FlowModel (encode, decode, latent_shapes)")
    model.eval()
    lr = _lr_batch(model, 2, 2)
    s = model.scale  # type: ignore[attr-defined]
    hr = F.interpolate(lr, scale_factor=s, mode="bicubic", align_corners=False).clamp(0, 1)
    hr = (hr + 0.05 * _smooth_images(2, hr.shape[1], hr.shape[2], seed=9)[..., : hr.shape[3]]).clamp(0, 1)
    enc = model.encode(hr, lr)  # type: ignore[operator]
    shapes = [tuple(x) for x in model.latent_shapes(lr.shape)]  # type: ignore[operator]
    got = [tuple(z.shape[1:]) for z in enc.latents]
    if got != shapes:
        raise _fail(name, f"encode gave latents {got}, latent_shapes says {shapes}")
    for field in ("nll", "logdet"):
        value = getattr(enc, field)
        if tuple(value.shape) != (2,) or not torch.isfinite(value).all():
            raise _fail(name, f"encode's {field} must be a finite (B,) tensor, got {tuple(value.shape)} {value}")
    back = model.decode(lr, latents=enc.latents)  # type: ignore[operator]
    err = (back - hr).abs().max().item()
    if not err <= atol:
        raise _fail(name, f"decode(encode(hr)) differs from hr by {err:.2e} (> {atol})")
    mean = model.decode(lr, temperature=0.0)  # type: ignore[operator]
    if tuple(mean.shape) != tuple(hr.shape) or not torch.isfinite(mean).all():
        raise _fail(name, f"decode at temperature 0 gave {tuple(mean.shape)}, expected a finite {tuple(hr.shape)}")


# ----------------------------------------------------------------------------------------------------
# training through the real path


@contextmanager
def _folder(tmp_dir: str | Path | None) -> Iterator[Path]:
    if tmp_dir is not None:
        Path(tmp_dir).mkdir(parents=True, exist_ok=True)
        yield Path(tmp_dir)
    else:
        with tempfile.TemporaryDirectory(prefix="restorekit-kit-") as d:
            yield Path(d)


def _crop_size(model: nn.Module) -> int:
    unit = model.scale * model.size_multiple  # type: ignore[operator]
    return max(unit * math.ceil(16 / unit), 8)


def check_training(
    registry: PluginRegistry,
    *,
    generator: tuple[str, Mapping[str, Any]] = ("kit_upsampler", {}),
    losses: Mapping[str, tuple[str, Mapping[str, Any]]] | None = None,
    injectors: Mapping[str, tuple[str, Mapping[str, Any]]] | None = None,
    validators: Mapping[str, tuple[str, Mapping[str, Any]]] | None = None,
    steps: int = 2,
    tmp_dir: str | Path | None = None,
) -> dict[str, float]:
    """Train ``generator`` for ``steps`` optimizer steps through restorekit's own spec → plan → train path, on
    generated images, with the given injectors, losses and validators (defaults: a ``generator`` injector — flow
    ``encode`` for a flow — and the ``pixel`` loss, or ``direct`` on ``nll`` for a flow). Checks the run ends
    normally, every trainable weight of the generator moves, and the metrics are finite. Returns the metrics."""
    from .plan import build_network, make_plan
    from .runtime import seed_everything
    from .spec import spec_from_dict
    from .train import train

    name, gparams = generator
    probe = build_generator(_resolve(registry, "generator", name), gparams)
    flow = _is_flow(probe)
    if injectors is None:
        injectors = {"g": ("generator", {"mode": "encode"} if flow else {})}
    if losses is None:
        losses = {"l": ("direct", {"key": "nll"})} if flow else {"l": ("pixel", {})}
    crop = _crop_size(probe)
    with _folder(tmp_dir) as root:
        images = write_images(root / "kit_images", 4, size=2 * crop)
        spec: dict[str, Any] = {
            "run": {"mode": "train", "device": "cpu", "seed": 0, "output_dir": str(root / "kit_run")},
            "networks": {"generator": {"component": name, "params": dict(gparams)}},
            "data": {"train": {"hq": [str(images)], "target_size": crop, "batch_size": 2}},
            "steps": {"kit": {
                "networks": ["generator"],
                "optimizer": {"lr": 1e-3},
                "injectors": {n: {"component": c, "params": dict(p)} for n, (c, p) in injectors.items()},
                "losses": {n: {"component": c, "params": dict(p)} for n, (c, p) in losses.items()},
            }},
            "train": {"steps": steps, "log_every": 1, "tensorboard": False, "image_every": 0},
        }
        if validators:
            spec["data"]["val"] = {"hq": [str(images)], "crop": crop, "batch_size": 1}
            spec["validators"] = {n: {"component": c, "params": dict(p)} for n, (c, p) in validators.items()}
        plan = make_plan(spec_from_dict(spec, source="restorekit.testing"), registry, source="restorekit.testing")
        seed_everything(0)  # as the run does: the network below starts from the same weights as the trained one
        start = build_network(plan.networks["generator"])
        before = {k: v.detach().clone() for k, v in start.state_dict().items()}
        reached = _weights_reached(plan, start, crop)
        who = f"training {name!r} with losses {sorted(c for c, _ in losses.values())}"
        if not reached:
            raise _fail(who, "the losses reach no weight of the generator (no gradient)")
        seed_everything(0)
        result = train(plan)
        if result.exit_code != 0:
            raise _fail(who, f"stopped with exit code {result.exit_code} (non-finite losses?)")
        after = {k: v.detach().cpu() for k, v in result.networks["generator"].state_dict().items()}
        still = sorted(k for k in reached if torch.equal(before[k], after[k]))
        if still:
            raise _fail(who, f"{len(still)} of the {len(reached)} tensors the losses reach did not move (e.g. {still[0]})")
        bad = {k: v for k, v in result.metrics.items() if not math.isfinite(v)}
        if bad:
            raise _fail(who, f"non-finite metrics {bad}")
        return dict(result.metrics)


def _weights_reached(plan: Any, net: nn.Module, crop: int) -> set[str]:
    """The generator's parameters that the plan's first step gives a non-zero gradient on one batch."""
    probe = copy.deepcopy(net).train()
    step = plan.steps[0]
    networks = {"generator": probe}
    hq = _smooth_images(2, 3, crop, seed=11)
    state: dict[str, Any] = {"hq": hq, "lq": F.interpolate(hq, scale_factor=1 / probe.scale, mode="area")}
    for inj in step.injectors:
        state.update(inj.build(networks)(state, 0))
    total = sum(c.spec.weight * c.build()(state) for c in step.losses)
    if not (isinstance(total, Tensor) and total.requires_grad):
        return set()
    total.backward()
    return {n for n, p in probe.named_parameters() if p.grad is not None and bool(p.grad.abs().sum() > 0)}


def check_generator(
    registry: PluginRegistry,
    name: str,
    params: Mapping[str, Any] | None = None,
    *,
    tmp_dir: str | Path | None = None,
    train: bool = True,
    flow_atol: float = 1e-3,
) -> nn.Module:
    """All generator checks: builds, forward, ``size_multiple``, save/load round trip, flow round trip (flows),
    and (``train``) a two-step training. Returns the built model."""
    comp = _resolve(registry, "generator", name)
    who = f"generator {name!r}"
    model = build_generator(comp, params)
    check_forward(model, name=who)
    check_size_multiple(model, name=who)
    if _is_flow(model):
        check_flow(model, atol=flow_atol, name=who)
    with _folder(tmp_dir) as root:
        if model.state_dict():  # a learning-free generator has nothing to save
            check_state_dict_roundtrip(registry, name, copy.deepcopy(model), root)
        if train and any(p.requires_grad for p in model.parameters()):
            check_training(registry, generator=(name, dict(params or {})), tmp_dir=root / "train")
    return model


# ----------------------------------------------------------------------------------------------------
# losses, validators, injectors


def tiny_state(*, scale: int = 2, batch: int = 2, size: int = 16, seed: int = 0) -> dict[str, Any]:
    """A training state as the trainer makes it: ``hq``, ``lq`` and an ``sr`` that requires grad."""
    hq = _smooth_images(batch, 3, size, seed)
    lq = F.interpolate(hq, scale_factor=1 / scale, mode="area")
    sr = F.interpolate(lq, scale_factor=scale, mode="bilinear", align_corners=False).requires_grad_(True)
    return {"hq": hq, "lq": lq, "sr": sr}


def check_loss(
    registry: PluginRegistry,
    name: str,
    params: Mapping[str, Any] | None = None,
    *,
    state: Mapping[str, Any] | None = None,
    tmp_dir: str | Path | None = None,
    train: bool = True,
    generator: tuple[str, Mapping[str, Any]] = ("kit_upsampler", {}),
    injectors: Mapping[str, tuple[str, Mapping[str, Any]]] | None = None,
) -> Tensor:
    """``build(params)`` gives a callable (function or ``nn.Module``); ``loss(state)`` on :func:`tiny_state` (or
    ``state``) is a finite 0-d tensor whose gradient reaches every tensor of the state that requires grad and is
    finite; then (``train``) it drives a few training steps. Returns the loss value."""
    comp: LossComponent[Any] = _resolve(registry, "loss", name)
    who = f"loss {name!r}"
    loss = comp.build(check_params(comp, params))
    if not callable(loss):
        raise _fail(who, f"build(params) must return a callable, got {type(loss).__name__}")
    state = dict(state) if state is not None else tiny_state()
    value = loss(state)
    if not isinstance(value, Tensor) or value.dim() != 0:
        raise _fail(who, f"loss(state) must return a 0-d tensor, got {getattr(value, 'shape', type(value).__name__)}")
    if not torch.isfinite(value):
        raise _fail(who, f"loss(state) is not finite: {value.item()}")
    leaves = [v for v in state.values() if isinstance(v, Tensor) and v.requires_grad]
    if value.requires_grad:
        grads = torch.autograd.grad(value, leaves, allow_unused=True)
        if all(g is None for g in grads):
            raise _fail(who, "the loss has no gradient with respect to the state")
        if any(g is not None and not torch.isfinite(g).all() for g in grads):
            raise _fail(who, "the loss's gradient is not finite")
    elif leaves:
        raise _fail(who, "loss(state) does not depend on any state entry that requires grad")
    if train:
        check_training(registry, generator=generator, injectors=injectors,
                       losses={"kit": (name, dict(params or {}))}, tmp_dir=tmp_dir)
    return value.detach()


def check_validator(
    registry: PluginRegistry,
    name: str,
    params: Mapping[str, Any] | None = None,
    *,
    generator: tuple[str, Mapping[str, Any]] = ("kit_upsampler", {}),
    samples: Sequence[Sample] | None = None,
    tmp_dir: str | Path | None = None,
    train: bool = True,
) -> ValidationResult:
    """``validator(model, samples, ctx)`` with a model built from ``generator`` returns a
    :class:`~restorekit.ValidationResult`: finite float metrics, and one ``per_image`` row per sample holding the
    sample's ``name`` and numbers; then (``train``) it runs as the validator of a tiny training. Returns the result."""
    comp: ValidatorComponent[Any] = _resolve(registry, "validator", name)
    who = f"validator {name!r}"
    validator = comp.build(check_params(comp, params))
    if not callable(validator):
        raise _fail(who, f"build(params) must return a callable, got {type(validator).__name__}")
    gname, gparams = generator
    model = build_generator(_resolve(registry, "generator", gname), gparams).eval()
    _jitter(model)
    unit = model.scale * model.size_multiple  # type: ignore[operator]
    samples = list(samples) if samples is not None else make_samples(
        2, scale=model.scale, size=unit * max(1, math.ceil(32 / unit)))  # type: ignore[arg-type]
    with _folder(tmp_dir) as root:
        ctx = ValidationContext(device=torch.device("cpu"), scale=model.scale, step=0,  # type: ignore[arg-type]
                                output_dir=root / "kit_validation")
        with torch.no_grad():
            result = validator(model, samples, ctx)
        if not isinstance(result, ValidationResult):
            raise _fail(who, f"must return restorekit.ValidationResult, got {type(result).__name__}")
        if not result.metrics:
            raise _fail(who, "returned no metrics")
        for key, value in result.metrics.items():
            if not isinstance(key, str) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise _fail(who, f"metric {key!r} = {value!r} is not a finite number")
        if len(result.per_image) != len(samples):
            raise _fail(who, f"{len(result.per_image)} per_image rows for {len(samples)} samples")
        for row, sample in zip(result.per_image, samples):
            if row.get("name") != sample.name:
                raise _fail(who, f"per_image row {row!r} does not carry the sample's name {sample.name!r}")
            if not any(isinstance(v, (int, float)) and not isinstance(v, bool) for k, v in row.items() if k != "name"):
                raise _fail(who, f"per_image row {row!r} holds no number")
        if train:
            check_training(registry, generator=generator, validators={"kit": (name, dict(params or {}))},
                           tmp_dir=root / "train")
    return result


def check_injector(
    registry: PluginRegistry,
    name: str,
    params: Mapping[str, Any] | None = None,
    *,
    networks: Mapping[str, nn.Module] | None = None,
    state: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``build(params, networks)`` gives a callable; ``injector(state, step)`` returns a dict of new state entries
    (tensors or lists of tensors, finite). ``networks`` defaults to ``{"generator": <kit_upsampler>}``."""
    comp: InjectorComponent[Any] = _resolve(registry, "injector", name)
    who = f"injector {name!r}"
    if networks is None:
        networks = {"generator": build_generator(_resolve(registry, "generator", "kit_upsampler"))}
    injector = comp.build(check_params(comp, params), networks)
    out = injector(dict(state) if state is not None else tiny_state(), 0)
    if not isinstance(out, dict) or not out:
        raise _fail(who, f"injector(state, step) must return a non-empty dict, got {out!r}")
    for key, value in out.items():
        tensors = value if isinstance(value, (list, tuple)) else [value]
        for t in tensors:
            if isinstance(t, Tensor) and t.is_floating_point() and not torch.isfinite(t).all():
                raise _fail(who, f"state entry {key!r} is not finite")
    return out


def check_component(
    registry: PluginRegistry,
    kind: Kind,
    name: str,
    params: Mapping[str, Any] | None = None,
    *,
    tmp_dir: str | Path | None = None,
    **options: Any,
) -> Any:
    """Run the checks of ``kind`` on the component ``name`` (:func:`check_generator`, :func:`check_loss`,
    :func:`check_validator`, :func:`check_injector`); ``options`` go to that function."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}")
    if kind == "generator":
        return check_generator(registry, name, params, tmp_dir=tmp_dir, **options)
    if kind == "loss":
        return check_loss(registry, name, params, tmp_dir=tmp_dir, **options)
    if kind == "validator":
        return check_validator(registry, name, params, tmp_dir=tmp_dir, **options)
    return check_injector(registry, name, params, **options)
