"""The NaN ladder shared by restore-run and the Python API: a flow decode that is not finite is redone at lower
temperatures from the same latents and reported (restorekit.nonfinite, SRFlowNet.decode / model(lr, T))."""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import pytest
import torch
from torch import Tensor

import restorekit
from restorekit.nonfinite import ladder_below, raw_decode_kwargs
from restorekit.spec.inference import InferSpec
from restorekit_srflow.arch import SRFlowArch

from fakes import FakeFlow, srflow_tiny

HOT = 0.7  # latents with an RMS above this decode to NaN (an overflow stand-in), as FakeFlow's nan_above


@pytest.fixture
def hot_srflow(monkeypatch: pytest.MonkeyPatch) -> torch.nn.Module:
    """A tiny real SRFlow whose architecture decode returns NaN for every batch item whose latents' RMS is above
    HOT: a flow that breaks at high temperature, as under-trained flows do."""
    real = SRFlowArch.decode

    def decode(self: Any, lr: Tensor, latents: Sequence[Tensor] | None = None, *args: Any, **kw: Any) -> Any:
        if latents is None:  # draw them here, so that the NaN depends on the latents actually decoded
            latents = self.sample_latents(lr, args[0] if args else kw.pop("temperature", 0.0),
                                          args[1] if len(args) > 1 else kw.pop("generator", None))
            args = ()
        out = real(self, lr, latents, *args, **kw)
        rms = torch.cat([z.flatten(1) for z in latents], 1).pow(2).mean(1).sqrt()
        return torch.where((rms > HOT).view(-1, 1, 1, 1), torch.full_like(out, float("nan")), out)

    monkeypatch.setattr(SRFlowArch, "decode", decode)
    return srflow_tiny()


def _lr(batch: int = 1) -> Tensor:
    torch.manual_seed(1)
    return torch.rand(batch, 3, 8, 8)


def test_ladder_rungs_end_at_the_mean_image() -> None:
    assert ladder_below(0.9, [0.5, 0.0]) == [0.5, 0.0]
    assert ladder_below(0.9, [0.8, 0.6]) == [0.8, 0.6, 0.0]
    assert ladder_below(0.5, [0.5, 0.3]) == [0.3, 0.0]
    assert ladder_below(0.0, [0.5, 0.0]) == []
    assert InferSpec.model_fields["nan_ladder"].default_factory() == list(restorekit.NAN_LADDER)  # type: ignore[misc]


def test_api_retries_a_non_finite_sample_at_a_lower_temperature_and_warns(hot_srflow: torch.nn.Module) -> None:
    lr = _lr()
    with torch.no_grad(), pytest.warns(restorekit.NonFiniteDecodeWarning, match=r"image 0 .* temperature 0\.9.* 0\.5"):
        out = hot_srflow(lr, temperature=0.9, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        half = hot_srflow(lr, temperature=0.5, generator=torch.Generator().manual_seed(3))
        nan = hot_srflow.decode(lr, temperature=0.9, generator=torch.Generator().manual_seed(3), nan_ladder=None)
    assert torch.isfinite(out).all()
    assert torch.equal(out, half)  # the same draw, scaled to the ladder's rung 0.5
    assert torch.isnan(nan).all()  # nan_ladder=None: the raw decode


def test_api_ladder_touches_only_the_broken_images_of_a_batch(hot_srflow: torch.nn.Module) -> None:
    lr = _lr(1)
    shapes = hot_srflow.latent_shapes((2, 3, 8, 8))
    torch.manual_seed(2)
    latents = [torch.randn(s) * torch.tensor([0.3, 1.2]).view(2, 1, 1, 1) for s in shapes]  # item 1 is hot
    with torch.no_grad(), pytest.warns(restorekit.NonFiniteDecodeWarning, match="image 1 .* temperature 1; .* temperature 0.5 instead"):
        out = hot_srflow.decode(lr, latents=latents)
    with torch.no_grad():
        ok = hot_srflow.decode(lr, latents=[z[:1] for z in latents])
        fallback = hot_srflow.decode(lr, latents=[z[1:] * 0.5 for z in latents])
    assert torch.allclose(out[0:1], ok, atol=1e-6) and torch.allclose(out[1:], fallback, atol=1e-6)


def test_api_raises_one_clear_error_when_even_the_mean_is_not_finite(hot_srflow: torch.nn.Module) -> None:
    hot_srflow.nan_ladder = (0.9,)  # rungs 0.9, then 0 (always the last): only the mean is below HOT
    lr = _lr()
    shapes = hot_srflow.latent_shapes(lr.shape)
    with torch.no_grad():
        with pytest.warns(restorekit.NonFiniteDecodeWarning, match="at temperature 0 instead"):
            hot_srflow.decode(lr, latents=[torch.full((1, *s), 1.0) for s in shapes])
    with torch.no_grad(), pytest.raises(restorekit.UserError, match="not finite at temperatures 1, 0.9, 0"):
        hot_srflow.decode(lr, latents=[torch.full((1, *s), float("nan")) for s in shapes])


def test_training_mode_and_finite_decodes_are_untouched(hot_srflow: torch.nn.Module) -> None:
    lr = _lr()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.no_grad():
            a = hot_srflow(lr, temperature=0.3, generator=torch.Generator().manual_seed(0))
            b = hot_srflow.decode(lr, temperature=0.3, generator=torch.Generator().manual_seed(0), nan_ladder=None)
        assert torch.equal(a, b)
        hot_srflow.train()  # training sees its NaN (the trainer counts non-finite losses)
        with torch.no_grad():
            assert torch.isnan(hot_srflow.decode(lr, temperature=0.9, generator=torch.Generator().manual_seed(0))).all()


def test_restore_run_asks_the_model_for_raw_decodes() -> None:
    """restore-run runs the same ladder itself (and records the fallback), so models that guard get nan_ladder=None."""
    assert raw_decode_kwargs(srflow_tiny()) == {"nan_ladder": None}
    assert raw_decode_kwargs(FakeFlow()) == {}


def test_a_temperature_map_is_scaled_so_that_its_highest_value_is_the_rung(hot_srflow: torch.nn.Module) -> None:
    lr = _lr()
    tmap = torch.full((1, 1, 32, 32), 0.45)
    tmap[..., :16, :] = 0.9
    with torch.no_grad(), pytest.warns(restorekit.NonFiniteDecodeWarning, match="temperature 0.9; .* 0.5 instead"):
        out = hot_srflow(lr, temperature=tmap, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        rung = hot_srflow(lr, temperature=tmap * (0.5 / 0.9), generator=torch.Generator().manual_seed(3))
    assert torch.allclose(out, rung, atol=1e-6)
