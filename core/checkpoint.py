"""Checkpoint files for everyone: safe ``.pth`` reading, safetensors read/write, atomic saves.

Plugins contribute format detection and key conversion (``GeneratorComponent.detect`` and friends);
this module only reads and writes files.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import Tensor

from .errors import UserError, one_line
from .files import atomic_dir, atomic_write, pid_alive

WRAPPER_KEYS = ("params_ema", "params", "state_dict", "model", "net", "generator", "netG")
META_COMPONENT = "restorekit.component"
META_PARAMS = "restorekit.params"
CHECKPOINTS = "checkpoints"
STATE_FILE = "state.pt"
META_FILE = "meta.json"
_STEP_DIR = re.compile(r"^step_(\d+)$")


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) for k in obj)
        and all(isinstance(v, Tensor) for v in obj.values())
    )


def canonicalize_state_dict(obj: Any, *, source: str = "checkpoint", cast: bool = True) -> dict[str, Tensor]:
    """Unwrap ``params_ema``/``params``/``state_dict``/... wrappers, strip ``module.`` prefixes and (``cast``)
    cast floating tensors to float32. Raises :class:`UserError` if no state dict is found."""
    seen = 0
    while not _is_state_dict(obj) and isinstance(obj, Mapping) and seen < 4:
        inner = next((obj[k] for k in WRAPPER_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
        if inner is None:
            break
        obj, seen = inner, seen + 1
    if not _is_state_dict(obj):
        raise UserError.at(source, None, "not a state dict of named tensors")
    out: dict[str, Tensor] = {}
    for key, value in obj.items():
        name = key[len("module.") :] if key.startswith("module.") else key
        out[name] = value.float() if cast and value.is_floating_point() else value
    return out


def read_state_dict(path: str | os.PathLike[str], *, header_only: bool = False) -> dict[str, Tensor]:
    """Read a ``.pth``/``.pt``/``.ckpt`` (``torch.load(weights_only=True)``) or ``.safetensors`` file.

    Pickles that would execute code are refused. Floating tensors come back as float32. ``header_only``: the
    names and shapes only, as tensors on the meta device (safetensors: the header; other files:
    ``torch.load(mmap=True)``, which maps the file without reading the tensors) — what detecting a component and
    reading params off the shapes need (dtypes are not kept).
    """
    p = Path(path)
    if not p.is_file():
        raise UnreadableCheckpoint.at(p, None, "checkpoint file not found")
    if p.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open
        from safetensors.torch import load_file

        try:
            if not header_only:
                raw: Any = load_file(str(p))
            else:
                with safe_open(str(p), framework="pt") as f:
                    raw = {k: torch.empty(f.get_slice(k).get_shape(), device="meta") for k in f.keys()}
        except (SafetensorError, OSError, ValueError) as exc:
            raise UnreadableCheckpoint.at(p, None, f"not a readable safetensors file ({one_line(exc)})") from None
    else:
        raw = safe_torch_load(p, mmap=header_only)
    sd = canonicalize_state_dict(raw, source=str(p), cast=not header_only)
    return {k: torch.empty(v.shape, device="meta") for k, v in sd.items()} if header_only else sd


class UnreadableCheckpoint(UserError):
    """A checkpoint file that is empty, truncated or not what its name says (a resume may fall back)."""


class UnsafeCheckpoint(UserError):
    """A pickle that would run code when loaded: never loaded, never a fallback."""


_GLOBAL = re.compile(r"GLOBAL\s+([\w.]+)")


def safe_torch_load(path: str | os.PathLike[str], *, mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU with one-line errors naming the file.

    A pickle that would call anything beyond plain tensors and containers raises :class:`UnsafeCheckpoint`
    ("not a safe checkpoint", with the callable it names); torch's own advice to load it unsafely is never
    passed on. A truncated, empty or foreign file raises :class:`UnreadableCheckpoint`.
    """
    p = Path(path)
    try:
        if mmap and zipfile.is_zipfile(p):  # mmap needs the zip format; an old-style file is read whole
            return torch.load(str(p), map_location="cpu", weights_only=True, mmap=True)
        return torch.load(str(p), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        m = _GLOBAL.search(str(exc))
        if m is not None or "global" in str(exc).lower():
            what = f" (it calls {m.group(1)})" if m is not None else ""
            raise UnsafeCheckpoint(
                f"{p}: not a safe checkpoint, refused to load: the pickle would run code beyond plain tensors{what}"
            ) from None
        raise UnreadableCheckpoint.at(
            p, None, "not a readable PyTorch checkpoint (corrupt, or not a PyTorch file)") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, KeyError, TypeError,
            AttributeError, IndexError, MemoryError) as exc:
        if isinstance(exc, EOFError):
            reason = "empty file"
        elif isinstance(exc, (KeyError, IndexError, TypeError, AttributeError)):
            reason = "corrupt, or not a PyTorch file"  # the unpickler's own message (e.g. "101") means nothing here
        else:
            reason = one_line(exc)
        if "weights_only" in reason:
            reason = type(exc).__name__
        raise UnreadableCheckpoint.at(p, None, f"not a readable PyTorch checkpoint ({reason})") from None


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
    """``(component, params)`` written by :func:`save_generator`, or ``(None, {})``.

    Metadata that is not what :func:`save_generator` writes (params not JSON, or not a JSON object; a component
    that is not a name) is a one-line :class:`UserError` naming the file."""
    meta = read_metadata(path)
    component = meta.get(META_COMPONENT)
    if component is not None and (not isinstance(component, str) or not component.strip()):
        raise UserError.at(path, None, f"metadata {META_COMPONENT!r} is not a component name (got {component!r:.60})")
    if META_PARAMS not in meta:
        return component, {}
    try:
        params = json.loads(meta[META_PARAMS])
    except (ValueError, TypeError) as exc:
        raise UserError.at(path, None, f"metadata {META_PARAMS!r} is not JSON ({one_line(exc)})") from None
    if not isinstance(params, dict):
        raise UserError.at(path, None, f"metadata {META_PARAMS!r} is not a JSON object (got {type(params).__name__})")
    return component, params


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


# ----------------------------------------------------------------------------------------------------
# training checkpoint folders: <output_dir>/checkpoints/step_<N>/{state.pt, meta.json, <network>.safetensors}


def checkpoint_dirs(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoint folders under ``root`` (``step_<N>`` with state and meta files), oldest first."""
    if not root.is_dir():
        return []
    out = []
    for d in root.iterdir():
        m = _STEP_DIR.match(d.name)
        if m and d.is_dir() and (d / STATE_FILE).is_file() and (d / META_FILE).is_file():
            out.append((int(m.group(1)), d))
    return sorted(out)


def newest_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run folder, or None."""
    dirs = checkpoint_dirs(Path(output_dir) / CHECKPOINTS)
    return dirs[-1][1] if dirs else None


def write_checkpoint_dir(root: Path, step: int, write: Callable[[Path], None]) -> Path:
    """Fill a fresh temporary folder (``.tmp-step_<N>-<PID>-<random>``, made by ``mkdtemp``: never an existing
    folder) with ``write(tmp)`` then rename it to ``root/step_<step>``: a reader (or a resume after a crash)
    never sees a partial checkpoint."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step}"
    with atomic_dir(final, f".tmp-step_{step}-{os.getpid()}-") as tmp:
        write(tmp)
        if final.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".old-step_{step}-{os.getpid()}-", dir=root))
            os.replace(final, trash / final.name)
            os.replace(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, final)
    return final


def prune_checkpoints(root: Path, keep_last: int, keep: set[int]) -> list[Path]:
    """Delete complete checkpoints except the newest ``keep_last`` and the steps in ``keep``; returns what
    was deleted."""
    dirs = checkpoint_dirs(root)
    survivors = {s for s, _ in dirs[-keep_last:]} | keep
    removed = []
    for s, d in dirs:
        if s not in survivors:
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


_TEMP_DIR = re.compile(r"^\.(?:tmp|old)-step_\d+-(\d+)(?:-.*)?$")


def clean_temporaries(root: Path, *, all_stale: bool = False) -> list[Path]:
    """Remove the ``.tmp-step_<N>-<PID>``/``.old-step_<N>-<PID>`` folders that interrupted saves left behind;
    returns them. Only folders of processes that are gone (or of this process, which is not saving now) are
    removed, unless ``all_stale`` (the caller holds the output-folder lock, so no other run is writing)."""
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for d in sorted(root.iterdir()):
        m = _TEMP_DIR.match(d.name)
        if m is None or not d.is_dir():
            continue
        pid = int(m.group(1))
        if all_stale or pid == os.getpid() or not pid_alive(pid):
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


