"""Plugin manager: entry points, isolation of broken plugins, conflicts and pins, registry.toml."""

from __future__ import annotations

import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
from pydantic import Field

from restorekit import GeneratorComponent, Params, hookimpl
from restorekit.errors import UserError
from restorekit.registry import KINDS, PLURAL, PluginRegistry, RegistryConfig, read_registry_config

ROOT = Path(__file__).resolve().parents[1]


class TinyParams(Params):
    scale: int = Field(2, description="scale")


def tiny_build(params: TinyParams) -> object:
    return object()


class Provider:
    def __init__(self, name: str = "tiny") -> None:
        self.name = name

    @hookimpl
    def restorekit_generators(self):
        return [GeneratorComponent(name=self.name, params=TinyParams, build=tiny_build, summary="tiny")]


def test_registered_plugin_components_are_found(empty_registry: PluginRegistry) -> None:
    empty_registry.register(Provider(), "tinyplugin")
    found = empty_registry.get("generator", "tiny")
    assert found.plugin == "tinyplugin" and found.component.params is TinyParams
    assert empty_registry.names("generator") == ["tiny"]


def test_unknown_component_lists_available_and_suggests(empty_registry: PluginRegistry) -> None:
    empty_registry.register(Provider("srflow"), "a")
    with pytest.raises(UserError) as info:
        empty_registry.get("generator", "srflw")
    assert str(info.value) == "unknown generator 'srflw' (did you mean 'srflow'?) (available: srflow)"


def test_two_plugins_same_name_is_an_error_unless_pinned(empty_registry: PluginRegistry) -> None:
    empty_registry.register(Provider("dup"), "first")
    empty_registry.register(Provider("dup"), "second")
    with pytest.raises(UserError) as info:
        empty_registry.get("generator", "dup")
    assert "'first' and 'second'" in str(info.value) and "pin one in registry.toml" in str(info.value)
    assert empty_registry.conflicts() == {"generator": {"dup": ["first", "second"]}}
    pinned = PluginRegistry(RegistryConfig(pins={"generator": {"dup": "second"}}))
    pinned.register(Provider("dup"), "first")
    pinned.register(Provider("dup"), "second")
    assert pinned.get("generator", "dup").plugin == "second"


def test_broken_hook_isolated_and_named(empty_registry: PluginRegistry) -> None:
    class Raises:
        @hookimpl
        def restorekit_generators(self):
            raise RuntimeError("weights missing")

    class WrongType:
        @hookimpl
        def restorekit_generators(self):
            return ["not a component"]

    class Misspelled:
        @hookimpl
        def restorekit_generator(self):  # no such hook
            return []

    empty_registry.register(Provider(), "good")
    empty_registry.register(Raises(), "raises")
    empty_registry.register(WrongType(), "wrongtype")
    empty_registry.register(Misspelled(), "misspelled")
    infos = {i.name: i for i in empty_registry.plugin_infos()}
    assert infos["good"].status == "ok"
    assert infos["raises"].status == "broken" and "RuntimeError: weights missing" in infos["raises"].reason
    assert infos["wrongtype"].status == "broken" and "expected GeneratorComponent" in infos["wrongtype"].reason
    assert infos["misspelled"].status == "broken" and "unknown hook" in infos["misspelled"].reason
    assert empty_registry.get("generator", "tiny").plugin == "good"


def test_entry_points_load_and_broken_plugin_only_fails_its_users(tmp_path: Path, monkeypatch) -> None:
    """A real entry point (dist-info on sys.path): one good plugin, one that fails to import."""
    pkg = tmp_path / "rk_good_plugin.py"
    pkg.write_text(textwrap.dedent('''
        from pydantic import Field
        from restorekit import GeneratorComponent, Params, hookimpl
        class P(Params):
            k: int = Field(1, description="k")
        @hookimpl
        def restorekit_generators():
            return [GeneratorComponent(name="good_gen", params=P, build=lambda p: None)]
    '''))
    (tmp_path / "rk_bad_plugin.py").write_text("import not_a_module_anywhere\n")
    dist = tmp_path / "rk_test_plugins-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: rk-test-plugins\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[restorekit.plugins]\ngoodplug = rk_good_plugin\nbadplug = rk_bad_plugin\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    config = RegistryConfig.model_validate(
        {"plugins": {"badplug": {"entry_point": "rk_bad_plugin", "generators": ["bad_gen"]}}}
    )
    reg = PluginRegistry.load(config, only=["goodplug", "badplug"])
    infos = {i.name: i for i in reg.plugin_infos()}
    assert infos["goodplug"].status == "ok" and infos["goodplug"].version == "1.0"
    assert infos["goodplug"].distribution == "rk-test-plugins"
    assert infos["badplug"].status == "broken" and "No module named 'not_a_module_anywhere'" in infos["badplug"].reason
    assert reg.get("generator", "good_gen").plugin == "goodplug"
    with pytest.raises(UserError, match="generator 'bad_gen' is unavailable: plugin 'badplug' is broken"):
        reg.get("generator", "bad_gen")
    sys.modules.pop("rk_good_plugin", None)


def test_disabled_plugin_is_not_loaded(tmp_path: Path) -> None:
    user = tmp_path / "registry.toml"
    user.write_text('[plugins.srflow]\nentry_point = "restorekit_srflow.plugin"\nenabled = false\ngenerators = ["srflow"]\n')
    from restorekit.registry import default_registry_config

    reg = PluginRegistry.load(default_registry_config(user))
    assert {i.name: i.status for i in reg.plugin_infos()}["srflow"] == "disabled"
    with pytest.raises(UserError, match="plugin 'srflow' is turned off in registry.toml"):
        reg.get("generator", "srflow")
    assert reg.get("generator", "rrdb").plugin == "rrdb"


def test_registry_toml_matches_entry_points() -> None:
    """registry.toml and what the installed entry points provide never drift apart."""
    config = read_registry_config(ROOT / "registry.toml")
    reg = PluginRegistry.load(RegistryConfig(), only=list(config.plugins))
    infos = {i.name: i for i in reg.plugin_infos()}
    assert set(infos) == set(config.plugins)
    import importlib.metadata as md

    eps = {ep.name: ep.value for ep in md.entry_points(group="restorekit.plugins")}
    for name, entry in config.plugins.items():
        assert infos[name].status == "ok", f"{name}: {infos[name].reason}"
        assert eps[name] == entry.entry_point
        for kind in KINDS:
            assert sorted(infos[name].provides.get(kind, [])) == sorted(entry.provides(kind)), (name, PLURAL[kind])


def test_packaged_registry_is_the_top_level_file() -> None:
    from restorekit.registry import packaged_registry_path

    assert tomllib.loads(packaged_registry_path().read_text()) == tomllib.loads((ROOT / "registry.toml").read_text())
