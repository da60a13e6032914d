"""Which parameters train: frozen networks, partial training (``trainable_only``, ``steps.<name>.only``) and the
``unfreeze`` rules that switch a network to full training after some steps or when a metric stalls."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Mapping

import torch
from torch import nn

from ..errors import UserError
from ..perf import FrozenLayouts
from ..runtime import NetworkView
from ..spec import NetworkSpec, UnfreezeSpec

if TYPE_CHECKING:
    from ..plan import StepPlan
    from .logging import RunLog

Mode = Literal["full", "partial", "frozen", "fixed"]


@dataclass
class Freeze:
    """Which parameters of a network train: ``full`` all, ``partial`` those under ``trainable_only``,
    ``frozen`` none until its unfreeze rule fires, ``fixed`` none ever (no step optimises it)."""

    name: str
    mode: Mode
    prefixes: tuple[str, ...] = ()
    rule: UnfreezeSpec | None = None
    best: float | None = None
    bad: int = 0
    unfrozen_at: int | None = None
    layouts: FrozenLayouts = field(default_factory=FrozenLayouts, repr=False, compare=False)

    def state_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "best": self.best, "bad": self.bad, "unfrozen_at": self.unfrozen_at}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.mode = state["mode"]
        self.best = state["best"]
        self.bad = int(state["bad"])
        self.unfrozen_at = state["unfrozen_at"]

    def trains(self, param_name: str) -> bool:
        if self.mode == "full":
            return True
        if self.mode == "partial":
            return param_name.startswith(self.prefixes)
        return False

    def apply(self, net: nn.Module) -> int:
        """Set ``requires_grad``; BatchNorm layers with no trained parameter go to eval mode; frozen parts take
        their faster layout at their next call (:class:`restorekit.perf.FrozenLayouts`; parts that train again go
        back to the default one). Returns the number of trained parameters."""
        count = 0
        for pname, p in net.named_parameters():
            p.requires_grad_(self.trains(pname))
            count += p.numel() if p.requires_grad else 0
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                params = list(m.parameters(recurse=False))
                trained = any(p.requires_grad for p in params) if params else self.mode == "full"
                m.train(trained and net.training)
        self.layouts.update(net)
        return count


def _check_prefixes(prefixes: Any, names: list[str], source: str, field: str) -> None:
    for prefix in prefixes:
        if not any(n.startswith(prefix) for n in names):
            tops = sorted({n.split(".", 1)[0] for n in names})
            raise UserError.at(source, field, f"no parameter name starts with {prefix!r} "
                                              f"(top-level modules: {', '.join(tops[:12])})")


def make_freeze(name: str, spec: NetworkSpec, optimised: bool, net: nn.Module, source: str) -> Freeze:
    """The initial :class:`Freeze` of a network from its spec (prefixes checked against the parameters)."""
    if not optimised:
        return Freeze(name, "fixed")
    prefixes: tuple[str, ...] = ()
    if spec.trainable_only:
        _check_prefixes(spec.trainable_only, [n for n, _ in net.named_parameters()],
                        source, f"networks.{name}.trainable_only")
        prefixes = tuple(spec.trainable_only)
        mode: Mode = "partial"
    elif not spec.trainable:
        mode = "frozen"
    else:
        mode = "full"
    return Freeze(name, mode, prefixes, spec.unfreeze)


def check_only(steps: list[StepPlan], networks: Mapping[str, nn.Module], source: str) -> None:
    """Every ``steps.<name>.only`` prefix names parameters of the step's networks."""
    for sp in steps:
        names = [pn for n in sp.spec.networks for pn, _ in networks[n].named_parameters()]
        _check_prefixes(getattr(sp.spec, "only", None) or [], names, source, f"steps.{sp.name}.only")


def excluded_params(sp: StepPlan, networks: Mapping[str, nn.Module]) -> list[nn.Parameter]:
    """The parameters of the step's networks that ``steps.<name>.only`` excludes from its updates."""
    prefixes = getattr(sp.spec, "only", None)
    if not prefixes:
        return []
    return [
        p for n in sp.spec.networks for pname, p in networks[n].named_parameters()
        if not pname.startswith(tuple(prefixes))
    ]


class Unfreezer:
    """Applies the ``unfreeze`` rules of every network: step rules before and after each iteration, metric
    rules after each validation. Unfreezing re-wraps a network's DDP view over its new trainable parameters."""

    def __init__(self, freeze: dict[str, Freeze], networks: Mapping[str, nn.Module], views: Mapping[str, Any],
                 device: torch.device, total: int, source: str) -> None:
        self.freeze, self.networks, self.views = freeze, networks, views
        self.device, self.total, self.source = device, total, source

    def describe(self, log: RunLog) -> None:
        """Console notes on networks that never unfreeze and rules with no effect."""
        for fr in self.freeze.values():
            if fr.mode in ("partial", "frozen") and fr.rule is None:
                what = "only " + ", ".join(fr.prefixes) if fr.mode == "partial" else "nothing"
                log.console(f"networks.{fr.name}: trains {what} (no unfreeze rule)")
            elif fr.mode in ("full", "fixed") and fr.rule is not None and fr.unfrozen_at is None:
                why = "it trains fully from the start" if fr.mode == "full" else "no step optimises it"
                log.console(f"networks.{fr.name}.unfreeze has no effect: {why}")

    def step_rules(self, step: int, log: RunLog) -> None:
        for fr in self.freeze.values():
            rule = fr.rule
            if rule is None or fr.mode in ("full", "fixed"):
                continue
            if rule.after_steps is not None and step >= rule.after_steps:
                self._unfreeze(fr, f"after_steps = {rule.after_steps}", step, log)
            elif rule.after_fraction is not None and step >= int(math.ceil(rule.after_fraction * self.total)):
                self._unfreeze(fr, f"after_fraction = {rule.after_fraction}", step, log)

    def metric_rules(self, metrics: Mapping[str, float], step: int, log: RunLog) -> None:
        for fr in self.freeze.values():
            rule = fr.rule
            if rule is None or rule.metric is None or fr.mode in ("full", "fixed"):
                continue
            if rule.metric not in metrics:
                raise UserError.at(
                    self.source, f"networks.{fr.name}.unfreeze.metric", f"{rule.metric!r} is not a validation metric "
                    f"(available: {', '.join(sorted(k for k in metrics if not k.startswith('_')))})"
                )
            value = float(metrics[rule.metric])
            better = (
                fr.best is None
                or (rule.metric_mode == "min" and value < fr.best - rule.min_delta)
                or (rule.metric_mode == "max" and value > fr.best + rule.min_delta)
            )
            if better:
                fr.best, fr.bad = value, 0
            else:
                fr.bad += 1
            if fr.bad >= rule.patience:
                by = f" by more than {rule.min_delta:g}" if rule.min_delta > 0 else ""
                plural = "s" if fr.bad != 1 else ""
                reason = f"{rule.metric} did not improve{by} for {fr.bad} validation{plural} (best {fr.best:.6g})"
                self._unfreeze(fr, reason, step, log)

    def _unfreeze(self, fr: Freeze, reason: str, step: int, log: RunLog) -> None:
        before = fr.mode
        fr.mode = "full"
        fr.unfrozen_at = step
        count = fr.apply(self.networks[fr.name])
        view = self.views[fr.name]
        if isinstance(view, NetworkView):
            view.wrap(self.device)
        log.event(
            step, "unfreeze",
            f"networks.{fr.name}: {before} -> all {count:,} parameters trainable ({reason})",
            network=fr.name, reason=reason,
        )


__all__ = ["Freeze", "Mode", "Unfreezer", "check_only", "excluded_params", "make_freeze"]
