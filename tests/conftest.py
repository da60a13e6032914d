"""Shared test fixtures: the official-format fixtures folder, fresh plugin registries, sample images."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


FIXTURES = ROOT / "tests" / "fixtures"


def fixtures_dir() -> Path:
    """The official-format parity fixtures the repository carries (tests/fixtures, see its README)."""
    return Path(os.environ.get("RESTOREKIT_FIXTURES") or FIXTURES)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """pyproject.toml's ``-n auto``: the whole suite (no path on the command line) runs on every core; the files or
    tests named on the command line run in this process, where starting workers would cost more than they save."""
    return 0 if config.args_source == pytest.Config.ArgsSource.ARGS else None


@pytest.fixture
def fixtures() -> Path:
    return fixtures_dir()


@pytest.fixture
def empty_registry():
    """A registry with no plugins: tests register what they need."""
    from restorekit.registry import PluginRegistry

    return PluginRegistry()


@pytest.fixture
def registry():
    """A registry with the first-party plugins registered directly (no entry points)."""
    from fakes import first_party_registry

    return first_party_registry()


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch):
    """The CLI resolves components in a registry holding the first-party plugins plus the fakes (tests/fakes.py);
    returns the :class:`fakes.FakePlugin` (it keeps every module it built)."""
    import fakes as fakes_module
    from fakes import FakePlugin, make_registry

    plugin = FakePlugin()
    monkeypatch.setattr(fakes_module, "CLI_REGISTRY", make_registry(plugin))  # what fakes.run passes to main()
    return plugin


@pytest.fixture
def sample_png(tmp_path: Path):
    """Write a small RGB crop of a scikit-image sample as PNG; returns a factory(name, size)."""
    import imageio.v3 as iio
    import skimage.data

    def make(name: str = "astronaut", size: int = 32, folder: Path | None = None) -> Path:
        img = getattr(skimage.data, name)()
        if img.ndim == 2:
            img = np.stack([img] * 3, -1)
        h, w = img.shape[:2]
        y, x = (h - size * 4) // 2, (w - size * 4) // 2
        crop = img[y : y + size * 4 : 4, x : x + size * 4 : 4, :3]
        out = (folder or tmp_path) / f"{name}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        iio.imwrite(out, np.ascontiguousarray(crop))
        return out

    return make


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path_factory, monkeypatch):
    """Every test runs in a fresh working directory: nothing can land in the checkout by accident."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


@pytest.fixture(autouse=True)
def _one_thread():
    """The tiny networks gain nothing from intra-op threads, and on a busy 2-core machine the thread pool's waits
    cost far more than the work: one thread keeps these tests fast and their timing steady."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def server():
    """A local HTTP server on 127.0.0.1 (tests/fakes.py ``Server``): Range support, dropped connections, a log."""
    from fakes import Server

    s = Server()
    yield s
    s.stop()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh cache folder ($RESTOREKIT_HOME) and no catalogue files from the environment."""
    from restorekit import catalogue as cat

    h = tmp_path / "home"
    monkeypatch.setenv(cat.ENV_HOME, str(h))
    monkeypatch.delenv(cat.ENV_CATALOGUE, raising=False)
    return h
