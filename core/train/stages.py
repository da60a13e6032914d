"""The training story told: which ``[steps.*]`` run (a *stage*: the set of active steps, switched by their
``after``/``before``/``every`` schedules) and which parts of each network they train. Each stage start is one
console line and one ``metrics.jsonl`` event (``stage``); parts a new stage stops or starts training are one
``freeze`` / ``unfreeze`` event each. The image grids ask which parts have not trained yet."""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence

from torch import nn

from .schedules import active

if TYPE_CHECKING:  # pragma: no cover
    from ..plan import StepPlan
    from .logging import RunLog


def parts(names: Sequence[str] | set[str], module: nn.Module) -> str:
    """Parameter names as their top-level parts with parameter counts: ``RRDB (16,697,987)``."""
    counts: dict[str, int] = {}
    sizes = dict(module.named_parameters())
    for n in sorted(names):
        top = n.split(".", 1)[0]
        counts[top] = counts.get(top, 0) + sizes[n].numel()
    return ", ".join(f"{k} ({v:,})" for k, v in counts.items())


class Stages:
    """Follows the active steps from one iteration to the next and logs every change."""

    def __init__(self, steps: Sequence["StepPlan"], networks: Mapping[str, nn.Module]) -> None:
        self.steps, self.networks = list(steps), networks
        self.current: tuple[str, ...] | None = None
        self.trained: dict[str, set[str]] = {}

    def trained_by(self, names: Sequence[str]) -> dict[str, set[str]]:
        """Parameter names each network has trained by the steps ``names`` (``steps.<s>.only`` respected)."""
        out: dict[str, set[str]] = {}
        for sp in self.steps:
            if sp.name not in names:
                continue
            only = tuple(getattr(sp.spec, "only", None) or ())
            for net in sp.spec.networks:
                got = out.setdefault(net, set())
                got.update(n for n, _ in self.networks[net].named_parameters() if not only or n.startswith(only))
        return out

    def update(self, step: int, log: "RunLog") -> None:
        """Before iteration ``step``: a new set of active steps is a stage start (plus freeze/unfreeze events)."""
        names = tuple(sp.name for sp in self.steps if active(sp.spec, step))  # type: ignore[arg-type]
        if names == self.current:
            return
        trained = self.trained_by(names)
        what = "; ".join(f"networks.{net} trains {parts(t, self.networks[net])}" for net, t in trained.items())
        title = ", ".join(f"steps.{n}" for n in names) if names else "no step"
        log.event(step, "stage", f"stage: {title} ({what or 'nothing trains'})", steps=list(names))
        if self.current is not None:
            for net in sorted(set(trained) | set(self.trained)):
                old, new = self.trained.get(net, set()), trained.get(net, set())
                if old - new:
                    log.event(step, "freeze", f"networks.{net}: {parts(old - new, self.networks[net])} frozen",
                              network=net, by="steps")
                if new - old:
                    log.event(step, "unfreeze", f"networks.{net}: {parts(new - old, self.networks[net])} trains "
                              "from now", network=net, by="steps")
        self.current, self.trained = names, trained

    def untrained(self, network: str, step: int) -> list[str]:
        """The top-level parts of ``network`` that no step has trained in iterations ``0 .. step-1``."""
        if not any(network in sp.spec.networks for sp in self.steps):
            return []  # not trained by this run (pretrained or fixed): nothing to mark
        ran = [sp.name for sp in self.steps if any(active(sp.spec, j) for j in range(step))]  # type: ignore[arg-type]
        done = self.trained_by(ran).get(network, set())
        module = self.networks[network]
        tops: dict[str, bool] = {}
        for n, _ in module.named_parameters():
            top = n.split(".", 1)[0]
            tops[top] = tops.get(top, False) or n in done
        return [t for t, any_trained in tops.items() if not any_trained]


__all__ = ["Stages", "parts"]
