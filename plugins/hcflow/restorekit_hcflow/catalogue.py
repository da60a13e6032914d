"""Where the plugin's catalogue file lives (its entries are read by restorekit's catalogue loader)."""

from __future__ import annotations

from pathlib import Path

CATALOGUE = Path(__file__).with_name("catalogue.toml")
"""``hcflow-df2k-4x`` and ``hcflow-celeba-8x``: the official release assets (see the file's comments)."""

__all__ = ["CATALOGUE"]
