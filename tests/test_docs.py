"""Docs that are generated from code stay in sync; hooks are documented."""

from __future__ import annotations

import re
from pathlib import Path

from restorekit import hookspecs
from restorekit.spec import reference_markdown

ROOT = Path(__file__).resolve().parents[1]


def test_spec_reference_is_current() -> None:
    text = (ROOT / "docs" / "pipeline-spec.md").read_text()
    m = re.search(r"<!-- BEGIN GENERATED: restorekit.spec.reference_markdown\(\) -->\n(.*)<!-- END GENERATED -->", text, re.S)
    assert m, "generated section markers missing"
    assert m.group(1) == reference_markdown(), (
        "docs/pipeline-spec.md is stale: regenerate the section between the markers from "
        "restorekit.spec.reference_markdown()"
    )


def test_every_hook_has_a_docstring_and_a_section_in_the_plugin_guide() -> None:
    guide = (ROOT / "docs" / "plugins.md").read_text()
    hooks = [n for n in dir(hookspecs) if n.startswith("restorekit_")]
    assert len(hooks) == 5
    for name in hooks:
        assert (getattr(hookspecs, name).__doc__ or "").strip(), name
        assert f"### `{name}()`" in guide, name


def _python_snippets(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.S)


def _undefined_names(code: str) -> set[str]:
    """Names a snippet uses but neither imports, defines nor gets from builtins."""
    import ast
    import builtins

    tree = ast.parse(code)
    defined = set(dir(builtins)) | {"__file__", "__name__"}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            defined |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, ast.arg):
            defined.add(node.arg)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            defined.add(node.id)
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)} - defined


def test_plugin_guide_snippets_import_everything_they_use() -> None:
    snippets = _python_snippets((ROOT / "docs" / "plugins.md").read_text())
    assert len(snippets) >= 5
    for code in snippets:
        assert _undefined_names(code) == set(), code
        for line in code.splitlines():  # the public API only (tests may use the conformance kit)
            assert not re.match(r"\s*(from|import) restorekit\.(?!testing\b)", line), line
    assert _undefined_names("x = Literal['a']") == {"Literal"}


def test_plugin_guide_pyproject_is_complete_and_matches_the_example() -> None:
    import tomllib

    text = (ROOT / "docs" / "plugins.md").read_text()
    (block,) = [b for b in re.findall(r"```toml\n(.*?)```", text, re.S) if "[build-system]" in b]
    doc = tomllib.loads(block)
    example = tomllib.loads((ROOT / "examples" / "third_party_plugin" / "pyproject.toml").read_text())
    assert doc["build-system"] == example["build-system"]
    assert doc["project"]["version"] == example["project"]["version"]
    assert doc["project"]["entry-points"] == example["project"]["entry-points"]
    assert doc["tool"]["setuptools"]["packages"] == example["tool"]["setuptools"]["packages"]


def test_plugin_guide_documents_the_conformance_kit_and_benchmark_settings() -> None:
    import restorekit.testing

    text = (ROOT / "docs" / "plugins.md").read_text()
    for name in restorekit.testing.__all__:
        if name != "KitUpsampler":
            assert f"`{name}(" in text, name
    settings = set(re.findall(r"RESTOREKIT_BENCH_\w+", (ROOT / "benchmarks" / "conftest.py").read_text()))
    assert settings and all(f"`{s}`" in text for s in settings)
