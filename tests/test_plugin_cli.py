"""``restore-run --list-plugins``, ``--options``, ``--schema`` and the plugin registry on the command line."""

from __future__ import annotations

import json
import subprocess
import sys

from pydantic import Field

from restorekit import GeneratorComponent, Params, hookimpl
from restorekit.cli import main
from restorekit.registry import PluginRegistry, RegistryConfig


class GenParams(Params):
    scale: int = Field(2, ge=1, description="Upscaling factor.")


class Gen:
    def __init__(self, summary: str) -> None:
        self.summary = summary

    @hookimpl
    def restorekit_generators(self):
        return [GeneratorComponent(name="rrdb", params=GenParams, build=lambda p: None, summary=self.summary)]


def clash_registry(pin: str | None) -> PluginRegistry:
    reg = PluginRegistry(RegistryConfig(pins={"generator": {"rrdb": pin}} if pin else {}))
    reg.register(Gen("first-party RRDB"), "rrdb")
    reg.register(Gen("third-party RRDB"), "clash")
    return reg


def test_list_plugins_shows_each_plugins_own_components_and_the_pin(capsys) -> None:
    assert main(["--list-plugins"], registry=clash_registry("rrdb")) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "clash  [ok]  (?)",
        "    generator rrdb - third-party RRDB  [not used: pinned to rrdb]",
        "rrdb  [ok]  (?)",
        "    generator rrdb - first-party RRDB  [pinned; also from clash]",
        "pin: generator 'rrdb' -> rrdb",
    ]
    assert main(["--list-plugins", "--json"], registry=clash_registry(None)) == 0
    report = json.loads(capsys.readouterr().out)
    rows = {p["name"]: p["details"] for p in report["plugins"]}
    assert rows["clash"] == [{"kind": "generator", "name": "rrdb", "summary": "third-party RRDB", "state": "conflict",
                              "providers": ["clash", "rrdb"], "pin": None}]
    assert rows["rrdb"][0]["summary"] == "first-party RRDB"
    assert report["conflicts"] == {"generator": {"rrdb": ["clash", "rrdb"]}} and report["pins"] == {}
    assert main(["--list-plugins", "--json"], registry=clash_registry("clash")) == 0
    report = json.loads(capsys.readouterr().out)
    states = {p["name"]: p["details"][0]["state"] for p in report["plugins"]}
    assert states == {"clash": "pinned", "rrdb": "shadowed"} and report["pins"] == {"generator": {"rrdb": "clash"}}


def test_options_prints_types_defaults_and_descriptions(registry, capsys) -> None:
    assert main(["--options", "loss", "pixel"], registry=registry) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "loss pixel (plugin builtins) - l1 / l2 / charbonnier between two state keys"
    assert '  criterion: "l1" | "l2" | "mse" | "charbonnier" (default "l1")' in out
    assert "  eps: float (default 1e-06, > 0)" in out and "      State key of the prediction." in out
    assert main(["--options", "generator", "srflow", "--json"], registry=registry) == 0
    data = json.loads(capsys.readouterr().out)
    fields = {r["name"]: r for r in data["params"]}
    assert fields["scale"]["default"] == 4 and fields["K"]["type"] == "int" and fields["K"]["bounds"] == ">= 1"
    assert "srflow-df2k-4x" in data["presets"] and data["plugin"] == "srflow"
    assert main(["--options", "generator", "srflw"], registry=registry) == 2
    assert capsys.readouterr().err.strip() == (
        "restore-run: error: unknown generator 'srflw' (did you mean 'srflow'?) (available: rrdb, srflow)")
    assert main(["--options", "network", "srflow"], registry=registry) == 2
    assert "unknown component kind 'network'" in capsys.readouterr().err


def test_schema_holds_every_components_params_as_a_union_on_component(registry, capsys) -> None:
    assert main(["--schema"], registry=registry) == 0
    schema = json.loads(capsys.readouterr().out)
    defs = schema["$defs"]
    assert defs["loss.pixel"]["properties"]["criterion"]["enum"] == ["l1", "l2", "mse", "charbonnier"]
    assert "scale" in defs["generator.srflow"]["properties"] and "PSNR" in defs["validator.psnr"]["description"]
    rules = {r["if"]["properties"]["component"]["const"]: r["then"]["properties"]["params"]["$ref"]
             for r in defs["NetworkSpec"]["allOf"]}
    assert rules == {"rrdb": "#/$defs/generator.rrdb", "srflow": "#/$defs/generator.srflow"}
    rrdb = defs["generator.rrdb"]
    assert rrdb["additionalProperties"] is False and "required" not in rrdb  # presets/checkpoints fill fields
    assert {r["if"]["properties"]["component"]["const"] for r in defs["LossSpec"]["allOf"]} == {"pixel", "direct"}

    def refs(node: object) -> list[str]:
        if isinstance(node, dict):
            return [v for k, v in node.items() if k == "$ref"] + [r for v in node.values() for r in refs(v)]
        return [r for v in node for r in refs(v)] if isinstance(node, list) else []

    dangling = [r for r in refs(schema) if r.removeprefix("#/$defs/") not in defs]
    assert dangling == []


def test_list_plugins_into_a_closed_pipe_ends_quietly() -> None:
    """``restore-run --list-plugins --json | head -1``: no BrokenPipeError traceback."""
    code = "import sys; from restorekit.cli import main; sys.exit(main())"
    proc = subprocess.Popen([sys.executable, "-c", code, "--list-plugins", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the first write
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert err == "" and proc.returncode == 141


def test_listings_are_data_the_library_prints_nothing(registry, capsys) -> None:
    from restorekit.plugin_info import component_report, plugins_report

    report = plugins_report(clash_registry("rrdb"))
    options = component_report(registry, "loss", "pixel")
    assert capsys.readouterr() == ("", "")
    assert [p["name"] for p in report["plugins"]] == ["clash", "rrdb"]
    assert report["pins"] == {"generator": {"rrdb": "rrdb"}}
    assert options["plugin"] == "builtins" and {r["name"] for r in options["params"]} >= {"criterion", "eps"}
