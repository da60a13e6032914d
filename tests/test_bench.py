"""``restore-run --benchmark`` at CI smoke size: the table, the JSON file, --compare, peak memory."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from restorekit import bench
from restorekit.cli import main
from restorekit_rrdb import RRDBNet
from fakes import tiny_srflow

TINY_RRDB = "rrdb:{nb = 1, nf = 8, gc = 4}"


def test_benchmark_command_table_json_and_compare(registry, tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench.json"
    args = ["--benchmark", "--model", TINY_RRDB, "--sizes", "8", "--batches", "2", "--repeats", "1",
            "--warmup", "0", "--device", "cpu", "--memory-mode", "sampled"]
    assert main(args + ["--json", str(out)], registry=registry) == 0
    text = capsys.readouterr().out
    assert "| model | path |" in text and "MP/s" in text and "x plain" in text
    data = json.loads(out.read_text())
    rows = data["rows"]
    assert [(r["path"], r["batch"], r["lr"], r["scale"]) for r in rows] == [("forward", 2, 8, 4), ("bicubic", 2, 8, 4)]
    fwd = rows[0]
    assert fwd["ms"] > 0 and fwd["megapixels_per_s"] == pytest.approx(2 * 32 * 32 / fwd["ms"] / 1e3)
    assert fwd["ms_per_image"] == pytest.approx(fwd["ms"] / 2)
    assert fwd["max_abs_diff"] <= 1e-5 and fwd["speedup_vs_plain"] > 0 and fwd["vs_bicubic"] > 0
    # the increase over what the case held before the call (a tiny forward: a few MB), not the process's RSS
    assert fwd["memory_kind"] == "rss-sampled" and 0 <= fwd["peak_mb"] < 50
    assert data["machine"]["threads"] >= 1

    same = bench.compare(bench.read_json(out), bench.read_json(out))
    assert [c.verdict for c in same] == ["same"]
    # an old run 1000x faster than this one: this one is a regression, marked, and the command exits 1 (a new
    # measurement, so the margin is wide: a loaded machine or a cold first run cannot make up a factor of 1000)
    old = json.loads(out.read_text())
    for r in old["rows"]:
        r["ms"] /= 1000
    fast_old = tmp_path / "fast_old.json"
    fast_old.write_text(json.dumps(old))
    changes = bench.compare(bench.read_json(out), bench.read_json(fast_old))
    assert [(c.verdict, round(c.ratio, 6)) for c in changes] == [("regression", 1000.0)]
    assert "REGRESSION 1000.00x" in bench.table(bench.read_json(out), bench.change_marks(changes))
    assert main(args + ["--compare", str(fast_old)], registry=registry) == 1
    text = capsys.readouterr().out
    assert "REGRESSION" in text and "1 regression(s) beyond the noise" in text


def test_compare_threshold_follows_measured_noise() -> None:
    row = bench.Row("m", "forward", "cpu", "fp32", 8, 1, 1, 4, 10.0, 10.0, 1.0, None, 12.0, 1.2, 5.0, 0.05,
                    None, None, "", 0.0, 5)
    assert bench.compare([replace(row, ms=11.5)], [row])[0].verdict == "same"  # 15 % < 2·(5 %+5 %)… floor 20 %
    assert bench.compare([replace(row, ms=13.0)], [row])[0].verdict == "regression"
    noisy = replace(row, spread=0.5)
    assert bench.compare([replace(noisy, ms=13.0)], [noisy])[0].verdict == "same"  # 30 % is within that noise
    assert bench.compare([replace(row, ms=5.0)], [row])[0].verdict == "faster"


def test_benchmark_user_errors(registry, tmp_path: Path, capsys) -> None:
    assert main(["--benchmark", "--model", TINY_RRDB, "--precisions", "fp8"], registry=registry) == 2
    assert "--precisions: unknown precision 'fp8'" in capsys.readouterr().err
    bad = tmp_path / "old.json"
    bad.write_text("{}")
    assert main(["--benchmark", "--model", TINY_RRDB, "--compare", str(bad)], registry=registry) == 2
    assert "not a restore-run --benchmark JSON file" in capsys.readouterr().err
    assert main(["--benchmark", "--model", "rrdb:{nb = 0}"], registry=registry) == 2
    err = capsys.readouterr().err
    assert err.startswith("restore-run: error:") and "nb" in err and len(err.strip().splitlines()) == 1


def test_compare_file_with_wrong_types_is_one_line(registry, tmp_path: Path, capsys) -> None:
    """A JSON file whose rows have a string or null where a number belongs: one line, not a TypeError later."""
    new = tmp_path / "new.json"
    argv = ["--benchmark", "--model", TINY_RRDB, "--sizes", "8", "--repeats", "1", "--no-memory"]
    assert main([*argv, "--json", str(new)], registry=registry) == 0
    capsys.readouterr()
    data = json.loads(new.read_text())
    for field, value in (("spread", None), ("ms", "x")):
        bad = json.loads(json.dumps(data))
        for r in bad["rows"]:
            r[field] = value
        old = tmp_path / f"bad_{field}.json"
        old.write_text(json.dumps(bad))
        assert main([*argv, "--compare", str(old)], registry=registry) == 2
        err = capsys.readouterr().err
        assert err.startswith("restore-run: error:") and len(err.strip().splitlines()) == 1, err
        assert f"rows.0.{field}" in err


@pytest.mark.parametrize("flags, expected", [
    (["--device", "nonsense"], "--device nonsense: not a device"),
    (["--device", "meta"], "--device meta: not a device"),
    (["--device", ","], "--device: give at least one device"),
    (["--precisions", ","], "--precisions: give at least one"),
    (["--threads", "-2"], "--threads: must be at least 1"),
    (["--json", "{folder}"], "is a folder"),
    (["--json", "{file}/bench.json"], "exists and is not a folder"),
    (["--compare", "{folder}"], "--compare: is a folder"),
    (["--precisions", "fp16", "--device", "cpu"], "--precisions fp16: needs a CUDA device"),
    (["--input", "{file}"], "--input does nothing with --benchmark"),
    (["--seed", "3"], "--seed does nothing with --benchmark"),
])
def test_benchmark_bad_flags_are_one_line_before_measuring(registry, tmp_path: Path, capsys, flags, expected) -> None:
    """Bad --device/--precisions/--threads/--json/--compare values: one line, exit 2, nothing measured."""
    (tmp_path / "file").write_text("x")
    flags = [f.format(folder=tmp_path, file=tmp_path / "file") for f in flags]
    argv = ["--benchmark", "--model", TINY_RRDB, "--sizes", "8", "--repeats", "1", "--no-memory", *flags]
    assert main(argv, registry=registry) == 2
    captured = capsys.readouterr()
    assert expected in captured.err and captured.err.startswith("restore-run: error:")
    assert len(captured.err.strip().splitlines()) == 1 and "benchmark:" not in captured.out + captured.err


def test_flow_case_rows_and_plain_path_equality() -> None:
    cfg = bench.BenchConfig(samples=3, repeats=1, warmup=0, memory=False)
    rows = bench.run_case(bench.BenchModel("tiny", tiny_srflow(), True), torch.device("cpu"), "fp32", 8, 1, cfg,
                          lambda _m: None)
    by = {r.path: r for r in rows}
    assert set(by) == {"forward", "sample", "bicubic"}
    s = by["sample"]
    assert s.samples == 3 and s.samples_per_s is not None and s.samples_per_s > 0
    assert s.max_abs_diff is not None and s.max_abs_diff <= 1e-4  # cached features + batching = plain decodes
    assert by["forward"].max_abs_diff <= 1e-4


def test_rss_sampler_sees_a_large_allocation() -> None:
    # freed before the block ends, so only the sampling thread can see it: wait until it has (no fixed sleep that a
    # loaded machine could outlast; the deadline only ends a test that would otherwise hang)
    with bench.RssSampler() as sampler:
        x = torch.ones(64, 2**20)  # 256 MiB, touched
        deadline = time.monotonic() + 60
        while sampler.increase_mb < 200 and time.monotonic() < deadline:
            time.sleep(0.001)
        del x
    assert 200 <= sampler.increase_mb <= 400
    held: list[torch.Tensor] = []  # alive when the call ends: the last sample sees it
    mb, kind = bench.peak_memory_mb(lambda: held.append(torch.ones(64, 2**20)), torch.device("cpu"))
    assert kind == "rss-sampled" and 200 <= mb <= 400


@pytest.mark.slow
def test_process_memory_measures_the_path_in_a_fresh_process(tmp_path: Path) -> None:
    torch.manual_seed(0)
    saved = tmp_path / "m.pt"
    torch.save(RRDBNet(nf=8, nb=1, gc=4, scale=4).eval(), saved)
    job = bench.MemoryJob(str(saved), False, "cpu", "fp32", 128, 4, 4, "forward", "plain")
    mb, kind = bench.process_peak_mb(job)
    # the output alone is 4 x 3 x 512 x 512 floats (12 MiB); the x4 stage's 8-channel maps twice that
    assert kind == "rss-process" and 60 <= mb <= 400


def test_train_rows_compare_the_training_step_with_the_plain_one(registry) -> None:
    cfg = bench.BenchConfig(samples=0, repeats=1, warmup=0, memory=False, train=True)
    switches = registry.get("generator", "srflow").component.switches  # its RRDB frozen in the `train` rows
    rows = bench.run_case(bench.BenchModel("tiny", tiny_srflow(), True, switches), torch.device("cpu"), "fp32", 8, 1,
                          cfg, lambda _m: None)
    by = {r.path: r for r in rows}
    assert {"forward", "train", "train-ckpt", "train-all", "bicubic"} <= set(by)
    for path in ("train", "train-ckpt", "train-all"):
        r = by[path]
        # the first loss of the fast step equals a fresh plain copy's (same weights, same batch; RRDB frozen or not)
        assert r.max_abs_diff is not None and r.max_abs_diff <= 1e-4
        assert r.ms > 0 and r.plain_ms is not None and r.plain_ms > 0 and r.speedup_vs_plain is not None
        assert "trainer step" in r.note and ("adam=fused" in r.note or "adam=foreach" in r.note)


def test_a_benchmark_that_measures_nothing_is_an_error(registry, monkeypatch, capsys) -> None:
    # every case failing (absurd --sizes, a model that cannot run) is exit 2 with the reason, not an empty table
    import restorekit.bench.cases as cases

    def fail(*args, **kwargs):
        raise RuntimeError("not enough memory: you tried to allocate 120 GB")

    monkeypatch.setattr(cases, "run_case", fail)
    assert main(["--benchmark", "--model", TINY_RRDB, "--sizes", "100000", "--no-memory"], registry=registry) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("restore-run: error: --benchmark: nothing could be measured") and "120 GB" in err


def test_a_fresh_flow_is_exercised_so_max_diff_compares_real_outputs(registry) -> None:
    # a fresh SRFlow's couplings are the identity: the benchmark initialises its ActNorms from data and gives its
    # zero-initialised weights small values, so the fast path's numerics are really compared
    from restorekit.bench.models import resolve_models

    (bm,), _ = resolve_models(["srflow:{nb = 1, nf = 8, gc = 4, K = 1, L = 3, stack_blocks = [0], "
                               "hidden_channels = 8}"], registry)
    assert bm.flow and all(m.initialized for m in bm.module.modules() if hasattr(m, "initialized"))
    lr = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        sr = bm.module.decode(lr, temperature=0.0)
        assert torch.isfinite(sr).all() and float(sr.abs().max()) > 0  # the identity flow would give zeros
