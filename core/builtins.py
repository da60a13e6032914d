"""Generic components every pipeline needs, shipped as a plugin of the core.

Registered through the entry-point group ``restorekit.plugins`` (name ``builtins``) like any other plugin.

* injector ``generator``: runs a network (forward SR, flow encode, flow decode) on named state entries;
* loss ``pixel``: l1 / l2 / charbonnier between two state entries;
* loss ``direct``: a state entry (e.g. ``nll``) used as the loss.
"""

from __future__ import annotations

from typing import Any, Literal, Mapping

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from .components import InjectorComponent, LossComponent, Params, State
from .data.resize import downsample
from .errors import UserError
from .hookspecs import hookimpl


def state_get(state: State, key: str, who: str) -> Any:
    """``state[key]``, or a :class:`UserError` listing the keys present."""
    try:
        return state[key]
    except KeyError:
        raise UserError(
            f"{who}: state has no {key!r} (present: {', '.join(sorted(state)) or 'none'})"
        ) from None


# ----------------------------------------------------------------------------------------------------
# generator injector


MODE_INPUTS: dict[str, tuple[str, ...]] = {"forward": ("lr",), "rrdb": ("lr",), "encode": ("hr", "lr"), "decode": ("lr",)}
MODE_OUTPUTS: dict[str, dict[str, str]] = {
    "forward": {"sr": "sr"}, "rrdb": {"sr": "sr"}, "decode": {"sr": "sr"},
    "encode": {"z": "z", "nll": "nll", "logdet": "logdet"},
}


class GeneratorInjectorParams(Params):
    """Typed wiring of a generator call (DL-Art-School's ``generator`` injector, by name)."""

    network: str = Field("generator", description="The network to run.")
    mode: Literal["forward", "encode", "decode", "rrdb"] = Field(
        "forward",
        description="forward: sr = net(lq); encode: flow HR→latents (z, nll, logdet); "
        "decode: flow latents/temperature→sr; rrdb: the conditional RRDB's own SR image (SRFlow stage 1).",
    )
    inputs: dict[Literal["hr", "lr", "latents", "temperature"], str] = Field(
        default_factory=lambda: {"hr": "hq", "lr": "lq"},
        description="Which state keys feed the call's hr / lr / latents / temperature.",
    )
    outputs: dict[Literal["sr", "z", "nll", "logdet"], str] = Field(
        default_factory=dict,
        description="Which state keys receive the outputs (default: sr→'sr'; encode: z→'z', nll→'nll', logdet→'logdet').",
    )
    add_noise: bool = Field(False, description="encode: uniform dequantisation noise (official training: off).")
    temperature: float = Field(0.0, ge=0.0, description="decode: temperature when no latents are wired.")

    @model_validator(mode="after")
    def _needs(self) -> "GeneratorInjectorParams":
        need = MODE_INPUTS[self.mode]
        missing = [n for n in need if n not in self.inputs]
        if missing:
            raise ValueError(f"mode {self.mode!r} needs inputs.{missing[0]}")
        return self


def injector_outputs(params: GeneratorInjectorParams) -> dict[str, str]:
    """Output name → state key (default: sr → 'sr'; encode: z, nll, logdet under their own names)."""
    return dict(params.outputs) or dict(MODE_OUTPUTS[params.mode])


def injector_reads(params: GeneratorInjectorParams) -> list[str]:
    """The state keys the generator injector reads: its mode's inputs (decode: also latents/temperature if wired)."""
    used = [*MODE_INPUTS[params.mode], *(("latents", "temperature") if params.mode == "decode" else ())]
    return [params.inputs[name] for name in used if name in params.inputs]


def injector_writes(params: GeneratorInjectorParams) -> list[str]:
    """The state keys the generator injector writes (outputs its mode does not produce are never written)."""
    return [key for out, key in injector_outputs(params).items() if out in MODE_OUTPUTS[params.mode]]


class GeneratorInjector:
    """Runs ``networks[params.network]`` on state entries and returns the named outputs."""

    def __init__(self, params: GeneratorInjectorParams, networks: Mapping[str, nn.Module]) -> None:
        if params.network not in networks:
            raise UserError(
                f"generator injector: unknown network {params.network!r} "
                f"(available: {', '.join(sorted(networks))})"
            )
        self.params = params
        self.net = networks[params.network]
        self.outputs = injector_outputs(params)
        if params.mode in ("encode", "decode") and not (
            hasattr(self.net, "encode") and hasattr(self.net, "decode")
        ):
            raise UserError(f"generator injector: network {params.network!r} is not a flow (mode {params.mode!r})")
        if params.mode == "rrdb" and not hasattr(self.net, "rrdb_forward"):
            raise UserError(f"generator injector: network {params.network!r} has no conditional RRDB (mode 'rrdb')")

    def _in(self, state: State, name: str) -> Any:
        return state_get(state, self.params.inputs[name], f"generator injector ({self.params.network})")

    def __call__(self, state: State, step: int) -> dict[str, Any]:
        p, net = self.params, self.net
        if p.mode == "forward":
            results: dict[str, Any] = {"sr": net(self._in(state, "lr"))}
        elif p.mode == "rrdb":
            results = {"sr": net.rrdb_forward(self._in(state, "lr"))}  # type: ignore[operator]
        elif p.mode == "encode":
            enc = net.encode(self._in(state, "hr"), self._in(state, "lr"), add_noise=p.add_noise)  # type: ignore[operator]
            results = {"z": enc.latents, "nll": enc.nll, "logdet": enc.logdet}
        else:
            latents = self._in(state, "latents") if "latents" in p.inputs else None
            temperature = self._in(state, "temperature") if "temperature" in p.inputs else p.temperature
            results = {"sr": net.decode(self._in(state, "lr"), latents=latents, temperature=temperature)}  # type: ignore[operator]
        return {key: results[out] for out, key in self.outputs.items() if out in results}


def build_generator_injector(params: GeneratorInjectorParams, networks: Mapping[str, nn.Module]) -> GeneratorInjector:
    return GeneratorInjector(params, networks)


# ----------------------------------------------------------------------------------------------------
# losses


class PixelLossParams(Params):
    pred: str = Field("sr", description="State key of the prediction.")
    target: str = Field("hq", description="State key of the target.")
    criterion: Literal["l1", "l2", "mse", "charbonnier"] = Field("l1", description="Distance.")
    eps: float = Field(1e-6, gt=0, description="charbonnier: sqrt((x-y)^2 + eps^2).")
    downscale: int = Field(
        1, ge=1,
        description="Downsample pred by this factor (MATLAB antialiased bicubic, as the data pipeline's LR) before "
                    "comparing: with target = 'lq', an LR-consistency loss.",
    )


class PixelLoss:
    """Mean l1 / l2 / charbonnier distance between two state entries (``downscale``: of the prediction
    bicubic-downsampled, e.g. a flow sample against the LR image it was drawn for)."""

    def __init__(self, params: PixelLossParams) -> None:
        self.params = params

    def __call__(self, state: State) -> Tensor:
        p = self.params
        pred = state_get(state, p.pred, "pixel loss")
        target = state_get(state, p.target, "pixel loss")
        if p.downscale > 1:
            pred = downsample(pred.float(), p.downscale, "bicubic", clamp=False)
        if pred.shape != target.shape:
            raise UserError(
                f"pixel loss: {p.pred!r}{f' downscaled {p.downscale}x' if p.downscale > 1 else ''} has shape "
                f"{tuple(pred.shape)} but {p.target!r} has {tuple(target.shape)}"
            )
        diff = pred.float() - target.float()
        if p.criterion == "l1":
            return diff.abs().mean()
        if p.criterion in ("l2", "mse"):
            return diff.pow(2).mean()
        return torch.sqrt(diff.pow(2) + p.eps**2).mean()


class DirectLossParams(Params):
    key: str = Field("nll", description="State key whose (mean) value is the loss.")


class DirectLoss:
    """A state entry (e.g. the flow's ``nll``) averaged over the batch and used as the loss."""

    def __init__(self, params: DirectLossParams) -> None:
        self.params = params

    def __call__(self, state: State) -> Tensor:
        value = state_get(state, self.params.key, "direct loss")
        if not isinstance(value, Tensor):
            raise UserError(f"direct loss: state {self.params.key!r} is not a tensor")
        return value.float().mean()


# ----------------------------------------------------------------------------------------------------
# hooks


@hookimpl
def restorekit_injectors() -> list[InjectorComponent[Any]]:
    return [
        InjectorComponent(
            name="generator",
            params=GeneratorInjectorParams,
            build=build_generator_injector,
            summary="Run a generator (forward / flow encode / flow decode / RRDB) on named state keys",
            reads=injector_reads,
            writes=injector_writes,
        )
    ]


@hookimpl
def restorekit_losses() -> list[LossComponent[Any]]:
    return [
        LossComponent(name="pixel", params=PixelLossParams, build=PixelLoss,
                      summary="l1 / l2 / charbonnier between two state keys", reads=lambda p: [p.pred, p.target]),
        LossComponent(name="direct", params=DirectLossParams, build=DirectLoss,
                      summary="A state key (e.g. nll) used as the loss", reads=lambda p: [p.key]),
    ]
