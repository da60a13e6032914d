"""A loss: a callable ``loss(state) -> 0-d tensor`` built from its params."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from restorekit import Params, State, state_get
from torch import Tensor


class GradientLossParams(Params):
    pred: str = Field("sr", description="State key of the prediction.")
    target: str = Field("hq", description="State key of the target.")
    criterion: Literal["l1", "l2"] = Field("l1", description="Distance between the gradients.")


def _gradients(x: Tensor) -> tuple[Tensor, Tensor]:
    return x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]


class GradientLoss:
    """Mean distance between the horizontal and vertical finite differences of ``pred`` and ``target``: it
    rewards sharp, well-placed edges (pair it with a pixel loss)."""

    def __init__(self, params: GradientLossParams) -> None:
        self.params = params

    def __call__(self, state: State) -> Tensor:
        pred = state_get(state, self.params.pred, "gradient loss")
        target = state_get(state, self.params.target, "gradient loss")
        total = pred.new_zeros(())
        for a, b in zip(_gradients(pred.float()), _gradients(target.float())):
            diff = a - b
            total = total + (diff.abs().mean() if self.params.criterion == "l1" else diff.pow(2).mean())
        return total / 2
