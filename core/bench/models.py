"""The models ``restore-run --benchmark`` measures (:func:`resolve_models`: component names with params,
catalogue names, checkpoint files) and what every path feeds them: latent sets and the training loss."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from ..components import FlowModel, Switches
from ..errors import UserError
from ..latents import sample_latents


@dataclass
class BenchModel:
    name: str
    module: nn.Module
    flow: bool
    switches: Switches = field(default_factory=Switches)
    """What the generator declares (its inference fast paths, the parts its schedule keeps frozen)."""


def parse_model_arg(text: str) -> tuple[str, dict[str, Any]]:
    """``name`` or ``name:{k = v, ...}`` (a TOML inline table of params) → (name, params)."""
    name, sep, rest = text.partition(":")
    if not sep or not rest.strip().startswith("{"):
        return text, {}
    try:
        params = tomllib.loads(f"p = {rest.strip()}")["p"]
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"--model {text}: the params after ':' must be a TOML inline table ({exc})") from None
    return name, dict(params)


def resolve_models(names: Sequence[str], registry: Any) -> tuple[list[BenchModel], list[str]]:
    """Build the models to measure; returns them and one-line notes about generators that were skipped."""
    from ..plan import validate_params

    notes: list[str] = []
    out: list[BenchModel] = []
    generators = registry.names("generator")
    wanted = list(names) or list(generators)
    for text in wanted:
        name, params = parse_model_arg(text)
        comp = None
        if name in generators:
            comp = registry.get("generator", name).component
            try:
                parsed = validate_params(comp.params, params, "--model", f"{name}.params")
            except UserError:
                if names:
                    raise
                notes.append(f"{name}: skipped (no default params)")
                continue
            torch.manual_seed(0)
            module = comp.build(parsed)
            if isinstance(module, FlowModel) and isinstance(module, nn.Module):
                _exercise_flow(module)
            label = name if not params else f"{name}:{_short(params)}"
        elif Path(name).is_file() or not params:
            from ..api import resolve
            from ..plan import build_generator

            gen = resolve(name, registry=registry, **params)
            comp, module = gen.component, build_generator(gen)
            label = Path(name).name if Path(name).is_file() else name
        else:
            raise UserError(f"--model {text}: {name!r} is not an installed generator (params need a component name)")
        if not isinstance(module, nn.Module):
            notes.append(f"{label}: skipped (not an nn.Module)")
            continue
        out.append(BenchModel(label, module.eval(), isinstance(module, FlowModel), comp.switches))
    return out, notes


def _exercise_flow(module: nn.Module, scale_of_noise: float = 2e-3) -> None:
    """Make a freshly built flow compute something: its data-dependent layers initialised from one training-mode
    encode of a smooth random image, and its zero-initialised weights (a fresh flow's couplings are the identity)
    given N(0, scale²) values. Timing is unchanged; the rows' ``max|diff|`` then compares real outputs."""
    gen = torch.Generator().manual_seed(0)
    m = int(getattr(module, "size_multiple", 1) or 1)
    scale = int(getattr(module, "scale", 1) or 1)
    side = 8 * m
    lr = torch.nn.functional.interpolate(torch.rand(2, 3, side // 2, side // 2, generator=gen), size=(side, side),
                                         mode="bilinear", align_corners=False)
    hr = torch.nn.functional.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False).clamp(0, 1)
    zero = [p for name, p in module.named_parameters() if name.endswith("weight") and not p.detach().any()]
    with torch.no_grad():
        module.train()
        try:
            module.encode(hr, lr)  # type: ignore[operator]
        except (RuntimeError, ValueError):  # a flow that wants other sizes: measured as built
            return
        finally:
            module.eval()
        for p in zero:
            p.normal_(0.0, scale_of_noise, generator=gen)


def _short(params: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in params.items()).replace(" ", "")


def _draw_sets(model: Any, lr: Tensor, n: int, temperature: float, seed: int) -> list[list[Tensor]]:
    """``n`` latent sets for ``lr``, drawn by restorekit's one sampler (:func:`restorekit.sample_latents`, the
    official level order) from one generator seeded with ``seed``, so that the plain and the fast path decode the
    very same sets, drawn the way ``restore-run`` and a flow's ``decode(generator=...)`` draw them."""
    gen = torch.Generator().manual_seed(seed)
    shapes = model.latent_shapes(tuple(lr.shape))
    b = int(lr.shape[0])
    return [sample_latents(shapes, temperature, gen, batch=b, device=lr.device) for _ in range(n)]


def _train_loss(model: Any, hr: Tensor, lr: Tensor, flow: bool) -> Tensor:
    if flow:
        return model.encode(hr, lr).nll.mean()
    return (model(lr) - hr).abs().mean()


def _train_batch(batch: int, side: int, scale: int, seed: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """The (lr, hr) batch every training step of a case trains on (generator seeded with ``seed + 1``)."""
    gen = torch.Generator().manual_seed(seed + 1)
    lr = torch.rand(batch, 3, side, side, generator=gen).to(device)
    hr = torch.rand(batch, 3, side * scale, side * scale, generator=gen).to(device)
    return lr, hr


def _train_autocast(device: torch.device, precision: str) -> torch.autocast:
    """Mixed precision of a training step: bf16/fp16 autocast, or autocast off for fp32/tf32."""
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16,
                          enabled=precision in ("bf16", "fp16"))


def _plain_step(module: nn.Module, hr: Tensor, lr: Tensor, flow: bool, amp: torch.autocast) -> Callable[[], Tensor]:
    """The plain training step the fast one is measured against: NCHW, ``zero_grad(set_to_none=False)``, the
    single-tensor Adam."""
    opt = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=1e-5, foreach=False)

    def step() -> Tensor:
        opt.zero_grad(set_to_none=False)
        with amp:
            loss = _train_loss(module, hr, lr, flow)
        loss.backward()
        opt.step()
        return loss.detach()

    return step


def scheduled_frozen(model: nn.Module, switches: Switches) -> set[str]:
    """The parameters the generator's schedule keeps frozen (``switches.frozen_in_training``: SRFlow's conditional
    RRDB in stage 2, as in the official schedule)."""
    prefixes = switches.frozen_in_training
    return {n for n, _ in model.named_parameters() if prefixes and n.startswith(prefixes)}


def freeze_as_scheduled(model: nn.Module, switches: Switches) -> bool:
    """Freeze :func:`scheduled_frozen`'s parameters; whether there were any."""
    held = scheduled_frozen(model, switches)
    for name, p in model.named_parameters():
        if name in held:
            p.requires_grad_(False)
    return bool(held)


__all__ = ["BenchModel", "parse_model_arg", "resolve_models"]
