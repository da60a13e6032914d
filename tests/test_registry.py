"""Plugin manager: entry points, isolation of broken plugins, conflicts and pins, registry.toml."""

from __future__ import annotations

import re
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
    assert "'first' and 'second'" in str(info.value) and "pin one in your registry file" in str(info.value)
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
    with pytest.raises(UserError, match=rf"^generator 'srflow' is provided by plugin 'srflow', which is turned off in "
                       rf"{re.escape(str(user))} \(plugins.srflow.enabled = false\)$"):
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


# ----------------------------------------------------------------------------------------------------
# a plugin author's experience: overlays, clashes, errors that name the right file, isolation, tracing


@pytest.fixture
def install(tmp_path: Path, monkeypatch):
    """Install throw-away plugins as real entry points: ``install({"name": "module source", ...})``."""
    made: list[str] = []

    def make(plugins: dict[str, str]) -> None:
        lines = []
        for name, source in plugins.items():
            module = f"rk_t_{name}_{len(made)}"
            (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
            lines.append(f"{name} = {module}")
            made.append(module)
        dist = tmp_path / f"rk_t_plugins_{len(made)}-1.0.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: rk-t-plugins-{len(made)}\nVersion: 1.0\n")
        (dist / "entry_points.txt").write_text("[restorekit.plugins]\n" + "\n".join(lines) + "\n")
        monkeypatch.syspath_prepend(str(tmp_path))

    yield make
    for module in made:
        sys.modules.pop(module, None)


GEN_PLUGIN = '''
    from pydantic import Field
    from restorekit import GeneratorComponent, Params, hookimpl
    class P(Params):
        k: int = Field(1, description="k")
    @hookimpl
    def restorekit_generators():
        return [GeneratorComponent(name={name!r}, params=P, build=lambda p: None, summary={summary!r})]
'''


def test_partial_overlay_switches_a_plugin_off(install, tmp_path: Path) -> None:
    from restorekit.registry import default_registry_config

    install({"clash": GEN_PLUGIN.format(name="rrdb", summary="third-party rrdb")})
    user = tmp_path / "mine.toml"
    user.write_text("[plugins.clash]\nenabled = false\n")
    config = default_registry_config(user)
    assert config.plugins["rrdb"].entry_point == "restorekit_rrdb.plugin"  # the shipped entries stay whole
    reg = PluginRegistry.load(config, only=["clash", "rrdb"])
    infos = {i.name: i for i in reg.plugin_infos()}
    assert infos["clash"].status == "disabled"
    assert infos["clash"].reason == f"turned off in {user} (plugins.clash.enabled = false)"
    assert reg.get("generator", "rrdb").plugin == "rrdb"
    # an overlay field laid over a shipped entry keeps the entry's other fields
    user.write_text("[plugins.srflow]\nsummary = \"mine\"\n")
    merged = default_registry_config(user)
    assert merged.plugins["srflow"].summary == "mine" and merged.plugins["srflow"].generators == ["srflow"]


def test_clash_errors_name_the_users_file_and_one_cause(install, tmp_path: Path) -> None:
    from restorekit.registry import default_registry_config

    install({"clash": GEN_PLUGIN.format(name="rrdb", summary="third-party rrdb"), "broken": "import nowhere_at_all\n"})
    user = tmp_path / "mine.toml"
    user.write_text("[plugins.clash]\nsummary = \"x\"\n")
    reg = PluginRegistry.load(default_registry_config(user), only=["clash", "rrdb", "broken"])
    with pytest.raises(UserError) as info:
        reg.get("generator", "rrdb")
    assert str(info.value) == (f"generator 'rrdb' is provided by plugins 'clash' and 'rrdb'; pin one in {user}: "
                               '[pins.generator] rrdb = "<plugin>"')
    # a pin to a broken plugin: the pin's file, the field, one cause
    user.write_text('[pins.generator]\nrrdb = "broken"\n')
    reg = PluginRegistry.load(default_registry_config(user), only=["clash", "rrdb", "broken"])
    with pytest.raises(UserError) as info:
        reg.get("generator", "rrdb")
    assert str(info.value) == (f"{user}: pins.generator.rrdb: plugin 'broken' is broken "
                               "(import failed: ModuleNotFoundError: No module named 'nowhere_at_all')")
    # a pin to a plugin that provides no such component
    user.write_text('[pins.generator]\nrrdb = "srflow"\n')
    reg = PluginRegistry.load(default_registry_config(user), only=["clash", "rrdb", "srflow"])
    with pytest.raises(UserError, match=rf"^{re.escape(str(user))}: pins.generator.rrdb: plugin 'srflow' provides no "
                                        r"generator 'rrdb' \(provided by 'clash' and 'rrdb'\)$"):
        reg.get("generator", "rrdb")


def test_a_broken_plugin_does_not_hide_the_did_you_mean(install) -> None:
    install({"espcn": GEN_PLUGIN.format(name="espcn", summary="espcn"), "broken": "raise RuntimeError('boom')\n"})
    reg = PluginRegistry.load(RegistryConfig(), only=["espcn", "broken"])
    with pytest.raises(UserError) as info:
        reg.get("generator", "espcnn")
    assert str(info.value) == "unknown generator 'espcnn' (did you mean 'espcn'?) (available: espcn)"
    with pytest.raises(UserError) as info:
        reg.get("generator", "zzz")
    assert str(info.value) == ("unknown generator 'zzz' (available: espcn); plugin(s) 'broken' are broken or turned off "
                               "and were not asked (restore-run --list-plugins)")


def test_registry_settings_that_name_nothing_warn_with_a_suggestion(tmp_path: Path, monkeypatch) -> None:
    from restorekit import PluginWarning
    from restorekit.registry import RegistryError, default_registry_config

    user = tmp_path / "mine.toml"
    user.write_text('[plugins.srflw]\nenabled = false\n[plugins.rrdb]\nentry_point = "restorekit_rrdb.plugn"\n'
                    '[pins.generator]\nrrdb = "rdb"\n')
    with pytest.warns(PluginWarning) as record:
        reg = PluginRegistry.load(default_registry_config(user), only=["rrdb"])
    assert sorted(str(w.message) for w in record) == sorted([
        f"{user}: plugins.srflw: no plugin 'srflw' is installed (did you mean 'srflow'?); entry ignored",
        f"{user}: plugins.rrdb.entry_point: 'restorekit_rrdb.plugn' is not the installed entry point "
        "'restorekit_rrdb.plugin'",
        f"{user}: pins.generator.rrdb: no plugin 'rdb' is installed (did you mean 'rrdb'?)",
    ])
    with pytest.raises(RegistryError, match=rf"^{re.escape(str(user))}: pins.generator.rrdb: no plugin 'rdb' is "
                                            r"installed \(did you mean 'rrdb'\?\)$"):
        reg.get("generator", "rrdb")
    monkeypatch.setenv("RESTOREKIT_LOAD_PLUGINS", "rrdb, srflw")
    with pytest.raises(UserError, match=r"^\$RESTOREKIT_LOAD_PLUGINS: no plugin 'srflw' is installed "
                                        r"\(did you mean 'srflow'\?\) \(installed: .*rrdb.*\)$"):
        PluginRegistry.load(RegistryConfig())


def test_faulty_detect_is_isolated_named_and_warned_once(tmp_path: Path, registry: PluginRegistry) -> None:
    import torch

    import restorekit
    from restorekit import PluginWarning

    class FaultyDetect:
        @hookimpl
        def restorekit_generators(self):
            def detect(sd):
                return sd["body.weight"] is not None  # KeyError on every file but its own

            return [GeneratorComponent(name="faulty", params=TinyParams, build=tiny_build, detect=detect)]

    registry.register(FaultyDetect(), "thirdparty")
    from restorekit_rrdb import RRDBNet

    net = RRDBNet(nf=8, nb=1, gc=4, scale=2)
    path = tmp_path / "rrdb.pth"
    torch.save(net.state_dict(), path)
    with pytest.warns(PluginWarning) as record:
        model = restorekit.load(path, registry=registry)
        restorekit.load(path, registry=registry)
    assert [str(w.message) for w in record] == [
        f"plugin 'thirdparty': generator 'faulty' detect() failed on {path} (KeyError: 'body.weight'); skipped"
    ]
    x = torch.rand(1, 3, 4, 4)
    assert torch.equal(model(x), net.eval()(x))


def test_trace_prints_every_hook_call(monkeypatch, capsys) -> None:
    monkeypatch.setenv("RESTOREKIT_TRACE_PLUGINS", "1")
    reg = PluginRegistry()
    reg.register(Provider("a"), "first")
    reg.register(Provider("b"), "second")
    assert reg.names("generator") == ["a", "b"]
    err = capsys.readouterr().err
    calls = [line for line in err.splitlines() if line.strip() == "restorekit_generators [hook]"]
    results = [line for line in err.splitlines() if line.strip().startswith("finish restorekit_generators -->")]
    assert len(calls) == 2 and "name='a'" in results[0] and "name='b'" in results[1]
    assert [line.strip() for line in err.splitlines() if line.strip().endswith("[plugin]")] == [
        "first [plugin]", "second [plugin]"]
    monkeypatch.setenv("RESTOREKIT_TRACE_PLUGINS", "0")
    quiet = PluginRegistry()
    quiet.register(Provider("a"), "first")
    quiet.names("generator")
    assert capsys.readouterr().err == ""
