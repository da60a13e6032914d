"""What made an output: the identity of a network's weights (catalogue name or file, and the sha256 of the
weights), hashed once per file and run.

Kept apart from the weight loading on purpose: it reads the plan and the files, never loads a tensor from them.
:func:`file_sha256` caches digests by (path, size, mtime), so a run never hashes the same file twice; a catalogue
download's digest is the one the catalogue verified and recorded beside the file (``<file>.sha256``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from .plan import NetworkPlan

_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file, computed once per (resolved path, size, mtime) in this process."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    digest = _DIGESTS.get(key)
    if digest is None:
        from .catalogue import sha256_file

        digest = _DIGESTS[key] = sha256_file(p)
    return digest


def module_sha256(module: "nn.Module") -> str:
    """The sha256 of a network's weights in memory (names, dtypes, shapes and bytes of its state dict): the
    identity of weights trained in this run, which have no file yet."""
    import torch

    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        x = t.detach().cpu().contiguous()
        h.update(f"{name}|{x.dtype}|{tuple(x.shape)}\n".encode())
        if x.numel():
            h.update(x.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _catalogue_sha256(entry: Any) -> str:
    from .catalogue import model_path, read_record

    path = model_path(entry)
    if not entry.is_bundled:
        recorded = read_record(path)  # written (and checked) by the catalogue when the file was fetched
        if recorded is not None:
            return recorded
    return file_sha256(path)


def weights_identity(plan: "NetworkPlan", trained: "nn.Module | None" = None) -> dict[str, Any]:
    """Where a network's weights come from and their sha256: ``{"model": name, "sha256": ...}`` for a catalogue
    entry (fetched already), ``{"checkpoint": path, "sha256": ...}`` for a file, ``{"trained": "networks.<n>",
    "sha256": ...}`` for weights trained in this run (``trained``: that module), ``{"weights": "initial"}`` for a
    network built without weights. Sub-module checkpoints (``init_submodules``) add ``submodules``."""
    out: dict[str, Any]
    if trained is not None:
        out = {"trained": f"networks.{plan.name}", "sha256": module_sha256(trained)}
    elif plan.spec.checkpoint is not None:
        out = {"checkpoint": str(Path(plan.spec.checkpoint).resolve()), "sha256": file_sha256(plan.spec.checkpoint)}
    elif plan.model is not None:
        out = {"model": plan.model.name, "sha256": _catalogue_sha256(plan.model)}
    else:
        out = {"weights": "initial"}
    if trained is None and plan.submodules:
        out["submodules"] = {name: file_sha256(gen.path) for name, gen in plan.submodules}
    return out


__all__ = ["file_sha256", "module_sha256", "weights_identity"]
