"""HCFlow checkpoint layout: detection, hyper-parameters read off the tensors, the check against params.

The official save function stores the unwrapped network's ``state_dict()`` (``flow.layers.{i}.…`` for the main-flow
steps, ``flow.level{l}_condFlow.…`` per level); restorekit's module uses the same names, so nothing is renamed.
Read off the tensors: the scale (number of levels), steps per level (main + conditional), both coupling widths,
the RRDB counts, ``cond_features`` and ``cond_growth``. Not readable: ``quant`` (the published value for the scale
applies: 64 at 4x, 256 at 8x).
"""

from __future__ import annotations

import re
from typing import Any

from restorekit import StateDict, UserError

from .params import HCFlowParams

_MAIN = re.compile(r"^flow\.layers\.(\d+)\.permute\.weight$")
_COND = re.compile(r"^flow\.level(\d+)_condFlow\.")
_COND_STEP = re.compile(r"^flow\.level(\d+)_condFlow\.additional_flow_steps\.(\d+)\.")
_TRUNK = re.compile(r"^flow\.level0_condFlow\.RRDB_trunk([01])\.(\d+)\.")


def detect(sd: StateDict) -> bool:
    """An HCFlow SR checkpoint: main-flow layers under ``flow.layers.`` and a conditional flow per level."""
    return "flow.level0_condFlow.conv_first.weight" in sd and any(k.startswith("flow.layers.") for k in sd)


def params_from_state_dict(sd: StateDict) -> dict[str, Any]:
    """Architecture params read off an official HCFlow SR state dict."""
    levels = sorted({int(m.group(1)) for k in sd if (m := _COND.match(k))})
    if not levels or levels != list(range(len(levels))) or len(levels) not in (2, 3):
        raise UserError(f"hcflow checkpoint: conditional flows for levels {levels}; expected 0..1 (4x) or 0..2 (8x)")
    n = len(levels)
    main = [0] * n
    main_hidden = None
    for key, value in sd.items():
        m = _MAIN.match(key)
        if m:
            level = {12 * 2**i: i for i in range(n)}.get(int(value.shape[0]))
            if level is None:
                raise UserError(f"hcflow checkpoint: {key} has {int(value.shape[0])} channels, no level has that many")
            main[level] += 1
            main_hidden = _channels(sd, f"flow.layers.{m.group(1)}.affine.f.conv1.weight")
    cond_steps = [len({m.group(2) for k in sd if (m := _COND_STEP.match(k)) and int(m.group(1)) == l}) for l in levels]
    out: dict[str, Any] = {
        "scale": 2**n,
        "steps_per_level": [a + b for a, b in zip(main, cond_steps)],
        "cond_steps_per_level": cond_steps,
        "cond_features": _channels(sd, "flow.level0_condFlow.conv_first.weight"),
        "cond_rrdb_blocks": [len({m.group(2) for k in sd if (m := _TRUNK.match(k)) and m.group(1) == t}) for t in "01"],
    }
    if main_hidden is not None:
        out["main_coupling_hidden"] = main_hidden
    for l, steps in enumerate(cond_steps):
        if steps:
            key = f"flow.level{l}_condFlow.additional_flow_steps.0.affine.f.conv1.weight"
            out["cond_coupling_hidden"] = _channels(sd, key)
            break
    for trunk, count in enumerate(out["cond_rrdb_blocks"]):
        if count:
            out["cond_growth"] = _channels(sd, f"flow.level0_condFlow.RRDB_trunk{trunk}.0.RDB1.conv1.weight")
            break
    return out


def _channels(sd: StateDict, key: str) -> int:
    """Output channels of ``key``; a missing tensor (a truncated or foreign file) is one line naming it."""
    if key not in sd:
        raise UserError(f"hcflow checkpoint: {key} is missing (a truncated file, or not an HCFlow checkpoint)")
    return int(sd[key].shape[0])


def convert_state_dict(sd: StateDict, params: HCFlowParams) -> dict[str, Any]:
    """The file's tensors (official names are the module's), after checking the architecture against ``params``."""
    found = params_from_state_dict(sd)
    want = params.arch_kwargs()
    for name, value in found.items():
        if want.get(name) != value:
            raise UserError.at(None, name, f"checkpoint has {value}, params say {want.get(name)}")
    return dict(sd)


__all__ = ["convert_state_dict", "detect", "params_from_state_dict"]
