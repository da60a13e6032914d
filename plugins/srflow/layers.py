"""Flow layers of SRFlow (docs/srflow-architecture.md §5): ActNorm, invertible 1x1 convolution, squeeze,
conditional affine coupling, split with a learned prior, zero-convolution and the Gaussian log-density.

Plain ``nn.Module``s with no restorekit imports. Every flow layer maps ``(x, logdet)`` to ``(y, logdet)`` in the
encode direction (HR image → latents) and adds its per-sample log|det|; ``reverse=True`` runs the inverse and
subtracts the same term. ``logdet`` may be ``None`` (then it is not computed).

Module and parameter names reproduce the official checkpoint keys (``actnorm.{bias,logs}``, ``invconv.weight``,
``affine.fAffine.{0,2,4}.*``, ``affine.fFeatures.{0,2,4}.*``, ``conv.{weight,bias,logs}``).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LOG_2PI = math.log(2 * math.pi)


def gaussian_logp(x: Tensor, mean: Tensor | None = None, logs: Tensor | None = None) -> Tensor:
    """Per-element ``log N(x; mean, exp(logs))`` (§5.7); the standard normal when ``mean``/``logs`` are None."""
    if mean is None or logs is None:
        return -0.5 * (x * x + LOG_2PI)
    return -0.5 * (2.0 * logs + (x - mean) ** 2 * torch.exp(-2.0 * logs) + LOG_2PI)


def sum_per_sample(x: Tensor) -> Tensor:
    """Sum over every dimension but the first: (B, ...) → (B,)."""
    return x.flatten(1).sum(1)


def set_actnorm_initialized(module: nn.Module, value: bool = True) -> int:
    """Set the ``initialized`` state of every :class:`ActNorm` inside ``module``; returns how many there are."""
    count = 0
    for m in module.modules():
        if isinstance(m, ActNorm):
            m.initialized = value
            count += 1
    return count


def _param_key(module: nn.Module) -> tuple[Any, ...]:
    """Identity and version of a module's parameters: changes whenever one is replaced or modified in place."""
    return tuple((p.data_ptr(), p._version, p.device, p.dtype) for p in module.parameters())


def _no_weight_grad(weight: Tensor) -> bool:
    """True when no gradient can flow to ``weight`` now, so a derived tensor may be cached."""
    return not (torch.is_grad_enabled() and weight.requires_grad)


# ----------------------------------------------------------------------------------------------------
# ActNorm


class ActNorm(nn.Module):
    """Per-channel affine ``y = (x + bias) · exp(logs)``, logdet ``H·W·Σ logs`` (§5.2).

    Data-dependent initialisation with an explicit ``initialized`` state (a plain attribute, not saved):

    * a fresh module is not initialised; the first call **in training mode** (either direction) sets
      ``bias = −mean_c(x)`` and ``logs = ln(1 / (std_c(x) + 1e-6))`` from the tensor entering it;
    * loading its parameters from a state dict marks it initialised (so checkpoints are never re-initialised,
      unlike the official rule that re-initialises an all-zero bias);
    * evaluation mode never initialises.
    """

    init_on_decode: bool = True
    """Whether a training-mode decode initialises it too (SRFlow); HCFlow's ActNorms initialise on encode only."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.logs = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.initialized = False

    def _load_from_state_dict(
        self, state_dict: Any, prefix: str, local_metadata: Any, strict: bool, missing_keys: list[str],
        unexpected_keys: list[str], error_msgs: list[str],
    ) -> None:
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        if prefix + "bias" in state_dict and prefix + "logs" in state_dict:
            self.initialized = True

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        """Set bias and logs from ``x`` so that the output has zero mean and unit std per channel."""
        dims = (0, 2, 3)
        bias = -x.mean(dim=dims, keepdim=True)
        std = ((x + bias) ** 2).mean(dim=dims, keepdim=True).sqrt()
        self.bias.copy_(bias)
        self.logs.copy_(torch.log(1.0 / (std + 1e-6)))
        self.initialized = True

    def forward(
        self, x: Tensor, logdet: Tensor | None = None, reverse: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        if self.training and not self.initialized and (self.init_on_decode or not reverse):
            self.initialize(x)
        if reverse:
            y = x * torch.exp(-self.logs) - self.bias
        else:
            y = (x + self.bias) * torch.exp(self.logs)
        if logdet is not None:
            d = self.logs.sum() * (x.shape[2] * x.shape[3])
            logdet = logdet - d if reverse else logdet + d
        return y, logdet

    def extra_repr(self) -> str:
        return f"{self.bias.shape[1]}, initialized={self.initialized}"


# ----------------------------------------------------------------------------------------------------
# invertible 1x1 convolution


class InvConv1x1(nn.Module):
    """Invertible 1x1 convolution with a plain C×C ``weight`` (§5.3); logdet ``H·W·ln|det W|``.

    The inverse (and ln|det W|) are computed in float64 and cast to the weight's dtype, as the official code does.
    Whenever no gradient can reach the weight (``torch.no_grad``/eval inference, or a frozen weight) both are cached,
    keyed on the weight's identity and version counter, so they are recomputed only after the weight changes.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(self.initial_weight(channels))
        self._cache_key: tuple[Any, ...] | None = None
        self._cache: tuple[Tensor, Tensor] | None = None

    @staticmethod
    def initial_weight(channels: int) -> Tensor:
        """A random rotation: the Q of the QR decomposition of a standard-normal matrix."""
        return torch.linalg.qr(torch.randn(channels, channels))[0]

    @staticmethod
    def logabsdet(w: Tensor) -> Tensor:
        """``ln|det w|``, computed in float64, in ``w``'s dtype."""
        return torch.linalg.slogdet(w.double())[1].to(w.dtype)

    def _compute(self) -> tuple[Tensor, Tensor]:
        return torch.linalg.inv(self.weight.double()).to(self.weight.dtype), self.logabsdet(self.weight)

    def inverse_and_logabsdet(self) -> tuple[Tensor, Tensor]:
        """``(W⁻¹, ln|det W|)``; cached while no gradient can flow to the weight."""
        w = self.weight
        if not _no_weight_grad(w):
            return self._compute()
        # tensors made under inference_mode may only be reused there (they cannot be saved for backward)
        key = (w.data_ptr(), w._version, w.device, w.dtype, torch.is_inference_mode_enabled())
        if self._cache is None or self._cache_key != key:
            with torch.no_grad():
                self._cache = self._compute()
            self._cache_key = key
        return self._cache

    def _logabsdet(self) -> Tensor:
        w = self.weight
        if _no_weight_grad(w):
            return self.inverse_and_logabsdet()[1]
        return self.logabsdet(w)

    def forward(
        self, x: Tensor, logdet: Tensor | None = None, reverse: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        c = self.weight.shape[0]
        hw = x.shape[2] * x.shape[3]
        if reverse:
            inv, lad = self.inverse_and_logabsdet()
            y = F.conv2d(x, inv.view(c, c, 1, 1))
            if logdet is not None:
                logdet = logdet - hw * lad
            return y, logdet
        y = F.conv2d(x, self.weight.view(c, c, 1, 1))
        if logdet is not None:
            logdet = logdet + hw * self._logabsdet()
        return y, logdet

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}"


# ----------------------------------------------------------------------------------------------------
# squeeze


class Squeeze(nn.Module):
    """Space-to-depth by 2 (``pixel_unshuffle``, §5.1): channel 4c + 2·dy + dx; no parameters, logdet 0."""

    def forward(
        self, x: Tensor, logdet: Tensor | None = None, reverse: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        return (F.pixel_shuffle(x, 2) if reverse else F.pixel_unshuffle(x, 2)), logdet


# ----------------------------------------------------------------------------------------------------
# coupling networks


class UpMap(NamedTuple):
    """A conditional map ``[dense, up_f(low)]`` kept factored: ``dense`` at full size and a part that is the
    nearest-neighbour ×``factor`` upsampling of a map at 1/``factor`` size (SRFlow's stacked RRDB blocks at the
    levels above LR, §3.2: ×2 at 2·LR, ×4 at 4·LR).

    ``low`` is that small map **zero-padded by one pixel** on every side, so that every convolution reading it
    shares one tensor. :func:`up_conv` convolves ``up_f(low)`` at the small size: the same function as the
    convolution of the full map, in 4·min(f, 3)² instead of 9·f² multiply-adds per channel pair and small pixel
    (16 instead of 36 at f = 2, 36 instead of 144 at f = 4).
    """

    dense: Tensor
    low: Tensor
    factor: int = 2

    def full(self) -> Tensor:
        """The map itself, ``[dense, up_f(low)]``."""
        low = self.low[..., 1:-1, 1:-1]
        return torch.cat([self.dense, F.interpolate(low, scale_factor=float(self.factor), mode="nearest")], 1)


CondMap = Tensor | UpMap

_TAPS: dict[tuple[torch.device, torch.dtype, int], Tensor] = {}


def _start(a: int) -> int:
    """Phase ``a``'s 2-row window starts at small row ``i − 1 + start``: rows i−1, i for phase 0, else i, i+1."""
    return 0 if a == 0 else 1


def _classes(factor: int) -> list[int]:
    """The class of each of the ``factor`` phases (row positions inside an f×f square). Phases whose 3×3 window
    lies inside one square read the same small pixels with the same taps, so their outputs are equal and computed
    once: classes first row, middle rows, last row (two classes for f = 2)."""
    return [0, 1] if factor == 2 else [0] + [1] * (factor - 2) + [2]


def _phase_taps(like: Tensor, factor: int) -> Tensor:
    """``R[c]`` (2×3) for each phase class ``c``: which taps of a 3×3 kernel's rows (columns) read each row of the
    class's 2-row window, for the full-size output rows ``f·i + a`` of ``conv3x3(up_f(·))``: tap ``dy`` reads small
    row ``i + ⌊(a + dy)/f⌋``. Kept per device, dtype and factor (a new CUDA tensor per call would be a host-to-device
    copy each time), and made outside inference mode (training may save it for backward)."""
    key = (like.device, like.dtype, factor)
    taps = _TAPS.get(key)
    if taps is None:
        classes = _classes(factor)
        r = [[[0.0] * 3 for _ in range(2)] for _ in range(max(classes) + 1)]
        for a, c in enumerate(classes):
            for dy in (-1, 0, 1):
                r[c][(a + dy) // factor + 1 - _start(a)][dy + 1] = 1.0
        with torch.inference_mode(False):
            taps = _TAPS[key] = torch.tensor(r, dtype=like.dtype, device=like.device)
    return taps


def up_kernel(w: Tensor, factor: int = 2) -> Tensor:
    """A 3×3 kernel (O, I, 3, 3) as the 2×2 kernels of :func:`up_conv`'s phase classes, (n²·O, I, 2, 2) for n
    classes, output channel ``n²·o + n·c + d`` for the outputs of row class c and column class d."""
    r = _phase_taps(w, factor)
    k = torch.einsum("aui,bvj,ocij->oabcuv", r, r, w)
    return k.reshape(r.shape[0] ** 2 * w.shape[0], w.shape[1], 2, 2)


def _kernel_grad(g_k: Tensor, out_channels: int, factor: int) -> Tensor:
    """The gradient of a 3×3 kernel from that of its :func:`up_kernel` (the transpose of the same linear map)."""
    r = _phase_taps(g_k, factor)
    n = r.shape[0]
    g = g_k.reshape(out_channels, n, n, g_k.shape[1], 2, 2)
    return torch.einsum("aui,bvj,oabcuv->ocij", r, r, g)


def _phases(low_padded: Tensor, w: Tensor, factor: int) -> Tensor:
    """The phase-class outputs, (B, O, n, n, h+1, w+1): see :func:`_phase`."""
    out = F.conv2d(low_padded, up_kernel(w, factor))
    n = max(_classes(factor)) + 1
    return out.unflatten(1, (w.shape[0], n, n))


def _phase(o: Tensor, a: int, b: int, factor: int) -> Tensor:
    """The output of phase (a, b) — full-size pixels ``(f·i + a, f·j + b)`` — from :func:`_phases`' output,
    (B, O, h, w): its class's map, from ``[start(a), start(b)]``."""
    h, wd = o.shape[-2] - 1, o.shape[-1] - 1
    classes = _classes(factor)
    return o[:, :, classes[a], classes[b], _start(a) : _start(a) + h, _start(b) : _start(b) + wd]


def up_conv(low_padded: Tensor, w: Tensor, factor: int = 2) -> Tensor:
    """``conv2d(up_f(low), w, padding=1)`` for a 3×3 ``w``, computed at the small size (see :class:`UpMap`);
    ``low_padded`` is the small map zero-padded by one pixel. Differentiable."""
    o = _phases(low_padded, w, factor)
    ph = torch.stack([_phase(o, a, b, factor) for a in range(factor) for b in range(factor)], 2)
    return F.pixel_shuffle(ph.flatten(1, 2), factor)


def _add_phases(y: Tensor, o: Tensor, factor: int) -> Tensor:
    """``y += pixel_shuffle(phases)`` in place (no autograd), ``y`` at full size."""
    h, wd = o.shape[-2] - 1, o.shape[-1] - 1
    yv = y.unflatten(3, (wd, factor)).unflatten(2, (h, factor))
    for a in range(factor):
        for b in range(factor):
            yv[:, :, :, a, :, b] += _phase(o, a, b, factor)
    return y


def map_conv(u: CondMap, w: Tensor, bias: Tensor | None = None) -> Tensor:
    """``conv2d(u, w, bias)`` ("same" padding) of a conditional map, factored when ``u`` is an :class:`UpMap`
    and ``w`` is 3×3: the dense channels at full size, the upsampled ones at the small size (:func:`up_conv`)."""
    if isinstance(u, Tensor):
        return F.conv2d(u, w, bias, 1, w.shape[-1] // 2)
    nd = u.dense.shape[1]
    if w.shape[-1] != 3:
        return F.conv2d(u.full(), w, bias, 1, w.shape[-1] // 2)
    y = F.conv2d(u.dense, w[:, :nd], bias, 1, 1)
    if torch.is_grad_enabled() and (w.requires_grad or u.low.requires_grad or y.requires_grad):
        return y + up_conv(u.low, w[:, nd:], u.factor)
    return _add_phases(y, _phases(u.low, w[:, nd:], u.factor), u.factor)


def _folded_grads(g_ws: Tensor, g_bs: Tensor, w: Tensor, s: Tensor, b: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of ``W``, ``s`` and ``b`` from those of the folded weight ``W·s`` and bias ``b·s``."""
    g_bs = g_bs.view_as(s)
    g_s = (g_ws * w).sum((1, 2, 3)).view_as(s) + g_bs * b
    return g_ws * s.view(-1, 1, 1, 1), g_s, g_bs * s


class _FrozenUpConv(torch.autograd.Function):
    """:class:`_FrozenInputConv` for a factored map (:class:`UpMap`): ``map_conv(u, W·s) + b·s`` for a ``u`` that
    needs no gradient, keeping only ``u`` and the parameters for backward."""

    @staticmethod
    def forward(ctx: Any, dense: Tensor, low: Tensor, factor: int, w: Tensor, s: Tensor, b: Tensor) -> Tensor:
        ctx.save_for_backward(dense, low, w, s, b)
        ctx.factor = factor
        ws = w * s.view(-1, 1, 1, 1)
        nd = dense.shape[1]
        y = F.conv2d(dense, ws[:, :nd], (b * s).flatten(), 1, 1)
        return _add_phases(y, _phases(low, ws[:, nd:], factor), factor)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        dense, low, w, s, b = ctx.saved_tensors
        f = ctx.factor
        nd, o = dense.shape[1], w.shape[0]
        _, g_wd, g_bs = torch.ops.aten.convolution_backward(
            grad, dense, w[:, :nd], [o], [1, 1], [1, 1], [1, 1], False, [0, 0], 1, [False, True, True]
        )
        h, wd = low.shape[-2] - 2, low.shape[-1] - 2  # the small size (low is padded by one)
        n = max(_classes(f)) + 1
        g_ph = grad.new_zeros(grad.shape[0], o, n, n, h + 1, wd + 1)
        gv = grad.unflatten(3, (wd, f)).unflatten(2, (h, f))
        for a in range(f):
            for c in range(f):  # phases of one class share its output: their gradients add up
                _phase(g_ph, a, c, f).add_(gv[:, :, :, a, :, c])
        shape = low.new_empty(n * n * o, low.shape[1], 2, 2)  # only its shape is read (no input gradient)
        _, g_k, _ = torch.ops.aten.convolution_backward(
            g_ph.flatten(1, 3), low, shape, [n * n * o], [1, 1], [0, 0], [1, 1], False, [0, 0], 1,
            [False, True, False],
        )
        g_ws = torch.cat([g_wd, _kernel_grad(g_k, o, f)], 1)
        return None, None, None, *_folded_grads(g_ws, g_bs, w, s, b)


class _FrozenInputConv(torch.autograd.Function):
    """``conv(x, W·s) + b·s`` (s, b: an ActNorm's per-channel scale and bias, shaped 1×C×1×1) for an ``x`` that needs
    no gradient. Autograd would keep the product ``W·s`` for backward; this keeps only ``x`` and the parameters,
    and takes every gradient from the one weight gradient of the convolution (as autograd would)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, w: Tensor, s: Tensor, b: Tensor, padding: int) -> Tensor:
        ctx.save_for_backward(x, w, s, b)
        ctx.padding = padding
        return F.conv2d(x, w * s.view(-1, 1, 1, 1), (b * s).flatten(), 1, padding)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x, w, s, b = ctx.saved_tensors
        p = ctx.padding
        _, g_ws, g_bs = torch.ops.aten.convolution_backward(
            grad, x, w, [w.shape[0]], [1, 1], [p, p], [1, 1], False, [0, 0], 1, [False, True, True]
        )
        return None, *_folded_grads(g_ws, g_bs, w, s, b), None


class Conv2dActNorm(nn.Conv2d):
    """``CA(a→b, k)``: a k×k convolution without bias ("same" zero padding) followed by an ActNorm whose logdet
    is not part of the flow's. Weights start N(0, 0.05²), the ActNorm from data."""

    fold_actnorm: bool = False
    """Training fast path (set by restorekit's trainer on every module that has it): while gradients are recorded
    and the ActNorm is initialised, run ``conv(x, W·s) + b·s`` (s = exp(logs)) instead of ``(conv(x, W) + b)·s`` —
    the same function, but autograd keeps no copy of the convolution's output for the scale's gradient, which
    halves the activations the coupling networks store."""

    recompute_hidden: bool = False
    """Memory first (set by :attr:`SRFlowNet.gradient_checkpointing <restorekit_srflow.arch.SRFlowNet>`): as the 1x1
    convolution of a coupling network's tail, with :attr:`fold_actnorm` and the zero-convolution's ``fold_scale``
    on, its ReLU'd output is recomputed in backward instead of stored (:class:`_RecomputedTail`) — one hidden map
    less per coupling network for one more 1x1 convolution (3.5 % of the DF2K-4X training step on a CPU)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        nn.init.normal_(self.weight, 0.0, 0.05)
        self.actnorm = ActNorm(out_channels)

    def folding(self) -> bool:
        """Whether :attr:`fold_actnorm` applies to this call."""
        return self.fold_actnorm and self.actnorm.initialized and torch.is_grad_enabled()

    def folded(self) -> tuple[Tensor, Tensor]:
        """``(W·s, b·s)``: the convolution with the ActNorm folded in."""
        s = torch.exp(self.actnorm.logs)
        return self.weight * s.view(-1, 1, 1, 1), (self.actnorm.bias * s).flatten()

    def folded_conv(self, x: CondMap, channels: slice = slice(None), bias: bool = True) -> Tensor:
        """``conv(x, W[:, channels]·s) (+ b·s)``: the folded convolution of the input channels ``channels``.

        For an input that needs no gradient (the conditional map of a frozen RRDB) this is
        :class:`_FrozenInputConv` (:class:`_FrozenUpConv` for a factored map), which keeps no copy of ``W·s`` for
        backward."""
        w = self.weight[:, channels]
        s = torch.exp(self.actnorm.logs)
        frozen = bias and not torch.is_autocast_enabled(w.device.type)
        if isinstance(x, UpMap):
            if frozen and not (x.dense.requires_grad or x.low.requires_grad) and w.shape[-1] == 3:
                out = _FrozenUpConv.apply(x.dense, x.low, x.factor, w, s, self.actnorm.bias)
                return out  # type: ignore[no-any-return]
        elif frozen and not x.requires_grad:
            return _FrozenInputConv.apply(x, w, s, self.actnorm.bias, self.padding[0])  # type: ignore[no-any-return]
        b = (self.actnorm.bias * s).flatten() if bias else None
        return map_conv(x, w * s.view(-1, 1, 1, 1), b)

    def forward(self, x: CondMap) -> Tensor:  # type: ignore[override]
        if self.folding():
            return self.folded_conv(x)
        return self.actnorm(map_conv(x, self.weight))[0]

    def split_input_conv(self, head_channels: int, head: Tensor, tail: Tensor | None) -> Tensor:
        """The convolution of ``[head, tail]`` as the sum of two convolutions (it is linear), without the ActNorm.

        ``tail=None`` gives the head part only; :meth:`tail_conv` gives the other part, which can be reused.
        """
        out = F.conv2d(head, self.weight[:, :head_channels], None, self.stride, self.padding)
        return out if tail is None else out + self.tail_conv(head_channels, tail)

    def tail_conv(self, head_channels: int, tail: CondMap) -> Tensor:
        """The convolution of the input channels from ``head_channels`` on (the conditional part)."""
        return map_conv(tail, self.weight[:, head_channels:])


class ZeroConv2d(nn.Conv2d):
    """``Z(a→b)``: 3×3 convolution with bias, output scaled per channel by ``exp(3·logs)`` (``logs`` b×1×1).
    Zero-initialised (weight, bias and logs), so a fresh coupling starts as the identity."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, 3, padding=1)
        self.logs = nn.Parameter(torch.zeros(out_channels, 1, 1))
        nn.init.zeros_(self.weight)
        assert self.bias is not None
        nn.init.zeros_(self.bias)

    fold_scale: bool = False
    """Training fast path (set by restorekit's ``lean_training``): while gradients are recorded, run
    ``conv(x, W·e, b·e)`` (e = exp(3·logs)) instead of ``conv(x, W, b)·e`` — the same function without keeping the
    convolution's output for the scale's gradient."""

    def folding(self) -> bool:
        """Whether :attr:`fold_scale` applies to this call."""
        return self.fold_scale and torch.is_grad_enabled()

    def folded(self) -> tuple[Tensor, Tensor]:
        """``(W·e, b·e)``: the convolution with its output scale folded in."""
        e = torch.exp(3.0 * self.logs)
        assert self.bias is not None
        return self.weight * e.view(-1, 1, 1, 1), self.bias * e.flatten()

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        if self.folding():
            w, b = self.folded()
            return F.conv2d(x, w, b, self.stride, self.padding)
        return super().forward(x) * torch.exp(3.0 * self.logs)


class _RecomputedTail(torch.autograd.Function):
    """``conv3(relu(conv1x1(r)))`` with both convolutions' weights and biases given folded (see
    :func:`net_tail`). Saves only ``r`` (which the ReLU before it keeps anyway) and the weights; the 1x1
    convolution's ReLU output is recomputed in backward — the same operations as autograd's, so the gradients
    are identical — instead of being stored (a full hidden-width map per coupling network)."""

    @staticmethod
    def forward(ctx: Any, r: Tensor, w2: Tensor, b2: Tensor, w3: Tensor, b3: Tensor) -> Tensor:
        h = F.relu(F.conv2d(r, w2, b2))
        ctx.save_for_backward(r, w2, b2, w3)
        return F.conv2d(h, w3, b3, 1, w3.shape[-1] // 2)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        r, w2, b2, w3 = ctx.saved_tensors
        need_r, need_w2, need_b2, need_w3, need_b3 = ctx.needs_input_grad
        h = F.relu(F.conv2d(r, w2, b2))
        pad = w3.shape[-1] // 2
        g_h, g_w3, g_b3 = torch.ops.aten.convolution_backward(
            grad, h, w3, [w3.shape[0]], [1, 1], [pad, pad], [1, 1], False, [0, 0], 1,
            [need_r or need_w2 or need_b2, need_w3, need_b3],
        )
        g_r = g_w2 = g_b2 = None
        if g_h is not None:
            g_c = torch.ops.aten.threshold_backward(g_h, h, 0)
            del h
            g_r, g_w2, g_b2 = torch.ops.aten.convolution_backward(
                g_c, r, w2, [w2.shape[0]], [1, 1], [0, 0], [1, 1], False, [0, 0], 1, [need_r, need_w2, need_b2]
            )
        return g_r, g_w2, g_b2, g_w3, g_b3


def net_tail(net: nn.Sequential, h: Tensor) -> Tensor:
    """Layers 1… of a :func:`coupling_net` applied to ``h`` (the output of layer 0, its first ``CA``).

    When both of the tail's convolutions fold (restorekit's ``lean_training``, gradients recorded, no autocast) and
    the 1x1 convolution's :attr:`~Conv2dActNorm.recompute_hidden` is on (with gradient checkpointing), this is
    :class:`_RecomputedTail`: the same function and gradients, one hidden map fewer stored per network.
    """
    ca: Conv2dActNorm = net[2]  # type: ignore[assignment]
    zero: ZeroConv2d = net[4]  # type: ignore[assignment]
    if ca.recompute_hidden and ca.folding() and zero.folding() and not torch.is_autocast_enabled(h.device.type):
        w2, b2 = ca.folded()
        w3, b3 = zero.folded()
        return _RecomputedTail.apply(F.relu(h), w2, b2, w3, b3)  # type: ignore[no-any-return]
    for layer in list(net)[1:]:
        h = layer(h)
    return h


def coupling_net(in_channels: int, out_channels: int, hidden: int) -> nn.Sequential:
    """``N(a→b)``: CA(a→h, 3) → ReLU → CA(h→h, 1) → ReLU → Z(h→b); indices 0, 2, 4 match the official keys."""
    return nn.Sequential(
        Conv2dActNorm(in_channels, hidden, 3),
        nn.ReLU(),
        Conv2dActNorm(hidden, hidden, 1),
        nn.ReLU(),
        ZeroConv2d(hidden, out_channels),
    )


class CouplingCond(NamedTuple):
    """What a coupling computes from the conditional map alone (it depends on the LR image, not the latents).

    ``shift_f``/``scale_f``: the feature-conditional affine (C channels); ``logscale_f``: Σ ln scale_f per
    sample; ``affine_cond``: the conditional part of ``fAffine``'s first convolution (before its ActNorm).
    """

    shift_f: Tensor
    scale_f: Tensor
    logscale_f: Tensor | None
    affine_cond: Tensor


class CondAffineCoupling(nn.Module):
    """SRFlow's conditional affine coupling ("CondAffineSeparatedAndCond", §5.5).

    Encode: ``x ← (x + shift_f)·scale_f`` with (shift_f, scale_f) from ``fFeatures(u)``; then, with
    x₁ = first ⌊C/2⌋ channels, ``x₂ ← (x₂ + shift_a)·scale_a`` with (shift_a, scale_a) from ``fAffine([x₁, u])``.
    shift = even output channels, scale = sigmoid(odd + 2) + eps. Decode runs the inverse in reverse order.

    Everything that reads only ``u`` — the whole ``fFeatures`` branch and the ``u`` half of ``fAffine``'s first
    (linear) convolution — is :meth:`cond_terms`, which callers may compute once and reuse for many latents of
    one LR image. A ``u`` with batch 1 broadcasts against a batch of latents.
    """

    def __init__(self, channels: int, cond_channels: int, hidden: int = 64, eps: float = 1e-4) -> None:
        super().__init__()
        self.channels = channels
        self.c1 = channels // 2
        self.c2 = channels - self.c1
        self.cond_channels = cond_channels
        self.eps = eps
        self.fAffine = coupling_net(self.c1 + cond_channels, 2 * self.c2, hidden)
        self.fFeatures = coupling_net(cond_channels, 2 * channels, hidden)

    def _shift_scale(self, g: Tensor) -> tuple[Tensor, Tensor]:
        return g[:, 0::2], torch.sigmoid(g[:, 1::2] + 2.0) + self.eps

    def cond_terms(self, u: CondMap, logdet: bool = True) -> CouplingCond:
        """The latent-independent terms for the conditional map ``u`` (see :class:`CouplingCond`; an
        :class:`UpMap` gives the same terms, computed faster). ``logdet=False``: no ``logscale_f`` (None), for
        callers that compute no log-determinant (the export graphs)."""
        shift_f, scale_f = self._shift_scale(net_tail(self.fFeatures, self.fFeatures[0](u)))
        first: Conv2dActNorm = self.fAffine[0]  # type: ignore[assignment]
        if first.folding():  # the ActNorm folded in: affine_cond is then scaled and biased already
            affine = first.folded_conv(u, slice(self.c1, None))
        else:
            affine = first.tail_conv(self.c1, u)
        return CouplingCond(shift_f, scale_f, sum_per_sample(torch.log(scale_f)) if logdet else None, affine)

    def cond_key(self) -> tuple[Any, ...]:
        """Changes whenever a parameter that :meth:`cond_terms` reads changes (for caches of its result)."""
        return _param_key(self.fFeatures) + _param_key(self.fAffine[0])

    def _affine(self, x1: Tensor, terms: CouplingCond) -> tuple[Tensor, Tensor]:
        first: Conv2dActNorm = self.fAffine[0]  # type: ignore[assignment]
        if first.folding():
            h = first.folded_conv(x1, slice(None, self.c1), bias=False) + terms.affine_cond
        else:
            h = first.actnorm(first.split_input_conv(self.c1, x1, None) + terms.affine_cond)[0]
        return self._shift_scale(net_tail(self.fAffine, h))

    def forward(
        self, x: Tensor, cond: Tensor | None = None, logdet: Tensor | None = None, reverse: bool = False,
        terms: CouplingCond | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """``cond`` (the map u) or precomputed ``terms`` (from :meth:`cond_terms`) must be given."""
        if terms is None:
            if cond is None:
                raise ValueError("CondAffineCoupling needs the conditional map or its precomputed terms")
            terms = self.cond_terms(cond)
        if not reverse:
            x = (x + terms.shift_f) * terms.scale_f
            x1, x2 = x[:, : self.c1], x[:, self.c1 :]
            shift_a, scale_a = self._affine(x1, terms)
            y = torch.cat([x1, (x2 + shift_a) * scale_a], 1)
            if logdet is not None:
                assert terms.logscale_f is not None, "terms made with logdet=False"
                logdet = logdet + terms.logscale_f + sum_per_sample(torch.log(scale_a))
            return y, logdet
        y1, y2 = x[:, : self.c1], x[:, self.c1 :]
        shift_a, scale_a = self._affine(y1, terms)
        v = torch.cat([y1, y2 / scale_a - shift_a], 1)
        out = v / terms.scale_f - terms.shift_f
        if logdet is not None:
            assert terms.logscale_f is not None, "terms made with logdet=False"
            logdet = logdet - sum_per_sample(torch.log(scale_a)) - terms.logscale_f
        return out, logdet


# ----------------------------------------------------------------------------------------------------
# flow step, split


class FlowStep(nn.Module):
    """ActNorm → invertible 1x1 convolution (→ conditional coupling when ``cond_channels`` is given), §5.4.

    Without ``cond_channels`` it is an "additional" (non-conditional) step and has no ``affine`` submodule.
    """

    def __init__(
        self, channels: int, cond_channels: int | None = None, hidden: int = 64, eps: float = 1e-4
    ) -> None:
        super().__init__()
        self.actnorm = ActNorm(channels)
        self.invconv = InvConv1x1(channels)
        self.affine: CondAffineCoupling | None = (
            CondAffineCoupling(channels, cond_channels, hidden, eps) if cond_channels is not None else None
        )

    @property
    def conditional(self) -> bool:
        return self.affine is not None

    def forward(
        self, x: Tensor, logdet: Tensor | None = None, reverse: bool = False, cond: Tensor | None = None,
        terms: CouplingCond | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        if not reverse:
            x, logdet = self.actnorm(x, logdet)
            x, logdet = self.invconv(x, logdet)
            if self.affine is not None:
                x, logdet = self.affine(x, cond, logdet, terms=terms)
            return x, logdet
        if self.affine is not None:
            x, logdet = self.affine(x, cond, logdet, reverse=True, terms=terms)
        x, logdet = self.invconv(x, logdet, reverse=True)
        return self.actnorm(x, logdet, reverse=True)


class Split2d(nn.Module):
    """Factor out the last ``consume = round(C·ratio)`` channels with a learned Gaussian prior (§5.6).

    The prior ``Z(keep → 2·consume)`` reads the kept channels only: mean = even, logs = odd output channels.
    Encode returns ``(kept, logdet + Σ log N(x₂; mean, e^logs), eps)`` with
    ``eps = (x₂ − mean) / (e^logs + logs_eps)``; decode (``reverse=True``, ``x`` = kept half) rebuilds x₂ from
    ``eps`` and returns ``([kept, x₂], logdet − Σ log N(x₂; …), None)``.
    """

    def __init__(self, channels: int, consume_ratio: float = 0.5, logs_eps: float = 0.0) -> None:
        super().__init__()
        self.consume = int(round(channels * consume_ratio))
        self.keep = channels - self.consume
        if self.consume < 1 or self.keep < 1:
            raise ValueError(f"Split2d: cannot split {channels} channels with ratio {consume_ratio}")
        self.logs_eps = logs_eps
        self.conv = ZeroConv2d(self.keep, 2 * self.consume)

    def prior(self, kept: Tensor) -> tuple[Tensor, Tensor]:
        """``(mean, logs)`` of the factored-out half given the kept half."""
        g = self.conv(kept)
        return g[:, 0::2], g[:, 1::2]

    def forward(
        self, x: Tensor, logdet: Tensor | None = None, reverse: bool = False, eps: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        if not reverse:
            x1, x2 = x[:, : self.keep], x[:, self.keep :]
            mean, logs = self.prior(x1)
            eps_out = (x2 - mean) / (torch.exp(logs) + self.logs_eps)
            if logdet is not None:
                logdet = logdet + sum_per_sample(gaussian_logp(x2, mean, logs))
            return x1, logdet, eps_out
        if eps is None:
            raise ValueError("Split2d: decoding needs the latent eps")
        mean, logs = self.prior(x)
        x2 = mean + (torch.exp(logs) + self.logs_eps) * eps
        if logdet is not None:
            logdet = logdet - sum_per_sample(gaussian_logp(x2, mean, logs))
        return torch.cat([x, x2], 1), logdet, None

    def extra_repr(self) -> str:
        return f"keep={self.keep}, consume={self.consume}, logs_eps={self.logs_eps}"


__all__ = [
    "LOG_2PI",
    "ActNorm",
    "CondAffineCoupling",
    "Conv2dActNorm",
    "CouplingCond",
    "FlowStep",
    "InvConv1x1",
    "Split2d",
    "Squeeze",
    "UpMap",
    "ZeroConv2d",
    "coupling_net",
    "map_conv",
    "gaussian_logp",
    "net_tail",
    "set_actnorm_initialized",
    "sum_per_sample",
    "up_conv",
    "up_kernel",
]
