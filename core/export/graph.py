"""What a generator offers for export: :class:`ExportGraph` (a traceable module, its input and output names, how to
make its inputs from an LR batch, and the eager computation it must equal) and the :class:`Exportable` protocol.

A plain generator (``model(lr)``) needs nothing: :func:`graph_for` exports the module itself. A flow draws its noise
inside ``decode`` and inverts 1×1 convolutions there, neither of which a graph can hold, so a flow exports only
through its own ``export_graph(kind)``; a module that cannot export at all says why by raising
:class:`restorekit.UserError` from ``export_graph``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping, Protocol, runtime_checkable

from torch import Tensor, nn

from ..components import FlowModel
from ..errors import UserError

GraphKind = Literal["forward", "sample", "mean", "encode"]
GRAPH_KINDS: tuple[str, ...] = ("forward", "sample", "mean", "encode")
"""``forward``: ``lr → sr`` (plain generators); flows: ``sample`` (``lr, *latents → sr``, latents in the order of
``latent_shapes``), ``mean`` (``lr → sr`` at temperature 0, no latent inputs), ``encode`` (``hr, lr → *latents``)."""


@dataclass(frozen=True, kw_only=True)
class ExportGraph:
    """One exportable computation of a generator.

    * ``module``: an ``nn.Module`` whose ``forward(*inputs)`` returns a tensor or a tuple of tensors; it must trace
      with ``torch.export`` (no Python branches on tensor values, no random draws, no in-place tricks);
    * ``inputs`` / ``outputs``: their names, in ``forward``'s order (``lr`` first where there is one); every input
      is ``(B, C, H, W)`` with dynamic batch, height and width;
    * ``make_inputs(lr)``: the whole input tuple for an LR batch (zeros or any values for latents): what the
      exporter traces with and what parity checks feed;
    * ``reference(*inputs)``: the eager computation the graph must equal (e.g. ``model.decode(lr, latents)``);
    * ``precisions``: what the graph can be exported in (``fp32``, ``fp16``);
    * ``info``: extra JSON-able entries for the sidecar (e.g. a flow's temperature convention).
    """

    kind: str
    module: nn.Module
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    make_inputs: Callable[[Tensor], tuple[Tensor, ...]]
    reference: Callable[..., Any]
    precisions: tuple[str, ...] = ("fp32", "fp16")
    info: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class Exportable(Protocol):
    """A generator module that builds its own export graphs: ``export_graph(kind)`` returns an :class:`ExportGraph`
    for ``kind`` (one of :data:`GRAPH_KINDS`), or raises :class:`restorekit.UserError` — one line saying why — for a
    kind it cannot export. Flows must offer it (``sample`` and ``mean``; ``encode`` optionally)."""

    def export_graph(self, kind: str) -> ExportGraph: ...


def default_kind(model: nn.Module, temperature: float | None = None) -> str:
    """``forward`` for a plain generator; for a flow ``mean`` at temperature 0, else ``sample``."""
    if not isinstance(model, FlowModel):
        return "forward"
    return "mean" if temperature is not None and float(temperature) == 0.0 else "sample"


def graph_for(model: nn.Module, kind: str | None = None, *, temperature: float | None = None,
              name: str = "model") -> ExportGraph:
    """The :class:`ExportGraph` of ``kind`` (default: :func:`default_kind`) for ``model``: its own ``export_graph``
    where it has one, else (plain generators only) the module itself as ``lr → sr``."""
    kind = kind or default_kind(model, temperature)
    if kind not in GRAPH_KINDS:
        raise UserError(f"{name}: unknown export graph {kind!r} (choose from {', '.join(GRAPH_KINDS)})")
    flow = isinstance(model, FlowModel)
    if isinstance(model, Exportable):
        graph = model.export_graph(kind)
        if not isinstance(graph, ExportGraph):
            raise UserError(f"{name}: export_graph({kind!r}) returned {type(graph).__name__}, not an ExportGraph")
        return graph
    if flow:
        raise UserError(f"{name}: cannot export: {type(model).__name__} is a flow without export_graph() (its decode "
                        "draws noise and inverts layers inside; the plugin must offer a traceable graph)")
    if kind != "forward":
        raise UserError(f"{name}: cannot export a {kind!r} graph: {type(model).__name__} is not a flow (only 'forward')")
    return ExportGraph(kind="forward", module=_Forward(copy.deepcopy(model).eval()), inputs=("lr",),
                       outputs=("sr",), make_inputs=lambda lr: (lr,), reference=model)


class _Forward(nn.Module):
    """``model.forward(lr)`` without the hooks registered on ``model`` itself (``restorekit.load``'s input-range
    warning reads tensor values, which a graph cannot branch on); hooks of its submodules still run."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, lr: Tensor) -> Tensor:
        return self.model.forward(lr)  # type: ignore[no-any-return]


__all__ = ["GRAPH_KINDS", "ExportGraph", "Exportable", "GraphKind", "default_kind", "graph_for"]
