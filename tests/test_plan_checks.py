"""Checks made at plan time, so that ``restore-run --dry-run`` reports them before anything runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from restorekit.cli import main
from restorekit.errors import UserError
from restorekit.plan import make_plan
from restorekit.spec import spec_from_dict


def train_spec(injectors: dict[str, Any], losses: dict[str, Any], *, more_steps: dict[str, Any] | None = None) -> dict:
    return {
        "run": {"mode": "train", "device": "cpu"},
        "networks": {"generator": {"component": "rrdb", "params": {"nf": 8, "nb": 1, "gc": 4, "scale": 2}}},
        "data": {"train": {"hq": "images"}},
        "steps": {"sr": {"networks": ["generator"], "injectors": injectors, "losses": losses}, **(more_steps or {})},
        "train": {"steps": 1},
    }


def plan_error(data: dict, registry) -> str:
    with pytest.raises(UserError) as info:
        make_plan(spec_from_dict(data, source="p.toml"), registry, source="p.toml")
    return str(info.value)


def test_a_loss_reading_a_key_no_injector_writes_is_a_plan_error(registry) -> None:
    data = train_spec({"fwd": {"component": "generator", "params": {"outputs": {"sr": "sr_rrdb"}}}},
                      {"l1": {"component": "pixel"}})
    assert plan_error(data, registry) == (
        "p.toml: steps.sr.losses.l1: loss 'l1' (pixel) reads state key 'sr', which no injector before it writes "
        "(state keys at this point: hq, lq, sr_rrdb)")
    data["steps"]["sr"]["losses"]["l1"]["params"] = {"pred": "sr_rrdb"}
    make_plan(spec_from_dict(data), registry)  # wired right: no error


def test_an_injector_reading_an_unwritten_key_and_the_order_of_injectors(registry) -> None:
    injectors = {
        "dec": {"component": "generator", "params": {"mode": "decode", "inputs": {"lr": "lq", "latents": "z"}}},
        "enc": {"component": "generator", "params": {"mode": "encode"}},
    }
    data = train_spec(injectors, {"nll": {"component": "direct"}})
    data["networks"]["generator"] = {"component": "srflow", "params": {"nf": 8, "nb": 1, "K": 1, "L": 2, "stack_blocks": [0]}}
    assert plan_error(data, registry) == (
        "p.toml: steps.sr.injectors.dec: injector 'dec' (generator) reads state key 'z', which no injector before "
        "it writes (state keys at this point: hq, lq)")
    data["steps"]["sr"]["injectors"] = {"enc": injectors["enc"], "dec": injectors["dec"]}  # encode first: fine
    make_plan(spec_from_dict(data), registry)


def test_a_later_step_reads_what_an_earlier_step_wrote(registry) -> None:
    later = {"refine": {"networks": ["generator"], "losses": {"l1": {"component": "pixel", "params": {"pred": "sr"}}}}}
    make_plan(spec_from_dict(train_spec({"fwd": {"component": "generator"}}, {"l1": {"component": "pixel"}},
                                        more_steps=later)), registry)


@pytest.mark.parametrize(("writer", "reader", "missed"), [
    ({"every": 10}, {}, 1),                       # the loss runs every step, its key only every 10th
    ({"after": 100}, {}, 0),
    ({"every": 2}, {"every": 3}, 3),              # 3 is not even
    ({"before": 50}, {"after": 20}, 50),
])
def test_a_key_written_only_on_some_steps_is_a_plan_error(registry, writer: dict, reader: dict, missed: int) -> None:
    data = train_spec({"fwd": {"component": "generator", **writer}}, {"l1": {"component": "pixel", **reader}})
    assert plan_error(data, registry) == (
        "p.toml: steps.sr.losses.l1: loss 'l1' reads state key 'sr', which only steps.sr.injectors.fwd writes, and "
        f"that does not run at every step this loss does (e.g. step {missed}): give both the same every/after/before")


@pytest.mark.parametrize(("writer", "reader", "step"), [
    ({"every": 10}, {"every": 10}, {}),
    ({"every": 2}, {"every": 4}, {}),             # every 4th step is also an even one
    ({"after": 100}, {"after": 150}, {}),
    ({"every": 5}, {}, {"every": 5}),              # the whole step runs every 5th: so does the reader
])
def test_a_reader_scheduled_within_its_writer_is_fine(registry, writer: dict, reader: dict, step: dict) -> None:
    data = train_spec({"fwd": {"component": "generator", **writer}}, {"l1": {"component": "pixel", **reader}})
    data["steps"]["sr"].update(step)
    make_plan(spec_from_dict(data), registry)
    # a later step that runs when the writing step does not (the writer's step runs every 2nd)
    later = {"refine": {"networks": ["generator"], "losses": {"l1": {"component": "pixel", "params": {"pred": "sr"}}}}}
    data = train_spec({"fwd": {"component": "generator"}}, {"l1": {"component": "pixel"}}, more_steps=later)
    data["steps"]["sr"]["every"] = 2
    assert "steps.refine.losses.l1: loss 'l1' reads state key 'sr', which only steps.sr.injectors.fwd" in plan_error(
        data, registry)


def test_undeclared_components_are_not_second_guessed(registry) -> None:
    from restorekit import InjectorComponent, Params, hookimpl

    class Opaque:
        @hookimpl
        def restorekit_injectors(self):
            return [InjectorComponent(name="opaque", params=Params, build=lambda p, n: (lambda s, i: {}))]

    registry.register(Opaque(), "opaque")
    data = train_spec({"o": {"component": "opaque"}}, {"l1": {"component": "pixel", "params": {"pred": "whatever"}}})
    make_plan(spec_from_dict(data), registry)


def test_dry_run_reports_the_state_key_error_in_one_line(tmp_path: Path, registry, capsys) -> None:
    spec = tmp_path / "p.toml"
    spec.write_text(
        '[run]\nmode = "train"\ndevice = "cpu"\n'
        '[networks.generator]\ncomponent = "rrdb"\nparams = { nf = 8, nb = 1, gc = 4, scale = 2 }\n'
        '[data.train]\nhq = "images"\n[train]\nsteps = 1\n'
        '[steps.sr]\nnetworks = ["generator"]\n'
        '[steps.sr.injectors.fwd]\ncomponent = "generator"\n'
        '[steps.sr.losses.l1]\ncomponent = "pixel"\nparams = { pred = "sr2" }\n'
    )
    assert main([str(spec), "--dry-run"], registry=registry) == 2
    err = capsys.readouterr().err
    assert err == (f"restore-run: error: {spec}: steps.sr.losses.l1: loss 'l1' (pixel) reads state key 'sr2', which "
                   "no injector before it writes (state keys at this point: hq, lq, sr)\n")


# ----------------------------------------------------------------------------------------------------
# spec checks live in the spec (pydantic validators) or the plan: --dry-run reports each as one line

INFER = {"run": {"mode": "infer", "device": "cpu"},
         "networks": {"generator": {"component": "rrdb", "params": {"nf": 8, "nb": 1, "gc": 4, "scale": 2}}},
         "infer": {"inputs": "in"}}


def spec_error(data: dict) -> str:
    with pytest.raises(UserError) as info:
        spec_from_dict(data, source="p.toml")
    return str(info.value)


@pytest.mark.parametrize(("infer", "message"), [
    ({"temperatures": [0.5, float("nan")]}, "p.toml: infer.temperatures: must be finite and >= 0 (got nan)"),
    ({"temperatures": [-0.1]}, "p.toml: infer.temperatures: must be finite and >= 0 (got -0.1)"),
    ({"temperatures": [0.8, 0.5, 0.8]}, "p.toml: infer.temperatures: duplicate values [0.8]"),
    ({"temperatures": []}, "p.toml: infer.temperatures: give at least one temperature"),
    ({"nan_ladder": [0.5, float("inf")]}, "p.toml: infer.nan_ladder: must be finite and >= 0 (got inf)"),
    ({"tile": {"size": 16, "overlap": 16}}, "p.toml: infer.tile: size (16) must be larger than overlap (16)"),
    ({"mode": "latent_transfer"}, "p.toml: infer.reference: latent_transfer needs a reference image"),
])
def test_infer_options_are_spec_errors(infer: dict, message: str) -> None:
    assert spec_error({**INFER, "infer": {"inputs": "in", **infer}}) == message


def train_data(**train: Any) -> dict:
    data = train_spec({"fwd": {"component": "generator"}}, {"l1": {"component": "pixel"}})
    data["train"].update(train)
    return data


@pytest.mark.parametrize(("train", "message"), [
    ({"save_generator": ["gen"]}, "p.toml: train.save_generator: unknown network 'gen' (available: generator)"),
    ({"best_metric": "psnr.psnr"}, "p.toml: train.best_metric needs [data.val] and at least one [validators.<name>]"),
    ({"schedule": {"kind": "multistep", "milestones": [0.5, -3]}},
     "p.toml: train.schedule.milestones: -3.0 is negative or not finite"),
])
def test_train_cross_checks_are_spec_errors(train: dict, message: str) -> None:
    assert spec_error(train_data(**train)) == message


def test_unfreeze_metric_needs_validation() -> None:
    data = train_data()
    data["networks"]["generator"]["unfreeze"] = {"metric": "psnr.psnr"}
    assert spec_error(data) == ("p.toml: networks.generator.unfreeze.metric needs [data.val] and at least one "
                                "[validators.<name>]")


def test_plan_checks_files_device_and_resume(tmp_path: Path, registry) -> None:
    data = train_data()
    data["run"]["precision"] = "fp16"
    assert plan_error(data, registry) == (
        "p.toml: run.precision: fp16 needs a CUDA device (running on cpu); use bf16 or fp32")
    data = train_data(resume=str(tmp_path))
    assert plan_error(data, registry) == f"p.toml: train.resume: {tmp_path}: not a complete checkpoint folder"
    data = {**INFER, "infer": {"inputs": "in", "temperature_map": str(tmp_path / "map.png")}}
    assert plan_error(data, registry) == f"p.toml: infer.temperature_map: {tmp_path / 'map.png'}: file not found"


RRDB_NET = 'component = "rrdb"\nparams = { nf = 8, nb = 1, gc = 4, scale = 2 }'
SRFLOW_NET = 'component = "srflow"\nparams = { nf = 8, nb = 1, gc = 4, K = 1, L = 3, stack_blocks = [0] }'


@pytest.mark.parametrize(("network", "infer", "expected"), [
    (RRDB_NET, 'mode = "sample"', "infer.mode = 'sample' needs a flow network (encode/decode), but "
                                  "networks.generator is component 'rrdb', which is not one"),
    (SRFLOW_NET, "tile = { size = 16, overlap = 15 }",
     "infer.tile: size (16) must exceed overlap (15) by at least the size multiple of 'srflow' (2)"),
])
def test_dry_run_checks_infer_against_the_network(tmp_path: Path, registry, capsys, network, infer, expected) -> None:
    spec = tmp_path / "p.toml"
    spec.write_text(f'[run]\nmode = "infer"\ndevice = "cpu"\n[networks.generator]\n{network}\n'
                    f'[infer]\ninputs = ["in"]\n{infer}\n')
    assert main([str(spec), "--dry-run"], registry=registry) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == f"restore-run: error: {spec}: {expected}\n"
