"""Checkpoint layouts of RRDB networks: detection, hyper-parameters read off the tensors, key conversion.

Three naming schemes are recognised; all are converted to the module names of :class:`~restorekit_rrdb.RRDBNet`
(the official SRFlow / new-ESRGAN names). Floating tensors are passed through unchanged (any dtype).

=================  ==============================  ==============================  ===============================
official name      ``"official"`` (SRFlow repo,    ``"basicsr"`` (BasicSR,         ``"esrgan_old"`` (old ESRGAN
                   new ESRGAN, BSRGAN)             Real-ESRGAN)                    sequential model, n upsamplings)
=================  ==============================  ==============================  ===============================
conv_first         ``conv_first``                  ``conv_first``                  ``model.0``
RRDB_trunk.N.RDBk  ``RRDB_trunk.N.RDBk.convj``     ``body.N.rdbk.convj``           ``model.1.sub.N.RDBk.convj.0``
.convj
trunk_conv         ``trunk_conv``                  ``conv_body``                   ``model.1.sub.<nb>``
upconvM            ``upconvM``                     ``conv_upM``                    ``model.<3M>``
HRconv             ``HRconv``                      ``conv_hr``                     ``model.<3n+2>``
conv_last          ``conv_last``                   ``conv_last``                   ``model.<3n+4>``
=================  ==============================  ==============================  ===============================

The old ESRGAN model is one flattened ``nn.Sequential``: ``model.0`` conv, ``model.1`` the shortcut block whose
``sub`` holds the nb RRDBs and the trunk conv, then per x2 stage (upsample, conv, LeakyReLU), then HRconv,
LeakyReLU, conv_last. Only convolutions have tensors, at these indices:

=======  ================  =========  ==============
scale    upsampling convs  HRconv     conv_last
=======  ================  =========  ==============
x1       —                 model.2    model.4
x2       model.3           model.5    model.7
x4       model.3, 6        model.8    model.10
x8       model.3, 6, 9     model.11   model.13
x16      model.3, 6, 9, 12 model.14   model.16
=======  ================  =========  ==============

Real-ESRGAN's x2 and x1 models (BasicSR names) feed a pixel-unshuffled input to a x4 network: ``conv_first``
takes 4·3 = 12 (x2) or 16·3 = 48 (x1) channels for RGB. A file with two upsampling convs and ``conv_first``
taking 4× or 16× as many channels as ``conv_last`` produces is read as such (``pixel_unshuffle = true``).

The long-skip wiring (``variant``) cannot be read from any file: standalone files are ESRGAN-wired unless the
params (e.g. preset ``srflow-rrdb``) say ``variant = "srflow"``. SRFlow checkpoints (``flowUpsamplerNet.*``
keys, RRDB under ``RRDB.``) are not RRDB files: :func:`detect` rejects them.
"""

from __future__ import annotations

import re
from typing import Any, Literal, Mapping

from restorekit import StateDict, UserError
from torch import Tensor

from .params import RRDBParams

Layout = Literal["official", "basicsr", "esrgan_old"]
LAYOUTS: tuple[Layout, ...] = ("official", "basicsr", "esrgan_old")

_REQUIRED: dict[Layout, tuple[str, ...]] = {
    "official": ("conv_first.weight", "RRDB_trunk.0.RDB1.conv1.weight", "trunk_conv.weight", "conv_last.weight"),
    "basicsr": ("conv_first.weight", "body.0.rdb1.conv1.weight", "conv_body.weight", "conv_last.weight"),
    "esrgan_old": ("model.0.weight", "model.1.sub.0.RDB1.conv1.0.weight"),
}
_FLOW_PREFIX = "flowUpsamplerNet."

_BASICSR_RDB = re.compile(r"^body\.(\d+)\.rdb([1-3])\.(conv[1-5])\.(weight|bias)$")
_BASICSR_UP = re.compile(r"^conv_up(\d+)\.(weight|bias)$")
_BASICSR_NAMES = {"conv_first": "conv_first", "conv_body": "trunk_conv", "conv_hr": "HRconv", "conv_last": "conv_last"}
_OLD_RDB = re.compile(r"^model\.1\.sub\.(\d+)\.RDB([1-3])\.(conv[1-5])\.0\.(weight|bias)$")
_OLD_SUB_CONV = re.compile(r"^model\.1\.sub\.(\d+)\.(weight|bias)$")
_OLD_TOP = re.compile(r"^model\.(\d+)\.(weight|bias)$")
_TRUNK = re.compile(r"^RRDB_trunk\.(\d+)\.")
_UPCONV = re.compile(r"^upconv(\d+)\.weight$")


def _is_srflow(sd: StateDict) -> bool:
    return any(k.startswith(_FLOW_PREFIX) for k in sd)


def detect_layout(sd: StateDict) -> Layout | None:
    """Which naming scheme ``sd`` uses (by key names only), or ``None``; SRFlow checkpoints give ``None``."""
    if _is_srflow(sd):
        return None
    for layout in LAYOUTS:
        if all(k in sd for k in _REQUIRED[layout]):
            return layout
    return None


def detect(sd: StateDict) -> bool:
    """True if ``sd`` is a standalone RRDB/ESRGAN state dict in one of the three known layouts."""
    return detect_layout(sd) is not None


def _require_layout(sd: StateDict) -> Layout:
    if _is_srflow(sd):
        raise UserError(
            "checkpoint holds an SRFlow network (flowUpsamplerNet.* keys), not a standalone RRDB; "
            "load it with component 'srflow'"
        )
    layout = detect_layout(sd)
    if layout is None:
        first = ", ".join(list(sd)[:3]) or "no tensors"
        raise UserError(
            "not an RRDB/ESRGAN state dict: no known key layout matches (official SRFlow/ESRGAN, "
            f"BasicSR/Real-ESRGAN or old ESRGAN model.N names); first keys: {first}"
        )
    return layout


def _rename_basicsr(key: str) -> str:
    if m := _BASICSR_RDB.match(key):
        n, k, conv, leaf = m.groups()
        return f"RRDB_trunk.{n}.RDB{k}.{conv}.{leaf}"
    if m := _BASICSR_UP.match(key):
        return f"upconv{m.group(1)}.{m.group(2)}"
    module, _, leaf = key.rpartition(".")
    if module in _BASICSR_NAMES and leaf in ("weight", "bias"):
        return f"{_BASICSR_NAMES[module]}.{leaf}"
    return key


def _old_top_names(sd: StateDict) -> dict[int, str]:
    """Map ``model.<i>`` indices (i ≥ 2) of the old sequential layout to official module names."""
    indices = sorted({int(m.group(1)) for k in sd if (m := _OLD_TOP.match(k))} - {0})
    if not indices:
        raise UserError("old ESRGAN layout: no HRconv/conv_last found after model.1 (model.<i> for i >= 2)")
    last = indices[-1]
    n_up, rest = divmod(last - 4, 3)
    expected = {3 * m: f"upconv{m}" for m in range(1, n_up + 1)} | {last - 2: "HRconv", last: "conv_last"}
    if last < 4 or rest != 0 or set(indices) != set(expected):
        raise UserError(
            f"old ESRGAN layout: convolutions at model.{', model.'.join(map(str, indices))} do not form "
            "nearest+conv upsampling (expected model.3, model.6, ..., then HRconv and conv_last 2 and 4 after "
            "the last upsampling conv)"
        )
    return expected


def _rename_old(sd: StateDict) -> dict[str, str]:
    top = _old_top_names(sd)
    blocks = {int(m.group(1)) for k in sd if (m := _OLD_RDB.match(k))}
    sub_convs = {int(m.group(1)) for k in sd if (m := _OLD_SUB_CONV.match(k))}
    nb = max(blocks) + 1
    if sub_convs != {nb}:
        found = ", ".join(f"model.1.sub.{i}" for i in sorted(sub_convs)) or "none"
        raise UserError(
            f"old ESRGAN layout: expected the trunk conv at model.1.sub.{nb} after {nb} blocks, found {found}"
        )
    names: dict[str, str] = {}
    for key in sd:
        if m := _OLD_RDB.match(key):
            n, k, conv, leaf = m.groups()
            names[key] = f"RRDB_trunk.{n}.RDB{k}.{conv}.{leaf}"
        elif m := _OLD_SUB_CONV.match(key):
            names[key] = f"trunk_conv.{m.group(2)}"
        elif m := _OLD_TOP.match(key):
            index, leaf = int(m.group(1)), m.group(2)
            names[key] = f"conv_first.{leaf}" if index == 0 else f"{top[index]}.{leaf}"
        else:
            names[key] = key
    return names


def to_official_names(sd: StateDict, layout: Layout | None = None) -> dict[str, Tensor]:
    """``sd`` with its keys renamed to the official (``RRDBNet``) names; unknown keys are kept as they are.

    ``layout`` defaults to :func:`detect_layout`; a state dict in no known layout is a :class:`UserError`.
    """
    layout = layout or _require_layout(sd)
    if layout == "official":
        return dict(sd)
    if layout == "basicsr":
        return {_rename_basicsr(k): v for k, v in sd.items()}
    names = _rename_old(sd)
    return {names[k]: v for k, v in sd.items()}


def _tensor(off: Mapping[str, Tensor], key: str, ndim: int = 4) -> Tensor:
    if key not in off:
        raise UserError(f"RRDB checkpoint: tensor {key!r} is missing")
    t = off[key]
    if t.ndim != ndim:
        raise UserError(f"RRDB checkpoint: {key} has shape {tuple(t.shape)}, expected a {ndim}-d tensor")
    return t


def _structure(off: Mapping[str, Tensor]) -> dict[str, int]:
    """Facts read off an official-named state dict: nf, nb, gc, out_nc, conv_in (input channels of
    conv_first) and n_up (number of x2 upsampling convs)."""
    first = _tensor(off, "conv_first.weight")
    nf, conv_in = int(first.shape[0]), int(first.shape[1])
    blocks = sorted({int(m.group(1)) for k in off if (m := _TRUNK.match(k))})
    nb = len(blocks)
    if blocks != list(range(nb)):
        raise UserError(f"nb: trunk blocks are not numbered 0..{nb - 1} (found {blocks[:5]}...)")
    gc = int(_tensor(off, "RRDB_trunk.0.RDB1.conv1.weight").shape[0])
    ups = sorted(int(m.group(1)) for k in off if (m := _UPCONV.match(k)))
    n_up = len(ups)
    if ups != list(range(1, n_up + 1)):
        raise UserError(f"scale: upsampling convs are not numbered upconv1..upconv{n_up} (found {ups})")
    for m in ups:
        channels = int(_tensor(off, f"upconv{m}.weight").shape[0])
        if channels != nf:
            raise UserError(
                f"scale: upconv{m} has {channels} output channels for {nf} features; only nearest+conv "
                "upsampling is supported (pixel-shuffle upsampling is not)"
            )
    _tensor(off, "trunk_conv.weight")
    _tensor(off, "HRconv.weight")
    out_nc = int(_tensor(off, "conv_last.weight").shape[0])
    return {"nf": nf, "nb": nb, "gc": gc, "out_nc": out_nc, "conv_in": conv_in, "n_up": n_up}


def _hparams(facts: Mapping[str, int]) -> dict[str, Any]:
    n_up, conv_in, out_nc = facts["n_up"], facts["conv_in"], facts["out_nc"]
    unshuffle = n_up == 2 and conv_in in (4 * out_nc, 16 * out_nc)
    if unshuffle:
        factor = 2 if conv_in == 4 * out_nc else 4
        in_nc, scale = conv_in // factor**2, 4 // factor
    else:
        in_nc, scale = conv_in, 2**n_up
    if scale > 16:
        raise UserError(f"scale: checkpoint has {n_up} upsampling convs (x{scale}); at most x16 is supported")
    return {
        "in_nc": in_nc, "out_nc": out_nc, "nf": facts["nf"], "nb": facts["nb"], "gc": facts["gc"],
        "scale": scale, "pixel_unshuffle": unshuffle,
    }


def params_from_state_dict(sd: StateDict) -> dict[str, Any]:
    """``in_nc, out_nc, nf, nb, gc, scale, pixel_unshuffle`` read off the tensors (never ``variant``).

    Raises :class:`UserError` for a state dict in no known layout or an inconsistent one.
    """
    return _hparams(_structure(to_official_names(sd)))


def _as_params(params: RRDBParams | Mapping[str, Any]) -> RRDBParams:
    return params if isinstance(params, RRDBParams) else RRDBParams.model_validate(dict(params))


def _check(params: RRDBParams, facts: Mapping[str, int]) -> None:
    """Raise a one-line :class:`UserError` naming the first parameter the file disagrees with."""
    simple = (
        ("nf", "feature channels"), ("nb", "blocks"), ("gc", "growth channels"), ("out_nc", "output channels"),
    )
    for name, what in simple:
        if facts[name] != getattr(params, name):
            raise UserError.at(None, name, f"checkpoint has {facts[name]} {what}, params say {getattr(params, name)}")
    factor = 4 // params.scale if params.pixel_unshuffle else 1
    want_up = 2 if params.pixel_unshuffle else params.scale.bit_length() - 1
    want_in = params.in_nc * factor**2
    if facts["n_up"] == want_up and facts["conv_in"] == want_in:
        return
    found = _hparams(facts)
    if found["scale"] != params.scale:
        how = " (pixel-unshuffle input)" if found["pixel_unshuffle"] else ""
        raise UserError(f"scale: checkpoint is x{found['scale']}{how}, params say {params.scale}")
    if found["pixel_unshuffle"] != params.pixel_unshuffle:
        has = "has a" if found["pixel_unshuffle"] else "has no"
        raise UserError(
            f"pixel_unshuffle: checkpoint {has} pixel-unshuffle input (conv_first takes {facts['conv_in']} channels, "
            f"{facts['n_up']} upsampling convs), params say {str(params.pixel_unshuffle).lower()}"
        )
    extra = f" (in_nc x {factor * factor} after pixel unshuffle)" if factor > 1 else ""
    raise UserError(
        f"in_nc: checkpoint's conv_first takes {facts['conv_in']} channels, params say {params.in_nc}{extra}"
    )


def convert_state_dict(sd: StateDict, params: RRDBParams | Mapping[str, Any]) -> dict[str, Tensor]:
    """``sd`` renamed to :class:`RRDBNet`'s module names, after checking it fits ``params``.

    A disagreement is a one-line :class:`UserError` naming the parameter, e.g.
    ``"nb: checkpoint has 23 blocks, params say 4"``. Keys outside the layout are kept unchanged (the loader
    reports them as unexpected in strict mode).
    """
    off = to_official_names(sd)
    _check(_as_params(params), _structure(off))
    return off
