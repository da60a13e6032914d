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
    assert len(hooks) == 4
    for name in hooks:
        assert (getattr(hookspecs, name).__doc__ or "").strip(), name
        assert f"### `{name}()`" in guide, name
