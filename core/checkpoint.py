"""Checkpoint files for everyone: safe ``.pth`` reading, safetensors read/write, atomic saves.

Plugins contribute format detection and key conversion (``GeneratorComponent.detect`` and friends);
this module only reads and writes files.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor

from .errors import UserError

WRAPPER_KEYS = ("params_ema", "params", "state_dict", "model", "net", "generator", "netG")
META_COMPONENT = "restorekit.component"
META_PARAMS = "restorekit.params"


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) for k in obj)
        and all(isinstance(v, Tensor) for v in obj.values())
    )


def canonicalize_state_dict(obj: Any, *, source: str = "checkpoint") -> dict[str, Tensor]:
    """Unwrap ``params_ema``/``params``/``state_dict``/... wrappers, strip ``module.`` prefixes and cast
    floating tensors to float32. Raises :class:`UserError` if no state dict is found."""
    seen = 0
    while not _is_state_dict(obj) and isinstance(obj, Mapping) and seen < 4:
        inner = next((obj[k] for k in WRAPPER_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
        if inner is None:
            break
        obj, seen = inner, seen + 1
    if not _is_state_dict(obj):
        raise UserError(f"{source}: not a state dict of named tensors")
    out: dict[str, Tensor] = {}
    for key, value in obj.items():
        name = key[len("module.") :] if key.startswith("module.") else key
        out[name] = value.float() if value.is_floating_point() else value
    return out


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Read a ``.pth``/``.pt``/``.ckpt`` (``torch.load(weights_only=True)``) or ``.safetensors`` file.

    Pickles that would execute code are refused. Floating tensors come back as float32.
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: checkpoint file not found")
    if p.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            raw: Any = load_file(str(p))
        except (SafetensorError, OSError, ValueError) as exc:
            raise UserError(f"{p}: not a readable safetensors file ({_first_line(exc)})") from None
    else:
        try:
            raw = torch.load(str(p), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            text = str(exc)
            if "GLOBAL" in text or "global" in text:
                what = next((ln.strip() for ln in text.splitlines() if "GLOBAL" in ln or "global" in ln), "")
                raise UserError(
                    f"{p}: refused to load: the pickle would run code beyond plain tensors ({what[:160]})"
                ) from None
            raise UserError(f"{p}: not a readable PyTorch checkpoint (corrupt or not a pickle)") from None
        except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as exc:
            raise UserError(f"{p}: not a readable PyTorch checkpoint ({_first_line(exc)})") from None
    return canonicalize_state_dict(raw, source=str(p))


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The string metadata of a safetensors file ({} for other files)."""
    p = Path(path)
    if p.suffix != ".safetensors" or not p.is_file():
        return {}
    from safetensors import safe_open

    try:
        with safe_open(str(p), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception:  # noqa: BLE001 - a broken file is reported by read_state_dict
        return {}


def restorekit_metadata(path: str | os.PathLike[str]) -> tuple[str | None, dict[str, Any]]:
    """``(component, params)`` written by :func:`save_generator`, or ``(None, {})``."""
    meta = read_metadata(path)
    component = meta.get(META_COMPONENT)
    params = json.loads(meta[META_PARAMS]) if META_PARAMS in meta else {}
    return component, params


def atomic_write(path: Path, write: Any) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``: readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_safetensors(
    path: str | os.PathLike[str], tensors: Mapping[str, Tensor], metadata: Mapping[str, str] | None = None
) -> None:
    """Atomically write tensors (made contiguous, shared storage broken) as safetensors."""
    from safetensors.torch import save_file

    data = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    atomic_write(Path(path), lambda tmp: save_file(data, str(tmp), metadata=dict(metadata or {})))


def save_generator(
    path: str | os.PathLike[str], module: torch.nn.Module, component: str, params: Mapping[str, Any]
) -> None:
    """Write a generator as safetensors plus the component name and params, loadable by
    :func:`restorekit.load` with no other input."""
    save_safetensors(
        path,
        module.state_dict(),
        {META_COMPONENT: component, META_PARAMS: json.dumps(dict(params), default=str)},
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
