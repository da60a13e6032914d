"""The fast paths restore-run uses and the benchmark measures (restorekit.perf): the memory-layout probe, the
sample batcher, torch.compile's fallback, tiled encoding of large images — each equal to the plain path."""

from __future__ import annotations

import copy

from pathlib import Path

import pytest
import restorekit
import torch
from restorekit import Switches, perf
from restorekit.tiling import tiled_flow_encode
from restorekit_rrdb import RRDBNet
from torch import nn

from fakes import tiny_srflow

SRFLOW_SWITCHES = Switches(training=("fold_actnorm", "fold_scale"), frozen_in_training=("RRDB.",))

def test_layout_probe_keeps_outputs_equal() -> None:
    torch.manual_seed(0)
    net = RRDBNet(nf=8, nb=1, gc=4).eval()
    x = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        ref = net(x)
        choice = perf.choose_layout(net, x, min_weights=0)
        assert net.conv_first.weight.is_contiguous(memory_format=torch.channels_last) == (choice == "channels_last")
        got = net(perf.in_layout(choice, x))
        perf.to_layout(net, "channels_last")
        cl = net(x.contiguous(memory_format=torch.channels_last))
    assert (got - ref).abs().max() <= 1e-5 and (cl - ref).abs().max() <= 1e-5


class _Clock:
    """A fake clock for the choosers' ``timer``: a call takes what the fake modules charge, never wall time."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self, fn, device):
        start = self.now
        out = fn()
        return self.now - start, out


class _LayoutSensitive(nn.Module):
    """Gives a different answer in channels_last (and is made to look faster there)."""

    def __init__(self, clock: _Clock | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.clock = clock

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cl = self.conv.weight.is_contiguous(memory_format=torch.channels_last) and not self.conv.weight.is_contiguous()
        if self.clock is not None:
            self.clock.now += 1.0 if cl else 3.0
        return self.conv(x) + (1.0 if cl else 0.0)


def test_layout_probe_rejects_a_faster_layout_that_changes_the_output() -> None:
    clock = _Clock()
    m = _LayoutSensitive(clock)
    with torch.no_grad():
        assert perf.choose_layout(m, torch.rand(1, 3, 4, 4), min_weights=0, timer=clock) == "contiguous"
    assert clock.now > 0  # the probe ran (channels_last looked 3x faster)
    assert m.conv.weight.is_contiguous()
    tiny = _LayoutSensitive()
    assert perf.choose_layout(tiny, torch.rand(1, 3, 4, 4)) == "contiguous"  # too small to be worth a probe


class _FakeFlow:
    """decode() charges ``cost(n)`` to the clock for a batch of n latent sets; returns the top latent."""

    def __init__(self, cost, clock: _Clock) -> None:
        self.cost, self.calls, self.clock = cost, [], clock

    def decode(self, lr, latents, cond=None):
        n = int(latents[0].shape[0])
        self.calls.append(n)
        self.clock.now += self.cost(n)
        return latents[0] * 2


def _sets(n: int) -> list[list[torch.Tensor]]:
    return [[torch.full((1, 1, 2, 2), float(i))] for i in range(n)]


def test_sample_batcher_batches_when_batching_pays_and_loops_when_not() -> None:
    lr = torch.zeros(1, 3, 2, 2)
    clock = _Clock()
    cheap = _FakeFlow(lambda n: 0.02, clock)  # a batch costs what one sample costs: batch everything
    b = perf.SampleBatcher(max_chunk=4, timer=clock)
    outs = b.decode(cheap, lr, _sets(12))
    assert [float(o[0, 0, 0, 0]) for o in outs] == [2.0 * i for i in range(12)]  # order kept
    assert b.chunks[("cpu", (1, 3, 2, 2))] == 4 and max(cheap.calls) == 4
    dear = _FakeFlow(lambda n: 0.01 * n * n, clock)  # per-sample cost grows with the batch: loop
    b2 = perf.SampleBatcher(timer=clock)
    outs = b2.decode(dear, lr, _sets(6))
    assert len(outs) == 6 and b2.chunks[("cpu", (1, 3, 2, 2))] == 1 and dear.calls == [1, 1, 2, 2]  # probed, settled
    dear.calls.clear()
    b2.decode(dear, lr, _sets(3))  # settled: no more probing
    assert dear.calls == [1, 1, 1]


def test_sample_batcher_matches_single_decodes_on_srflow() -> None:
    net = tiny_srflow()
    lr = torch.rand(1, 3, 8, 8)
    gen = torch.Generator().manual_seed(1)
    sets = [[0.8 * torch.randn((1, *s), generator=gen) for s in net.latent_shapes(lr.shape)] for _ in range(5)]
    with torch.inference_mode():
        ref = [net.decode(lr, latents=zs) for zs in sets]  # plain: features recomputed every time
        b = perf.SampleBatcher()
        b.chunks[("cpu", tuple(lr.shape))] = 4  # force a chunk of 4 and a remainder of 1
        got = b.decode(net, lr, sets, net.conditional_features(lr))
    assert max(float((a - c).abs().max()) for a, c in zip(ref, got)) <= 1e-4


def test_compile_failure_is_one_line_and_runs_uncompiled(monkeypatch) -> None:
    def broken(*_a, **_k):
        raise RuntimeError("no C++ compiler found\nlong details")

    monkeypatch.setattr(torch, "compile", broken)
    said: list[str] = []
    m = nn.Conv2d(3, 3, 1)
    got, note = perf.maybe_compile(m, torch.rand(1, 3, 4, 4), warn=said.append)
    assert got is m and said == [note] and m._compiled_call_impl is None
    assert note == ("run.compile: torch.compile is not available here (RuntimeError: no C++ compiler found); "
                    "running uncompiled")


def _smooth_pair(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    lr = torch.nn.functional.interpolate(torch.rand(1, 3, h // 4, w // 4, generator=g), size=(h, w), mode="bicubic")
    hr = torch.nn.functional.interpolate(lr, scale_factor=4, mode="bicubic")
    hr = hr + 0.05 * torch.rand(1, 3, 4 * h, 4 * w, generator=g)
    return lr, hr


def test_tiled_encode_equals_the_whole_image_encode_with_enough_overlap() -> None:
    net = tiny_srflow()
    lr, hr = _smooth_pair(24, 40)
    with torch.inference_mode():
        whole = net.encode(hr, lr).latents
        one_tile = tiled_flow_encode(net, hr, lr, tile=64, overlap=0)
        wide = tiled_flow_encode(net, hr, lr, tile=16, overlap=12)
        narrow = tiled_flow_encode(net, hr, lr, tile=16, overlap=4)
        back = net.decode(lr, latents=wide)
    assert [z.shape for z in one_tile] == [z.shape for z in whole]
    assert all(torch.equal(a, b) for a, b in zip(one_tile, whole))
    err = [max(float((a - b).abs().max()) for a, b in zip(zs, whole)) for zs in (wide, narrow)]
    assert err[0] < 1e-3 < err[1]  # the error is confined to the cut lines and shrinks with the overlap
    assert float((back - hr).abs().max()) < 1e-3  # restore round trip


def test_tiled_encode_rejects_unaligned_sizes() -> None:
    import pytest

    net = tiny_srflow()
    lr, hr = _smooth_pair(24, 40)
    with pytest.raises(ValueError, match="not 4x the LR"):
        tiled_flow_encode(net, hr[..., :-4], lr, tile=16, overlap=4)


def _train_pair(hidden: int = 8) -> tuple[nn.Module, nn.Module, torch.Tensor, torch.Tensor]:
    import copy

    net = tiny_srflow(hidden).train()
    lr, hr = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        net.encode(hr, lr)  # data-dependent ActNorm initialisation
    lean = copy.deepcopy(net)
    assert perf.lean_training(lean, SRFLOW_SWITCHES) > 0
    return net, lean, lr, hr


def test_folded_actnorm_training_gives_the_same_loss_and_gradients() -> None:
    plain, lean, lr, hr = _train_pair()
    a = plain.encode(hr, lr).nll.mean()
    b = lean.encode(hr, lr).nll.mean()
    a.backward()
    b.backward()
    assert abs(float(a.detach()) - float(b.detach())) <= 1e-5
    for p, q in zip(plain.parameters(), lean.parameters()):
        if p.grad is not None:
            assert float((p.grad - q.grad).abs().max()) <= 1e-5 * max(1.0, float(p.grad.abs().max()))
    with torch.no_grad():  # inference (cached coupling terms, factored 2·LR map) is the same function
        a, b = (n.decode(lr, latents=n.encode(hr, lr).latents) for n in (plain, lean))
        assert float((a - b).abs().max()) <= 1e-5


def _saved_bytes(net: nn.Module, fn) -> int:
    """Bytes of the distinct storages, other than ``net``'s parameters, autograd keeps for backward in ``fn()``."""
    params = {p.untyped_storage().data_ptr() for p in net.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.untyped_storage().data_ptr() not in params:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


@pytest.mark.parametrize(
    "frozen_rrdb, checkpointing, recompute",
    [(True, False, False), (False, False, False), (True, False, True), (False, False, True), (True, True, True)],
)
def test_lean_training_keeps_gradients_and_stores_less(frozen_rrdb: bool, checkpointing: bool, recompute: bool) -> None:
    # folded ActNorms and zero-conv scales; with recompute_hidden (on with gradient checkpointing) the coupling
    # networks also recompute their inner hidden map in backward
    plain, lean, lr, hr = _train_pair(hidden=32)  # coupling networks wider than the flow, as in SRFlow
    for net in (plain, lean):
        net.gradient_checkpointing = checkpointing
        if frozen_rrdb:
            net.RRDB.requires_grad_(False)
    hidden = [m for m in lean.modules() if hasattr(m, "recompute_hidden")]
    assert hidden and all(m.recompute_hidden == checkpointing for m in hidden)
    for m in hidden:
        m.recompute_hidden = recompute
    a = plain.encode(hr, lr).nll.mean()
    b = lean.encode(hr, lr).nll.mean()
    a.backward()
    b.backward()
    assert abs(float(a.detach()) - float(b.detach())) <= 1e-5
    grads = [(p.grad, q.grad) for p, q in zip(plain.parameters(), lean.parameters()) if p.grad is not None]
    assert len(grads) == sum(q.grad is not None for q in lean.parameters()) > 0
    for g, h in grads:
        assert float((g - h).abs().max()) <= 1e-5 * max(1.0, float(g.abs().max()))
    if not checkpointing:
        lr, hr = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 64, 64)  # activations, not weights, dominate
        stored = [_saved_bytes(n, lambda n=n: n.encode(hr, lr).nll.mean()) for n in (plain, lean)]
        assert stored[1] < (0.75 if recompute else 0.85) * stored[0]  # measured 0.63-0.70 and 0.75-0.81


def test_folded_actnorm_with_checkpointing_from_a_fresh_network() -> None:
    torch.manual_seed(0)
    net = tiny_srflow().train()
    for m in net.modules():  # fresh, as a training run starts: ActNorms initialise in the first step
        if hasattr(m, "initialized"):
            m.initialized = False
    net.gradient_checkpointing = True
    perf.lean_training(net, SRFLOW_SWITCHES)
    lr, hr = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 32, 32)
    for _ in range(2):
        loss = net.encode(hr, lr).nll.mean()
        loss.backward()
        assert torch.isfinite(loss)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_declared_switches_keep_the_output(layout: str) -> None:
    # a generator's declared switches (here SRFlow's opt-in factor_cond) and a layout: the same function
    plain = tiny_srflow(hidden=16)
    fast = tiny_srflow(hidden=16)
    opt_in = Switches(inference=("factor_cond",))
    assert perf.fast_inference(fast, opt_in) == 1 and fast.factor_cond and not plain.factor_cond
    assert perf.fast_inference(RRDBNet(nb=1, nf=8, gc=4), opt_in) == 0  # nothing to switch: untouched
    perf.to_layout(fast, layout)
    lr = torch.rand(1, 3, 8, 12)
    with torch.no_grad():
        a = plain.decode(lr, temperature=0.8, generator=torch.Generator().manual_seed(3))
        b = fast.decode(perf.in_layout(layout, lr), temperature=0.8, generator=torch.Generator().manual_seed(3))
    assert 0 < float((a - b).abs().max()) <= 1e-5  # not bit-equal: the factored convolution really ran
    assert perf.fast_inference(fast, opt_in, enabled=False) == 1 and not fast.factor_cond


def test_the_core_names_no_plugin_attribute() -> None:
    # the switches come from the component: SRFlow declares its folds for training, nothing on by default for
    # inference (factor_cond halves the speed when another process shares the CPU: docs/performance.md)
    from fakes import first_party_registry

    sw = first_party_registry().get("generator", "srflow").component.switches
    assert sw == SRFLOW_SWITCHES and "factor_cond" not in sw.inference + sw.training
    core = Path(restorekit.__file__).parent
    text = "\n".join(p.read_text() for p in core.rglob("*.py"))
    for name in ("factor_cond", "fold_actnorm", ".RRDB", "initialized = True"):
        assert name not in text, name


# ----------------------------------------------------------------------------------------------------
# frozen parts in their own layout (SRFlow's RRDB in training stage 2)


class _FrozenTrunkNet(nn.Module):
    """A trained head on an RRDB's features, as SRFlow's flow reads its conditional RRDB's."""

    def __init__(self, nf: int = 16, bn: bool = False) -> None:
        super().__init__()
        self.trunk = RRDBNet(nb=1, nf=nf, gc=nf // 2, scale=4)
        self.norm = nn.BatchNorm2d(nf) if bn else nn.Identity()
        self.head = nn.Conv2d(nf, 3, 3, padding=1)
        self.seen_nchw: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.trunk(x, return_features=True, block_ids=(0,), up_to=2, image=False)
        self.seen_nchw.append(all(t.is_contiguous() for t in (f.fea_up[2], f.blocks[0], f.last_lr_fea)))
        return self.head(self.norm(f.fea_up[2]))


def _frozen_pair(**kw) -> tuple[_FrozenTrunkNet, _FrozenTrunkNet]:
    torch.manual_seed(0)
    a = _FrozenTrunkNet(**kw)
    b = copy.deepcopy(a)
    for n in (a, b):
        n.trunk.requires_grad_(False)
    return a, b


def _spy(monkeypatch, forced: str | None = None) -> list[nn.Module]:
    """Record the modules the frozen-part probe measures; with ``forced``, choose that layout without timing."""
    from restorekit.perf import frozen

    calls: list[nn.Module] = []
    real = frozen.choose_layout

    def fake(module, x, **kw):
        calls.append(module)
        if forced is None:
            return real(module, x, **kw)
        perf.to_layout(module, forced)
        return forced

    monkeypatch.setattr(frozen, "choose_layout", fake)
    return calls


def test_a_frozen_part_runs_in_its_own_layout_and_returns_the_callers(monkeypatch) -> None:
    calls = _spy(monkeypatch, forced="channels_last")
    ref, net = _frozen_pair()
    assert [name for name, _ in perf.frozen_parts(net, min_weights=0)] == ["trunk"]
    layouts = perf.FrozenLayouts(min_weights=0)
    chosen = layouts.update(net)
    assert chosen == {}  # chosen at the part's first call, on its real input
    x = torch.rand(2, 3, 8, 8)
    out, expected = net(x), ref(x)
    assert calls == [net.trunk] and chosen == {"trunk": "channels_last"}
    assert net.trunk.conv_first.weight.is_contiguous(memory_format=torch.channels_last)
    assert net.head.weight.is_contiguous()  # the trained rest keeps its layout
    assert net.seen_nchw == [True]  # features handed back in the caller's (NCHW) layout
    assert float((out - expected).detach().abs().max()) <= 1e-5
    out.square().mean().backward()
    expected.square().mean().backward()
    assert float((net.head.weight.grad - ref.head.weight.grad).abs().max()) <= 1e-5
    net(x)
    assert len(calls) == 1 and net.seen_nchw == [True, True]  # probed once

    net.trunk.requires_grad_(True)  # unfrozen (SRFlow's stage 3): back to the default layout, no more hooks
    assert layouts.update(net) == {}
    assert net.trunk.conv_first.weight.is_contiguous()
    net(x)
    assert len(calls) == 1 and net.seen_nchw[-1]


def test_frozen_part_probe_keeps_outputs_and_statistics(monkeypatch) -> None:
    # the real probe (whichever layout wins): same output, BatchNorm statistics as after one forward
    calls = _spy(monkeypatch)
    ref, net = _frozen_pair(bn=True)
    net.norm.requires_grad_(False)
    ref.norm.requires_grad_(False)
    perf.FrozenLayouts(min_weights=0).update(net)
    x = torch.rand(2, 3, 8, 8)
    out, expected = net(x), ref(x)
    assert calls == [net.trunk, net.norm] and float((out - expected).detach().abs().max()) <= 1e-5
    # the probes ran in eval mode: one update, as the reference's (six more would have moved the statistics)
    assert float((net.norm.running_mean - ref.norm.running_mean).abs().max()) <= 1e-6
    assert net.norm.training


def test_a_deep_copy_does_not_settle_the_originals_frozen_parts(monkeypatch) -> None:
    calls = _spy(monkeypatch, forced="channels_last")
    _, net = _frozen_pair()
    layouts = perf.FrozenLayouts(min_weights=0)
    chosen = layouts.update(net)
    twin = copy.deepcopy(net)  # e.g. an EMA model made before the first step: carries the hooks along
    x = torch.rand(1, 3, 8, 8)
    twin(x)
    assert calls == [] and chosen == {} and twin.seen_nchw == [True]
    net(x)
    assert calls == [net.trunk] and chosen == {"trunk": "channels_last"}


def test_a_frozen_part_differentiated_through_keeps_the_default_layout(monkeypatch) -> None:
    calls = _spy(monkeypatch, forced="channels_last")
    _, net = _frozen_pair()
    layouts = perf.FrozenLayouts(min_weights=0)
    chosen = layouts.update(net)
    net(torch.rand(1, 3, 8, 8, requires_grad=True))  # e.g. a fixed perceptual-loss network
    assert calls == [] and chosen == {"trunk": "contiguous"}
    assert net.trunk.conv_first.weight.is_contiguous()


def test_the_trainer_freezes_into_frozen_layouts(monkeypatch) -> None:
    from restorekit.train import Freeze

    calls = _spy(monkeypatch, forced="channels_last")
    torch.manual_seed(0)
    net = _FrozenTrunkNet(nf=64)  # 0.7 M convolution weights: worth a probe
    freeze = Freeze("g", "partial", ("head",))
    freeze.apply(net)  # what `trainable_only = ["head"]` does
    net(torch.rand(1, 3, 8, 8))
    assert calls == [net.trunk] and net.seen_nchw == [True]
    freeze.mode = "full"  # its unfreeze rule fired
    freeze.apply(net)
    assert net.trunk.conv_first.weight.is_contiguous()
