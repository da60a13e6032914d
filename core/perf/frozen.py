"""Frozen parts in their own layout: a submodule none of whose parameters trains (SRFlow's conditional RRDB in
training stage 2, a fixed network) runs forward only, so the layout a no-grad probe finds faster for it is the
faster one in training too — and it can differ from the layout of the trained rest (on this project's CPU the
RRDB is 1.2× faster in channels_last, the flow is not).

:class:`FrozenLayouts` (owned by the run: the trainer's freeze rules) puts each such part in that layout at its first call; what it returns comes back in its
input's layout, so the rest of the network sees the tensors it always saw. Call its ``update`` again whenever
``requires_grad`` changes: a part that trains again goes back to the default layout."""

from __future__ import annotations

import weakref
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from ..nested import map_tensors
from .layout import PROBE_MIN_WEIGHTS, choose_layout, to_layout


def frozen_parts(model: nn.Module, min_weights: int = PROBE_MIN_WEIGHTS) -> list[tuple[str, nn.Module]]:
    """The largest submodules of ``model`` (``model`` itself included) that have parameters, none of which
    requires a gradient, and at least ``min_weights`` convolution weights; ``(name, module)``, ``""`` for
    ``model``."""
    found: list[tuple[str, nn.Module]] = []

    def visit(name: str, m: nn.Module) -> None:
        params = list(m.parameters())
        if not params:
            return
        if not any(p.requires_grad for p in params):
            if sum(p.numel() for p in params if p.dim() == 4) >= min_weights:
                found.append((name, m))
            return
        for child_name, child in m.named_children():
            visit(f"{name}.{child_name}" if name else child_name, child)

    visit("", model)
    return found


def _first_image(args: tuple[Any, ...]) -> Tensor | None:
    return next((a for a in args if isinstance(a, Tensor) and a.dim() == 4), None)


def _nchw(t: Tensor) -> Tensor:
    return t.contiguous() if t.dim() == 4 else t


def _restore_output(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Any:
    """A channels_last part called with an NCHW image returns NCHW tensors (nested outputs included)."""
    x = _first_image(args)
    if x is not None and x.is_contiguous() and not x.is_contiguous(memory_format=torch.channels_last):
        return map_tensors(_nchw, out)
    return None


class FrozenLayouts:
    """The layouts of one model's frozen parts: :meth:`update` gives each frozen part of the model
    (:func:`frozen_parts`) the layout :func:`~.layout.choose_layout` finds faster for it, probed on its first real
    input (a crop of it, in eval mode, without gradients) when it is next called — unless that input requires a
    gradient (a frozen network the loss differentiates through keeps the default layout). Its outputs are
    returned in the input's layout. Parts that train again go back to the default layout. ``chosen``: the
    layouts chosen so far (``{submodule name: layout}``, filled at first calls)."""

    def __init__(self, min_weights: int = PROBE_MIN_WEIGHTS) -> None:
        self.min_weights = min_weights
        self.modules: dict[str, "weakref.ref[nn.Module]"] = {}  # weak: a part may be the model
        self.chosen: dict[str, str] = {}
        self.hooks: dict[str, RemovableHandle] = {}  # the probe hook, then the output hook

    def _unhook(self, name: str) -> None:
        h = self.hooks.pop(name, None)
        if h is not None:
            h.remove()

    def _settle(self, name: str, module: nn.Module, choice: str) -> None:
        self._unhook(name)
        to_layout(module, choice)
        self.chosen[name] = choice
        if choice == "channels_last":
            self.hooks[name] = module.register_forward_hook(_restore_output, with_kwargs=True)

    def _chooser(self, name: str) -> Callable[..., None]:
        def pre_hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            ref = self.modules.get(name)
            if ref is None or ref() is not module:
                return  # a deep copy of the part (e.g. an EMA model) carries this hook along: not ours to settle
            self._unhook(name)  # before the probe calls the module
            x = _first_image(args)
            grads = any(isinstance(a, Tensor) and a.requires_grad for a in (*args, *kwargs.values()))
            choice = "contiguous"
            if x is not None and args[0] is x and not grads:
                rest = args[1:]
                was_training = module.training
                module.eval()  # the probe must not update BatchNorm statistics or draw dropout masks
                try:
                    choice = choose_layout(module, x, forward=lambda inp: module(inp, *rest, **kwargs),
                                           min_weights=self.min_weights)
                finally:
                    module.train(was_training)
            self._settle(name, module, choice)

        return pre_hook

    def update(self, model: nn.Module) -> dict[str, str]:
        """Follow ``model``'s frozen parts as they are now; returns :attr:`chosen` (live)."""
        parts = dict(frozen_parts(model, self.min_weights))
        for name, ref in list(self.modules.items()):
            m = ref()
            if m is None or parts.get(name) is not m:
                self._unhook(name)
                if self.chosen.pop(name, None) == "channels_last" and m is not None:
                    to_layout(m, "contiguous")
        self.modules = {name: weakref.ref(m) for name, m in parts.items()}
        for name, m in parts.items():
            if name in self.chosen:
                self._settle(name, m, self.chosen[name])
            else:
                self._unhook(name)
                self.hooks[name] = m.register_forward_pre_hook(self._chooser(name), with_kwargs=True)
        return self.chosen


__all__ = ["FrozenLayouts", "frozen_parts"]
