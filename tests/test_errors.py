"""restorekit.UserError: a located mistake (source, field, detail) rendered as one line, context added by fields."""

from __future__ import annotations

import pickle

import pytest

from restorekit.errors import UserError, located, one_line
from restorekit.registry import RegistryError


def test_a_user_error_carries_source_field_and_detail_and_renders_them_on_one_line() -> None:
    err = UserError.at("p.toml", "infer.temperatures", "must be\n  finite")
    assert (err.source, err.field, err.detail) == ("p.toml", "infer.temperatures", "must be finite")
    assert str(err) == "p.toml: infer.temperatures: must be finite"
    plain = UserError("no location")
    assert (plain.source, plain.field, str(plain)) == (None, None, "no location")
    assert str(UserError.at(None, "--seed", "must be >= 0")) == "--seed: must be >= 0"


def test_context_added_on_the_way_up_sets_fields_instead_of_prefixing_text() -> None:
    inner = UserError.at(None, "params.nb", "must be >= 1")
    outer = UserError.at("p.toml", "networks.g", inner)
    assert (outer.source, outer.field, outer.detail) == ("p.toml", "networks.g.params.nb", "must be >= 1")
    # an error that names the file already is not named twice
    named = UserError.at("p.toml", "steps.s.losses.l", "bad key")
    assert UserError.at("p.toml", "steps.s", named) is named
    # a mistake in another file (a checkpoint a pipeline names) keeps its own location, after the pipeline's
    ckpt = UserError.at("w.pth", None, "not a checkpoint")
    nested = UserError.at("p.toml", "networks.g.checkpoint", ckpt)
    assert str(nested) == "p.toml: networks.g.checkpoint: w.pth: not a checkpoint"
    with pytest.raises(UserError) as caught, located("p.toml", "validators.v"):
        raise UserError("boom")
    assert (caught.value.source, caught.value.field, caught.value.detail) == ("p.toml", "validators.v", "boom")
    assert isinstance(RegistryError.at("r.toml", "pins", "x"), RegistryError)


def test_about_leaves_out_the_source_a_report_already_names() -> None:
    err = UserError.at("in/a.png", None, "unreadable image")
    assert err.about("in/a.png") == "unreadable image" and err.about("in/b.png") == "in/a.png: unreadable image"


def test_a_user_error_survives_pickling_with_its_fields() -> None:
    err = pickle.loads(pickle.dumps(UserError.at("p.toml", "run.seed", "must be >= 0")))
    assert (err.source, err.field, err.detail, str(err)) == ("p.toml", "run.seed", "must be >= 0",
                                                               "p.toml: run.seed: must be >= 0")


def test_one_line_is_the_first_line_that_says_something() -> None:
    assert one_line(RuntimeError("shape mismatch\n  at layer 3")) == "shape mismatch"
    assert one_line(RuntimeError("\nFor more information, see x\nreal cause")) == "real cause"
    assert one_line(KeyError()) == "KeyError" and one_line(ValueError("bad"), named=True) == "ValueError: bad"
    assert one_line(ValueError("x" * 400), limit=10) == "x" * 9 + "…"
