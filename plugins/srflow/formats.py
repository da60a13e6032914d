"""SRFlow checkpoint layouts: detection, hyper-parameters read off the tensors, key conversion.

Accepted: the official SRFlow names (``RRDB.RRDB_trunk.N.RDBk.convj`` ...) and DL-Art-School's, whose RRDB part
uses BasicSR names (``RRDB.body.N.rdbk.convj``, ``RRDB.conv_body``, ``RRDB.conv_upM``, ``RRDB.conv_hr``); the flow
part (``flowUpsamplerNet.*``) is identical in both. ``module.`` prefixes are stripped by the core beforehand.

Read off the tensors: scale (number of ``upconv`` stages), ``in_nc``/``out_nc``, ``nf``, ``nb``, ``gc``, ``L``, ``K``,
``additional_flow_no_affine``, ``hidden_channels``, the split levels (``split_correct_levels``) and consume ratio,
and the *number* of stacked RRDB blocks (from the conditional width ``nf·(1 + n)``). Not readable: ``quant``,
``affine_eps``, ``split_logs_eps`` (the official defaults apply) and the stacked block *indices*. For those the choice
is: the official indices when scale, ``nb`` and the count match a published model (:data:`PRESETS`); ``0..nb-1``
when every block is stacked (e.g. the ``srflow_x4`` fixture); otherwise nothing is guessed — the params default
(``[1, 8, 15, 22]``) or the user's ``stack_blocks`` apply, and :func:`convert_state_dict` rejects a list whose
length differs from the file's count. A wrong guess would load without error and silently give wrong outputs, so
for unpublished geometries ``stack_blocks`` should be given explicitly.
"""

from __future__ import annotations

import re
from typing import Any

from restorekit import StateDict, UserError
from restorekit_rrdb import params_from_state_dict as rrdb_params
from restorekit_rrdb import to_official_names
from torch import Tensor

from .params import PRESETS, SRFlowParams

RRDB_PREFIX = "RRDB."
FLOW_PREFIX = "flowUpsamplerNet."
_LAYER = re.compile(r"^flowUpsamplerNet\.layers\.(\d+)\.(.+)$")


def detect(sd: StateDict) -> bool:
    """An SRFlow checkpoint has flow layers and an RRDB under ``RRDB.``."""
    return any(k.startswith(FLOW_PREFIX) for k in sd) and any(k.startswith(RRDB_PREFIX) for k in sd)


def _rrdb_part(sd: StateDict) -> dict[str, Tensor]:
    return {k[len(RRDB_PREFIX) :]: v for k, v in sd.items() if k.startswith(RRDB_PREFIX)}


def _layer_kinds(sd: StateDict) -> list[str]:
    """'squeeze' | 'step' | 'cond' | 'split' for every index of ``flowUpsamplerNet.layers``."""
    keys: dict[int, set[str]] = {}
    for k in sd:
        m = _LAYER.match(k)
        if m:
            keys.setdefault(int(m.group(1)), set()).add(m.group(2))
    if not keys:
        raise UserError("srflow checkpoint: no flowUpsamplerNet.layers.* tensors")
    kinds = []
    for i in range(max(keys) + 1):
        names = keys.get(i, set())
        if not names:
            kinds.append("squeeze")
        elif "conv.weight" in names:
            kinds.append("split")
        elif any(n.startswith("affine.") for n in names):
            kinds.append("cond")
        else:
            kinds.append("step")
    return kinds


def _structure(sd: StateDict) -> dict[str, Any]:
    kinds = _layer_kinds(sd)
    levels: list[list[str]] = []
    for kind in kinds:
        if kind == "squeeze":
            levels.append([])
        elif not levels:
            raise UserError("srflow checkpoint: flow layers do not start with a squeeze")
        else:
            levels[-1].append(kind)
    L = len(levels)
    K = levels[0].count("cond")
    A = levels[0].count("step")
    splits = sum(lv.count("split") for lv in levels)
    if any(lv.count("cond") != K or lv.count("step") != A for lv in levels):
        raise UserError("srflow checkpoint: levels differ in their number of flow steps")
    return {"L": L, "K": K, "additional_flow_no_affine": A, "splits": splits, "kinds": kinds}


def params_from_state_dict(sd: StateDict) -> dict[str, Any]:
    """Architecture params read off an SRFlow state dict (official or DL-Art-School names)."""
    rr = rrdb_params(to_official_names(_rrdb_part(sd)))
    out: dict[str, Any] = {k: rr[k] for k in ("in_nc", "out_nc", "nf", "nb", "gc", "scale") if k in rr}
    st = _structure(sd)
    out.update(L=st["L"], K=st["K"], additional_flow_no_affine=st["additional_flow_no_affine"])
    out["split_correct_levels"] = st["splits"] > max(0, st["L"] - 2)
    i = st["kinds"].index("cond")
    w = sd[f"flowUpsamplerNet.layers.{i}.affine.fFeatures.0.weight"]
    out["hidden_channels"] = int(w.shape[0])
    cond = int(w.shape[1])
    nf = out.get("nf", 64)
    n_stack = cond // nf - 1
    for preset in PRESETS.values():
        if preset["nb"] == out.get("nb") and preset["scale"] == out.get("scale") and len(preset["stack_blocks"]) == n_stack:
            out["stack_blocks"] = list(preset["stack_blocks"])
            break
    else:
        if n_stack == out.get("nb"):
            out["stack_blocks"] = list(range(n_stack))
    split_at = st["kinds"].index("split") if "split" in st["kinds"] else None
    if split_at is not None:
        sw = sd[f"flowUpsamplerNet.layers.{split_at}.conv.weight"]
        consume, keep = int(sw.shape[0]) // 2, int(sw.shape[1])
        if round((consume + keep) * 0.5) != consume:
            out["split_consume_ratio"] = consume / (consume + keep)
    ratio = out.get("scale", 4) / 2 ** st["L"]
    if ratio <= 0.5:
        out["fea_up0"] = True
    if ratio <= 0.25:
        out["fea_up_minus1"] = True
    return out


def _check(params: SRFlowParams, name: str, file_value: Any, what: str) -> None:
    if getattr(params, name) != file_value:
        raise UserError.at(None, name, f"checkpoint has {what.format(file_value)}, params say {getattr(params, name)}")


def convert_state_dict(sd: StateDict, params: SRFlowParams) -> dict[str, Tensor]:
    """Rename DL-Art-School RRDB keys to the official names and check the file against ``params``."""
    rr_official = to_official_names(_rrdb_part(sd))
    rr = rrdb_params(rr_official)
    _check(params, "nb", rr["nb"], "{} RRDB blocks")
    _check(params, "nf", rr["nf"], "RRDB width {}")
    _check(params, "gc", rr["gc"], "growth channels {}")
    _check(params, "scale", rr["scale"], "scale {}")
    st = _structure(sd)
    _check(params, "L", st["L"], "{} levels")
    _check(params, "K", st["K"], "{} steps per level")
    _check(params, "additional_flow_no_affine", st["additional_flow_no_affine"], "{} additional steps per level")
    i = st["kinds"].index("cond")
    w = sd[f"flowUpsamplerNet.layers.{i}.affine.fFeatures.0.weight"]
    _check(params, "hidden_channels", int(w.shape[0]), "coupling width {}")
    if int(w.shape[1]) % params.nf:
        raise UserError(
            f"nf: the checkpoint's conditional width {int(w.shape[1])} is not a multiple of nf = {params.nf}"
        )
    n_stack = int(w.shape[1]) // params.nf - 1
    if len(params.stack_blocks) != n_stack:
        raise UserError(
            f"stack_blocks: checkpoint stacks {n_stack} RRDB blocks, params list {len(params.stack_blocks)} "
            f"({params.stack_blocks}); the indices cannot be read from weights, give params.stack_blocks"
        )
    splits = max(0, params.L - 1 if params.split_correct_levels else params.L - 2)
    if st["splits"] != splits:
        raise UserError(
            f"split_correct_levels: checkpoint splits at {st['splits']} levels, params say {splits} "
            f"(split_correct_levels = {str(params.split_correct_levels).lower()})"
        )
    if splits:
        sw = sd[f"flowUpsamplerNet.layers.{st['kinds'].index('split')}.conv.weight"]
        consume, channels = int(sw.shape[0]) // 2, int(sw.shape[0]) // 2 + int(sw.shape[1])
        if int(round(channels * params.split_consume_ratio)) != consume:
            raise UserError(
                f"split_consume_ratio: checkpoint factors out {consume} of {channels} channels at level 1, "
                f"params say {params.split_consume_ratio}"
            )
    out = {RRDB_PREFIX + k: v for k, v in rr_official.items()}
    out.update({k: v for k, v in sd.items() if not k.startswith(RRDB_PREFIX)})
    return out
