"""RRDB checkpoint layouts: spandrel-style round trips (build → save → detect → params → convert → load).

The BasicSR/Real-ESRGAN and old-ESRGAN layouts are produced by reference modules written here with those
projects' module structure (not by renaming), so key names and forward passes are checked independently of
``restorekit_rrdb.formats``.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from safetensors.torch import save_file
from torch import Tensor, nn

from restorekit.api import load
from restorekit.checkpoint import read_state_dict
from restorekit.errors import UserError
from restorekit_rrdb import (
    PRESETS,
    RRDBNet,
    RRDBParams,
    build_rrdb,
    convert_state_dict,
    detect,
    detect_layout,
    params_from_state_dict,
    to_official_names,
)
from restorekit_rrdb import plugin as rrdb_plugin

# ----------------------------------------------------------------------------------------------------
# reference modules in the BasicSR and old-ESRGAN structures


def _conv(a: int, b: int) -> nn.Conv2d:
    conv = nn.Conv2d(a, b, 3, 1, 1)
    nn.init.normal_(conv.weight, std=0.5 / (9 * a) ** 0.5)
    nn.init.normal_(conv.bias, std=0.02)
    return conv


class _DenseBlock(nn.Module):
    """A residual dense block; ``old=True`` wraps each conv in a Sequential (old ESRGAN's ``convj.0``)."""

    def __init__(self, nf: int, gc: int, old: bool) -> None:
        super().__init__()
        for j in range(1, 6):
            conv = _conv(nf + (j - 1) * gc, gc if j < 5 else nf)
            if old:
                conv = nn.Sequential(conv, nn.LeakyReLU(0.2)) if j < 5 else nn.Sequential(conv)
            setattr(self, f"conv{j}", conv)
        self.old = old

    def forward(self, x: Tensor) -> Tensor:
        feats = [x]
        for j in range(1, 5):
            y = getattr(self, f"conv{j}")(torch.cat(feats, 1))
            feats.append(y if self.old else F.leaky_relu(y, 0.2))
        return x + 0.2 * self.conv5(torch.cat(feats, 1))


class _BasicSRRRDB(nn.Module):
    def __init__(self, nf: int, gc: int) -> None:
        super().__init__()
        self.rdb1, self.rdb2, self.rdb3 = (_DenseBlock(nf, gc, old=False) for _ in range(3))

    def forward(self, x: Tensor) -> Tensor:
        return x + 0.2 * self.rdb3(self.rdb2(self.rdb1(x)))


class BasicSRNet(nn.Module):
    """BasicSR's RRDBNet structure. BasicSR (Real-ESRGAN) gives scale 2 and 1 a pixel-unshuffle input and
    then upsamples x4; ``unshuffle=False`` builds plain x2/x1 networks with these names instead."""

    def __init__(
        self, in_nc: int, out_nc: int, nf: int, nb: int, gc: int, scale: int, unshuffle: bool = True
    ) -> None:
        super().__init__()
        self.unshuffle = 4 // scale if unshuffle and scale in (1, 2) else 1
        self.conv_first = _conv(in_nc * self.unshuffle**2, nf)
        self.body = nn.Sequential(*[_BasicSRRRDB(nf, gc) for _ in range(nb)])
        self.conv_body = _conv(nf, nf)
        self.n_up = 2 if self.unshuffle > 1 else scale.bit_length() - 1
        for m in range(1, self.n_up + 1):
            setattr(self, f"conv_up{m}", _conv(nf, nf))
        self.conv_hr = _conv(nf, nf)
        self.conv_last = _conv(nf, out_nc)

    def forward(self, x: Tensor) -> Tensor:
        if self.unshuffle > 1:
            x = F.pixel_unshuffle(x, self.unshuffle)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        for m in range(1, self.n_up + 1):
            up = F.interpolate(feat, scale_factor=2.0, mode="nearest")
            feat = F.leaky_relu(getattr(self, f"conv_up{m}")(up), 0.2)
        return self.conv_last(F.leaky_relu(self.conv_hr(feat), 0.2))


class _OldRRDB(nn.Module):
    def __init__(self, nf: int, gc: int) -> None:
        super().__init__()
        self.RDB1, self.RDB2, self.RDB3 = (_DenseBlock(nf, gc, old=True) for _ in range(3))

    def forward(self, x: Tensor) -> Tensor:
        return x + 0.2 * self.RDB3(self.RDB2(self.RDB1(x)))


class _Shortcut(nn.Module):
    def __init__(self, sub: nn.Sequential) -> None:
        super().__init__()
        self.sub = sub

    def forward(self, x: Tensor) -> Tensor:
        return x + self.sub(x)


class OldESRGAN(nn.Module):
    """Old ESRGAN's network: one flattened ``model`` Sequential."""

    def __init__(self, model: nn.Sequential) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


def old_esrgan(in_nc: int, out_nc: int, nf: int, nb: int, gc: int, scale: int) -> OldESRGAN:
    """Old ESRGAN's flattened sequential model: conv, shortcut(RRDBs + conv), (upsample, conv, lrelu)×n,
    conv, lrelu, conv."""
    layers: list[nn.Module] = [
        _conv(in_nc, nf),
        _Shortcut(nn.Sequential(*[_OldRRDB(nf, gc) for _ in range(nb)], _conv(nf, nf))),
    ]
    for _ in range(scale.bit_length() - 1):
        layers += [nn.Upsample(scale_factor=2, mode="nearest"), _conv(nf, nf), nn.LeakyReLU(0.2)]
    layers += [_conv(nf, nf), nn.LeakyReLU(0.2), _conv(nf, out_nc)]
    return OldESRGAN(nn.Sequential(*layers))


def official_net(in_nc: int, out_nc: int, nf: int, nb: int, gc: int, scale: int) -> nn.Module:
    net = RRDBNet(in_nc=in_nc, out_nc=out_nc, nf=nf, nb=nb, gc=gc, scale=scale, variant="esrgan")
    with torch.no_grad():
        for p in net.parameters():  # RDB init is tiny; make every part of the network matter
            p.normal_(std=0.1)
    return net


def plain_basicsr(in_nc: int, out_nc: int, nf: int, nb: int, gc: int, scale: int) -> nn.Module:
    return BasicSRNet(in_nc, out_nc, nf, nb, gc, scale, unshuffle=False)


FACTORIES: dict[str, Callable[..., nn.Module]] = {
    "official": official_net,
    "basicsr": plain_basicsr,
    "esrgan_old": old_esrgan,
}
HPARAMS = [
    # in_nc, out_nc, nf, nb, gc, scale
    (3, 3, 8, 1, 4, 2),
    (3, 3, 12, 2, 8, 4),
    (1, 1, 8, 3, 6, 8),
    (3, 3, 8, 1, 4, 1),
]
FILES = ["pth", "safetensors", "params_ema"]


def _save(sd: dict[str, Tensor], path: Path, kind: str) -> Path:
    sd = {k: v.detach().clone().contiguous() for k, v in sd.items()}
    if kind == "safetensors":
        path = path.with_suffix(".safetensors")
        save_file(sd, str(path))
    elif kind == "params_ema":
        path = path.with_suffix(".pth")
        torch.save({"params_ema": sd, "params": {k: torch.zeros_like(v) for k, v in sd.items()}, "iter": 5}, path)
    else:
        path = path.with_suffix(".pth")
        torch.save(sd, path)
    return path


def _roundtrip(ref: nn.Module, path: Path, expected: dict[str, Any], layout: str) -> RRDBNet:
    sd = read_state_dict(path)
    assert detect(sd)
    assert detect_layout(sd) == layout
    inferred = params_from_state_dict(sd)
    assert inferred == expected
    params = RRDBParams(**inferred)
    net = build_rrdb(params).eval()
    net.load_state_dict(convert_state_dict(sd, params), strict=True)
    assert net.arch_params == {**expected, "variant": "esrgan"}
    multiple = net.size_multiple
    x = torch.rand(2, expected["in_nc"], 2 * multiple + (4 if multiple == 1 else 0), 3 * multiple)
    with torch.no_grad():
        want, got = ref.eval()(x), net(x)
    assert got.shape == (2, expected["out_nc"], x.shape[2] * expected["scale"], x.shape[3] * expected["scale"])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    return net


@pytest.mark.parametrize("kind", FILES)
@pytest.mark.parametrize("hp", HPARAMS, ids=lambda hp: "nf{2}-nb{3}-gc{4}-x{5}-c{0}".format(*hp))
@pytest.mark.parametrize("layout", list(FACTORIES))
def test_roundtrip(layout: str, hp: tuple[int, ...], kind: str, tmp_path: Path) -> None:
    in_nc, out_nc, nf, nb, gc, scale = hp
    ref = FACTORIES[layout](in_nc, out_nc, nf, nb, gc, scale)
    path = _save(ref.state_dict(), tmp_path / "model", kind)
    expected = dict(in_nc=in_nc, out_nc=out_nc, nf=nf, nb=nb, gc=gc, scale=scale, pixel_unshuffle=False)
    _roundtrip(ref, path, expected, layout)


@pytest.mark.parametrize("kind", FILES)
@pytest.mark.parametrize("scale", [2, 1])
def test_realesrgan_pixel_unshuffle(scale: int, kind: str, tmp_path: Path) -> None:
    """Real-ESRGAN x2 / x1: conv_first takes 12 / 48 channels, two upsampling convs."""
    ref = BasicSRNet(3, 3, 8, 1, 4, scale)
    assert ref.conv_first.weight.shape[1] == {2: 12, 1: 48}[scale]
    path = _save(ref.state_dict(), tmp_path / "realesrgan", kind)
    expected = {"in_nc": 3, "out_nc": 3, "nf": 8, "nb": 1, "gc": 4, "scale": scale, "pixel_unshuffle": True}
    net = _roundtrip(ref, path, expected, "basicsr")
    assert net.size_multiple == 4 // scale


def test_x16_official_names(tmp_path: Path) -> None:
    ref = official_net(3, 3, 4, 1, 4, 16)
    path = _save(ref.state_dict(), tmp_path / "x16", "pth")
    expected = {"in_nc": 3, "out_nc": 3, "nf": 4, "nb": 1, "gc": 4, "scale": 16, "pixel_unshuffle": False}
    _roundtrip(ref, path, expected, "official")


def test_old_layout_indices() -> None:
    """The documented model.<i> indices of the old sequential layout, for x1..x16."""
    table = {1: ([], 2, 4), 2: ([3], 5, 7), 4: ([3, 6], 8, 10), 8: ([3, 6, 9], 11, 13), 16: ([3, 6, 9, 12], 14, 16)}
    for scale, (ups, hr, last) in table.items():
        sd = old_esrgan(3, 3, 4, 2, 4, scale).state_dict()
        tops = sorted({int(k.split(".")[1]) for k in sd if k.count(".") == 2})
        assert tops == [0, *ups, hr, last]
        assert "model.1.sub.2.weight" in sd  # trunk conv after nb = 2 blocks
        off = to_official_names(sd)
        assert {f"upconv{m}.weight" for m in range(1, len(ups) + 1)} <= set(off)
        assert off["HRconv.weight"] is sd[f"model.{hr}.weight"]
        assert off["conv_last.bias"] is sd[f"model.{last}.bias"]
        assert off["trunk_conv.weight"] is sd["model.1.sub.2.weight"]


@settings(max_examples=20, deadline=None)
@given(
    layout=st.sampled_from(sorted(FACTORIES)),
    nf=st.integers(1, 6),
    nb=st.integers(1, 3),
    gc=st.integers(1, 5),
    scale=st.sampled_from([1, 2, 4, 8]),
    io=st.sampled_from([(3, 3), (1, 1), (4, 3)]),
)
def test_params_roundtrip_property(layout: str, nf: int, nb: int, gc: int, scale: int, io: tuple[int, int]) -> None:
    sd = FACTORIES[layout](io[0], io[1], nf, nb, gc, scale).state_dict()
    inferred = params_from_state_dict(sd)
    assert inferred == {
        "in_nc": io[0], "out_nc": io[1], "nf": nf, "nb": nb, "gc": gc, "scale": scale, "pixel_unshuffle": False
    }
    net = build_rrdb(RRDBParams(**inferred))
    net.load_state_dict(convert_state_dict(sd, RRDBParams(**inferred)), strict=True)


def test_load_api_detects_every_layout(tmp_path: Path, empty_registry) -> None:
    empty_registry.register(rrdb_plugin, "rrdb")
    x = torch.rand(1, 3, 5, 6)
    for layout, factory in FACTORIES.items():
        ref = factory(3, 3, 8, 2, 4, 4).eval()
        path = _save(ref.state_dict(), tmp_path / layout, "pth")
        net = load(path, registry=empty_registry)
        assert isinstance(net, RRDBNet) and net.variant == "esrgan"
        with torch.no_grad():
            torch.testing.assert_close(net(x), ref(x), rtol=1e-5, atol=1e-6)
    srflow = load(tmp_path / "official.pth", registry=empty_registry, preset="srflow-rrdb")
    assert srflow.variant == "srflow" and srflow.nb == 2  # the file's nb wins over the preset's 23


# ----------------------------------------------------------------------------------------------------
# mismatches and refusals


@pytest.fixture(scope="module")
def x4_sd() -> dict[str, Tensor]:
    return dict(BasicSRNet(3, 3, 12, 2, 8, 4).state_dict())


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"nb": 4}, "nb: checkpoint has 2 blocks, params say 4"),
        ({"nf": 16}, "nf: checkpoint has 12 feature channels, params say 16"),
        ({"gc": 16}, "gc: checkpoint has 8 growth channels, params say 16"),
        ({"out_nc": 1}, "out_nc: checkpoint has 3 output channels, params say 1"),
        ({"in_nc": 1}, "in_nc: checkpoint's conv_first takes 3 channels, params say 1"),
        ({"scale": 8}, "scale: checkpoint is x4, params say 8"),
        ({"scale": 2}, "scale: checkpoint is x4, params say 2"),
        ({"scale": 2, "pixel_unshuffle": True}, "scale: checkpoint is x4, params say 2"),
    ],
)
def test_mismatch_is_one_line_naming_the_parameter(x4_sd: dict[str, Tensor], override: dict, message: str) -> None:
    params = RRDBParams(**{**params_from_state_dict(x4_sd), **override})
    with pytest.raises(UserError) as exc:
        convert_state_dict(x4_sd, params)
    assert str(exc.value) == message


def test_pixel_unshuffle_mismatch() -> None:
    sd = BasicSRNet(3, 3, 8, 1, 4, 2).state_dict()
    with pytest.raises(UserError, match=r"^pixel_unshuffle: checkpoint has a pixel-unshuffle input \(conv_first"):
        convert_state_dict(sd, RRDBParams(nf=8, nb=1, gc=4, scale=2))
    with pytest.raises(UserError, match=r"^scale: checkpoint is x2 \(pixel-unshuffle input\), params say 4$"):
        convert_state_dict(sd, RRDBParams(nf=8, nb=1, gc=4, scale=4))
    # a 12-channel input, x4 network read literally is also fine when the params say so
    convert_state_dict(sd, RRDBParams(in_nc=12, nf=8, nb=1, gc=4, scale=4))


def test_mismatch_through_load(tmp_path: Path, empty_registry, x4_sd: dict[str, Tensor]) -> None:
    empty_registry.register(rrdb_plugin, "rrdb")
    path = _save(x4_sd, tmp_path / "x4", "pth")
    with pytest.raises(UserError) as exc:
        load(path, registry=empty_registry, nb=5)
    assert str(exc.value) == f"{path}: nb: checkpoint has 2 blocks, params say 5"


def test_extra_tensor_passes_conversion_and_strict_load_reports_it(tmp_path: Path, empty_registry, x4_sd) -> None:
    empty_registry.register(rrdb_plugin, "rrdb")
    extra = {**x4_sd, "ema_decay": torch.zeros(1)}
    assert "ema_decay" in convert_state_dict(extra, RRDBParams(**params_from_state_dict(extra)))
    path = _save(extra, tmp_path / "extra", "pth")
    with pytest.raises(UserError, match="1 unexpected"):
        load(path, registry=empty_registry)
    assert isinstance(load(path, registry=empty_registry, strict=False), RRDBNet)


def test_srflow_checkpoint_is_not_an_rrdb_file() -> None:
    sd = {f"RRDB.{k}": v for k, v in official_net(3, 3, 4, 1, 4, 4).state_dict().items()}
    sd["flowUpsamplerNet.layers.1.actnorm.bias"] = torch.zeros(1, 12, 1, 1)
    assert not detect(sd)
    plain = {**official_net(3, 3, 4, 1, 4, 4).state_dict(), "flowUpsamplerNet.layers.1.actnorm.bias": torch.zeros(1)}
    assert not detect(plain)
    with pytest.raises(UserError, match="SRFlow network.*component 'srflow'"):
        convert_state_dict(plain, RRDBParams(nf=4, nb=1, gc=4))


@pytest.mark.parametrize(
    "sd",
    [
        {"conv_first.weight": torch.zeros(4, 3, 3, 3), "conv_last.weight": torch.zeros(3, 4, 3, 3)},
        {"encoder.0.weight": torch.zeros(2, 2)},
    ],
)
def test_unknown_layout(sd: dict[str, Tensor]) -> None:
    assert not detect(sd)
    for call in (lambda: params_from_state_dict(sd), lambda: convert_state_dict(sd, RRDBParams())):
        with pytest.raises(UserError, match="^not an RRDB/ESRGAN state dict") as exc:
            call()
        assert "\n" not in str(exc.value)


def test_broken_layouts_are_user_errors() -> None:
    old = dict(old_esrgan(3, 3, 4, 1, 4, 4).state_dict())
    old["model.12.weight"] = torch.zeros(3, 4, 3, 3)  # conv_last two places too far
    with pytest.raises(UserError, match="^old ESRGAN layout: convolutions at model.3, model.6, model.8, model.10, "):
        params_from_state_dict(old)
    shuffle = dict(official_net(3, 3, 4, 1, 4, 4).state_dict())
    shuffle["upconv1.weight"] = torch.zeros(16, 4, 3, 3)  # pixel-shuffle upsampling: 4·nf outputs
    with pytest.raises(UserError, match="^scale: upconv1 has 16 output channels for 4 features"):
        params_from_state_dict(shuffle)
    gap = dict(official_net(3, 3, 4, 2, 4, 4).state_dict())
    for k in [k for k in gap if k.startswith("RRDB_trunk.0.") and not k.startswith("RRDB_trunk.0.RDB1.conv1")]:
        del gap[k]
    gap = {k.replace("RRDB_trunk.1.", "RRDB_trunk.5."): v for k, v in gap.items()}
    with pytest.raises(UserError, match="^nb: trunk blocks are not numbered 0..1"):
        params_from_state_dict(gap)
    missing = dict(official_net(3, 3, 4, 1, 4, 4).state_dict())
    del missing["HRconv.weight"]
    with pytest.raises(UserError, match="^RRDB checkpoint: tensor 'HRconv.weight' is missing$"):
        params_from_state_dict(missing)


def _touch(path: str) -> None:
    Path(path).write_text("the pickle ran code")


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (_touch, (str(self.marker),))


def test_code_executing_pickle_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"conv_first.weight": torch.zeros(1), "payload": _Evil(marker)}, path)
    with pytest.raises(UserError, match="refused to load") as exc:
        read_state_dict(path)
    assert "\n" not in str(exc.value)
    assert not marker.exists()
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps(_Evil(marker), protocol=2))
    with pytest.raises(UserError):
        read_state_dict(raw)
    assert not marker.exists()


@pytest.mark.parametrize(
    "content",
    [{"lr": 0.001, "iter": 3}, [torch.zeros(2)], {}, b"not a checkpoint at all"],
    ids=["hyperparams", "list", "empty", "garbage"],
)
def test_not_a_state_dict_is_refused(tmp_path: Path, content: Any) -> None:
    path = tmp_path / "bad.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(UserError) as exc:
        read_state_dict(path)
    assert "\n" not in str(exc.value)
    bad_st = tmp_path / "bad.safetensors"
    bad_st.write_bytes(b"\x00\x01garbage")
    with pytest.raises(UserError):
        read_state_dict(bad_st)


# ----------------------------------------------------------------------------------------------------
# params model, presets, plugin


def test_params_model_and_presets() -> None:
    assert set(PRESETS) == {"esrgan-x4", "srflow-rrdb", "realesrgan-x4plus"}
    assert RRDBParams(preset="srflow-rrdb").variant == "srflow"
    assert RRDBParams(preset="srflow-rrdb", nb=4).nb == 4
    assert RRDBParams(preset="esrgan-x4").model_dump(exclude={"preset"}) == RRDBParams().model_dump(exclude={"preset"})
    with pytest.raises(ValidationError, match="unknown preset 'esrgan'"):
        RRDBParams(preset="esrgan")
    with pytest.raises(ValidationError, match="pixel_unshuffle needs scale 1 or 2"):
        RRDBParams(scale=4, pixel_unshuffle=True)
    with pytest.raises(ValidationError):
        RRDBParams(scale=3)
    with pytest.raises(ValidationError):
        RRDBParams(nbb=3)
    for name, field in RRDBParams.model_fields.items():
        assert field.description, name


def test_gradient_checkpointing_same_gradients() -> None:
    x = torch.rand(1, 3, 4, 4)
    grads = []
    for flag in (False, True):
        torch.manual_seed(1)
        net = build_rrdb(RRDBParams(nf=4, nb=2, gc=4, scale=2, gradient_checkpointing=flag)).train()
        assert net.gradient_checkpointing is flag
        net(x).square().mean().backward()
        grads.append(net.conv_first.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


def test_plugin_hook(empty_registry) -> None:
    comps = rrdb_plugin.restorekit_generators()
    assert [c.name for c in comps] == ["rrdb"]
    comp = comps[0]
    assert comp.params is RRDBParams and comp.build is build_rrdb and comp.presets is PRESETS
    assert comp.detect is detect and comp.summary
    empty_registry.register(rrdb_plugin, "rrdb")
    resolved = empty_registry.get("generator", "rrdb")
    assert resolved.plugin == "rrdb"
    net = resolved.component.build(RRDBParams(nf=4, nb=1, gc=4, scale=8))
    assert net(torch.rand(1, 3, 2, 3)).shape == (1, 3, 16, 24)
    assert net.scale == 8 and net.size_multiple == 1
