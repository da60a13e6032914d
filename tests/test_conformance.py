"""The conformance kit (``restorekit.testing``): every registered component passes it, and it catches the mistakes
a plugin author makes."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from restorekit import (
    GeneratorComponent,
    LossComponent,
    Params,
    ValidationResult,
    ValidatorComponent,
    hookimpl,
)
from restorekit.registry import KINDS, PluginRegistry, RegistryConfig
from restorekit.testing import (
    check_component,
    check_flow,
    check_generator,
    check_loss,
    check_params,
    check_validator,
    make_registry,
)

from fakes import TINY_SRFLOW

ROOT = Path(__file__).resolve().parents[1]

# Small params (and options) per shipped component; a component not listed runs with its defaults.
SETTINGS: dict[tuple[str, str], tuple[dict[str, Any], dict[str, Any]]] = {
    ("generator", "rrdb"): ({"nf": 8, "nb": 1, "gc": 4, "scale": 2}, {}),
    ("generator", "srflow"): (TINY_SRFLOW, {}),
    ("loss", "direct"): ({"key": "sr"}, {}),
    ("validator", "gaussian_distance"): ({}, {"generator": ("srflow", TINY_SRFLOW)}),
    ("validator", "nll"): ({}, {"generator": ("srflow", TINY_SRFLOW)}),
    ("validator", "diversity"): ({"distance": "l1"}, {}),
}


def shipped_registry() -> PluginRegistry:
    names = list(tomllib.loads((ROOT / "registry.toml").read_text())["plugins"])
    reg = PluginRegistry.load(RegistryConfig(), only=names)
    from restorekit.testing import _KitPlugin

    reg.register(_KitPlugin(), "restorekit.testing")
    return reg


def shipped_components() -> list[tuple[str, str]]:
    reg = shipped_registry()
    return [(kind, name) for kind in KINDS for name in reg.names(kind)]


SLOW = {("generator", "srflow")}  # the kit traces, exports and reloads its sampling and mean graphs: ~1 CPU-minute


@pytest.mark.parametrize(("kind", "name"), [pytest.param(*c, marks=pytest.mark.slow) if c in SLOW else c
                                            for c in shipped_components()], ids=lambda v: str(v))
def test_every_shipped_component_passes_the_kit(kind: str, name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    params, options = SETTINGS.get((kind, name), ({}, {}))
    if (kind, name) == ("validator", "lpips"):  # generated weights: the kit checks the interface, not the numbers
        from fakes import write_lpips_weights

        write_lpips_weights(tmp_path / "alexnet.pth", tmp_path / "alex.pth")
        params = {"trunk": tmp_path / "alexnet.pth", "linear": tmp_path / "alex.pth"}
        options = {"train": False}  # the kit's training images are smaller than AlexNet's 31 pixels
    check_component(shipped_registry(), kind, name, params, tmp_dir=tmp_path, **options)  # type: ignore[arg-type]


def test_the_parametrisation_covers_every_kind() -> None:
    kinds = {kind for kind, _ in shipped_components()}
    assert kinds == set(KINDS)
    assert {("generator", "rrdb"), ("generator", "srflow"), ("validator", "psnr")} <= set(shipped_components())


# ----------------------------------------------------------------------------------------------------
# the kit catches what a plugin gets wrong


class P(Params):
    scale: int = Field(2, description="Upscaling factor.")


class Net(nn.Module):
    def __init__(self, scale: int = 2, *, lie_scale: int | None = None, multiple: int = 1, arch: Any = None) -> None:
        super().__init__()
        self.scale = lie_scale or scale
        self.real = scale
        self.size_multiple = multiple
        self.arch_params = {"scale": scale} if arch is None else arch
        self.conv = nn.Conv2d(3, 3 * scale * scale, 3, padding=1)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.conv(lr), self.real)


def plugin(build: Any, params: type[Params] = P, name: str = "net", **extra: Any) -> object:
    class Plugin:
        @hookimpl
        def restorekit_generators(self):
            return [GeneratorComponent(name=name, params=params, build=build, **extra)]

    return Plugin()


def test_a_good_generator_passes(tmp_path: Path) -> None:
    model = check_generator(make_registry(("mine", plugin(lambda p: Net(p.scale)))), "net", {"scale": 3},
                            tmp_dir=tmp_path)
    assert model.scale == 3


@pytest.mark.parametrize(("build", "message"), [
    (lambda p: Net(p.scale, lie_scale=4), r"model\(lr\) of shape \(2, 3, 4, 4\) gave \(2, 3, 8, 8\), expected \(2, C, 16, 16\) for scale 4"),
    (lambda p: Net(p.scale, arch={"scale": 3}), "arch_params do not rebuild the same architecture"),
    (lambda p: Net(p.scale, arch={"scale": object()}), "arch_params are not JSON-able"),
    (lambda p: nn.Identity(), r"the module's scale must be an int >= 1, got None"),
])
def test_generator_mistakes_are_named(build: Any, message: str, tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match=message):
        check_generator(make_registry(("mine", plugin(build))), "net", tmp_dir=tmp_path, train=False)


def test_a_flow_flag_that_does_not_match_the_network_is_caught(tmp_path: Path) -> None:
    reg = make_registry(("mine", plugin(lambda p: Net(p.scale), flow=True)))
    with pytest.raises(AssertionError, match="declares flow=True, but build returned no FlowModel"):
        check_generator(reg, "net", tmp_dir=tmp_path, train=False)


def test_a_size_multiple_the_network_does_not_honour_is_caught(tmp_path: Path) -> None:
    class Strided(Net):  # claims any size works, but halves odd sizes
        def forward(self, lr: torch.Tensor) -> torch.Tensor:
            h, w = lr.shape[-2:]
            return F.interpolate(super().forward(lr[..., : h // 2 * 2, : w // 2 * 2]), scale_factor=1)

    with pytest.raises(AssertionError, match=r"size_multiple is 1, but an LR of \(4, 5\) gave \(8, 8\)"):
        check_generator(make_registry(("mine", plugin(lambda p: Strided(p.scale)))), "net", tmp_dir=tmp_path,
                        train=False)


def test_a_buffer_lost_in_save_and_load_is_caught(tmp_path: Path) -> None:
    class Stateful(Net):
        def __init__(self, scale: int) -> None:
            super().__init__(scale)
            self.register_buffer("offset", torch.zeros(1), persistent=False)  # not saved: lost on load

        def forward(self, lr: torch.Tensor) -> torch.Tensor:
            return super().forward(lr) + self.offset

    with pytest.raises(AssertionError, match="the loaded model's output differs from the saved model's"):
        check_generator(make_registry(("mine", plugin(lambda p: Stateful(p.scale)))), "net", tmp_dir=tmp_path,
                        train=False)


def test_a_generator_the_losses_do_not_reach_is_caught(tmp_path: Path) -> None:
    class Detached(Net):
        def forward(self, lr: torch.Tensor) -> torch.Tensor:
            return super().forward(lr).detach() + 0 * lr.mean()

    with pytest.raises(AssertionError, match="the losses reach no weight of the generator"):
        check_generator(make_registry(("mine", plugin(lambda p: Detached(p.scale)))), "net", tmp_dir=tmp_path)


def test_params_models_must_forbid_unknown_keys_and_describe_fields() -> None:
    from pydantic import BaseModel

    class Loose(BaseModel):
        scale: int = Field(2, description="x")

    class Undocumented(Params):
        scale: int = 2

    with pytest.raises(AssertionError, match="must reject unknown keys: derive from restorekit.Params"):
        check_params(GeneratorComponent(name="x", params=Loose, build=Net))
    with pytest.raises(AssertionError, match="fields without a description: scale"):
        check_params(GeneratorComponent(name="x", params=Undocumented, build=Net))


def test_a_flow_that_does_not_invert_is_caught() -> None:
    from restorekit_srflow import SRFlowNet

    class Lossy(SRFlowNet):
        def decode(self, lr, latents=None, temperature=0.0, generator=None, **kw):  # type: ignore[override]
            return super().decode(lr, latents=latents, temperature=temperature, generator=generator, **kw) * 0.9

    with pytest.raises(AssertionError, match=r"decode\(encode\(hr\)\) differs from hr by"):
        check_flow(Lossy(scale=4, **TINY_SRFLOW))
    check_flow(SRFlowNet(scale=4, **TINY_SRFLOW))


def test_loss_and_validator_mistakes_are_named(tmp_path: Path) -> None:
    class LP(Params):
        pass

    class Mine:
        @hookimpl
        def restorekit_losses(self):
            return [LossComponent(name="per_pixel", params=LP, build=lambda p: lambda s: (s["sr"] - s["hq"]).abs()),
                    LossComponent(name="constant", params=LP, build=lambda p: lambda s: torch.tensor(1.0))]

        @hookimpl
        def restorekit_validators(self):
            def unnamed(model, samples, ctx):
                return ValidationResult({"x": 1.0}, [{"x": 1.0} for _ in samples])

            def nan(model, samples, ctx):
                return ValidationResult({"x": float("nan")}, [{"name": s.name, "x": 1.0} for s in samples])

            return [ValidatorComponent(name="unnamed", params=LP, build=lambda p: unnamed),
                    ValidatorComponent(name="nan", params=LP, build=lambda p: nan)]

    reg = make_registry(("mine", Mine()))
    with pytest.raises(AssertionError, match=r"loss 'per_pixel': loss\(state\) must return a 0-d tensor"):
        check_loss(reg, "per_pixel")
    with pytest.raises(AssertionError, match="does not depend on any state entry that requires grad"):
        check_loss(reg, "constant")
    with pytest.raises(AssertionError, match="does not carry the sample's name 'kit_0'"):
        check_validator(reg, "unnamed", tmp_dir=tmp_path)
    with pytest.raises(AssertionError, match="metric 'x' = nan is not a finite number"):
        check_validator(reg, "nan", tmp_dir=tmp_path)


@pytest.mark.slow  # four kit runs, each training for a few steps
def test_the_example_plugin_passes_its_own_kit_tests(tmp_path: Path, monkeypatch) -> None:
    """examples/third_party_plugin/tests run against the source tree (tests/test_packaging.py installs it)."""
    import importlib.util
    import sys

    example = ROOT / "examples" / "third_party_plugin"
    monkeypatch.syspath_prepend(str(example))
    spec = importlib.util.spec_from_file_location("restorekit_example_tests", example / "tests" / "test_plugin.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        ran = []
        for name, test in sorted(vars(module).items()):
            if name.startswith("test_") and name != "test_installed_entry_point_lists_every_component":
                (tmp_path / name).mkdir()
                test(tmp_path / name)
                ran.append(name)
        assert len(ran) == 4
    finally:
        for name in [m for m in sys.modules if m == "restorekit_espcn" or m.startswith("restorekit_espcn.")]:
            del sys.modules[name]
