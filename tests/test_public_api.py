"""The public API plugins live on: everything a plugin needs is exported from ``restorekit`` itself (or from another
plugin's package, ``__all__`` only: HCFlow builds on SRFlow's and RRDB's layers)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import restorekit

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_DIRS = [ROOT / "plugins", ROOT / "examples" / "third_party_plugin"]


def plugin_modules() -> list[Path]:
    files = []
    for d in PLUGIN_DIRS:
        files += [p for p in d.rglob("*.py") if not {"build", "tests"} & set(p.relative_to(d).parts)]
    return sorted(files)


def private_imports(path: Path, root: Path = ROOT) -> list[str]:
    """``restorekit.<submodule>`` imports in a file (``import restorekit.x``, ``from restorekit.x import y``,
    ``from restorekit import x`` where ``x`` is a submodule rather than an exported name), and the same for another
    plugin's package (``restorekit_srflow.layers``, or a name not in ``restorekit_srflow.__all__``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.startswith("restorekit") and "." in a.name]
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            if node.module.startswith("restorekit") and "." in node.module:
                found.append(f"from {node.module} import ...")
            elif node.module.startswith("restorekit"):
                public = importlib.import_module(node.module).__all__
                found += [f"from {node.module} import {a.name}" for a in node.names if a.name not in public]
    return [f"{path.relative_to(root)}:{x}" for x in found]


def test_the_check_sees_private_imports(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import restorekit.spec\nfrom restorekit.components import Params\n"
                   "from restorekit import latents, Params\nfrom restorekit_rrdb import RRDBNet\n"
                   "import restorekit_srflow.layers\nfrom restorekit_srflow.layers import ActNorm\n"
                   "from restorekit_srflow import ActNorm, layers\n")
    found = [x.split(":", 1)[1] for x in private_imports(bad, tmp_path)]
    assert found == ["import restorekit.spec", "from restorekit.components import ...", "from restorekit import latents",
                     "import restorekit_srflow.layers", "from restorekit_srflow.layers import ...",
                     "from restorekit_srflow import layers"]


@pytest.mark.parametrize("path", plugin_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_plugins_import_only_the_public_api(path: Path) -> None:
    assert private_imports(path) == []


def test_every_exported_name_exists_and_is_documented() -> None:
    missing = [n for n in restorekit.__all__ if not hasattr(restorekit, n)]
    assert missing == []
    doc = restorekit.__doc__ or ""
    undocumented = [n for n in restorekit.__all__ if not n.startswith("_") and n not in doc
                    and n not in ("run", "load", "Plan", "PipelineSpec")]
    assert undocumented == []


def test_what_plugins_need_is_public() -> None:
    from restorekit import (  # noqa: F401 - the import is the test
        GeneratorComponent,
        InjectorComponent,
        LossComponent,
        Params,
        PresetParams,
        Sample,
        StateDict,
        UserError,
        ValidationContext,
        ValidationResult,
        ValidatorComponent,
        hookimpl,
        sample_latents,
        state_get,
        temperature_at,
    )

    assert issubclass(PresetParams, Params)
    with pytest.raises(UserError, match=r"^loss: state has no 'sr' \(present: hq, lq\)$"):
        state_get({"hq": 0, "lq": 0}, "sr", "loss")


def test_import_restorekit_has_no_side_effects() -> None:
    import subprocess
    import sys

    code = ("import sys, restorekit, warnings; "
            "assert 'restorekit.testing' not in sys.modules; "
            "assert 'restorekit_rrdb' not in sys.modules and 'restorekit_srflow' not in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok" and out.stderr == "", out.stderr


def test_an_input_in_0_255_warns_once_with_the_fix() -> None:
    import pickle
    import warnings

    import torch

    model = restorekit.load("bundled-rrdb-x4")
    lr = torch.rand(1, 3, 8, 8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        good = model(lr)
        assert caught == []  # [0, 1]: silent
        model(lr * 255)
        model(lr * 255)
        model(lr * 1.2 - 0.1)  # resampling overshoot is not a mistake
    (w,) = caught
    assert issubclass(w.category, restorekit.InputRangeWarning)
    assert "take float images in [0, 1]; divide by 255 (lr / 255)" in str(w.message)
    assert torch.equal(model(lr), good)  # the guard changes nothing
    assert isinstance(pickle.loads(pickle.dumps(model)), torch.nn.Module)  # and the model still pickles
