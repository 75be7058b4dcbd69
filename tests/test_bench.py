"""tunebench bench: every column on a tiny model, JSON output, and the output check that gates timing.

The tunebench columns must time the serving path (torch.compile with the tunebench backend) and
report the backend's coverage; a log this host cannot use must skip the tuned column, saying why.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tests.conftest import Host, rewritten
from tunebench.bench import bench
from tunebench.bench.bench import apply_model
from tunebench.errors import TunebenchError
from tunebench.logs.records import read_log
from tunebench.serve import cache
from tunebench.serve.runtime import TvmSubgraph

TINY = f"{Path(__file__).parent / 'fixtures' / 'tiny.py'}:tiny_conv"


@pytest.mark.timeout(900)  # its bench process may take 600 s: that timeout should be the one to speak
def test_bench_cli_writes_json_with_every_column(tiny_log: Path, tmp_path: Path) -> None:
    # a fresh process: TVM sizes its thread pool once, at first use, so an in-process run after other
    # tests could not show that --threads reaches TVM
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "tunebench.cli", "bench", TINY, "--log", str(tiny_log), "--iters", "5", "--warmup", "1", "--settle", "1", "--threads", "2"]
    cmd += ["--torch-isa", "avx2", "--untuned", "--saved", "--json", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(out.read_text())
    cols = {c["name"]: c for c in data["columns"]}
    assert list(cols) == [bench.EAGER, bench.INDUCTOR, bench.UNTUNED, bench.TUNED, bench.SAVED]
    for c in cols.values():
        assert c["status"] == "ok", (c["name"], c["reason"])
        assert len(c["times_s"]) == 5 and c["median_s"] > 0 and c["p10_s"] <= c["median_s"] <= c["p90_s"]
        assert c["speedup_vs_eager"] == pytest.approx(cols["eager"]["median_s"] / c["median_s"])
        assert c["gflops"] == pytest.approx(data["flop"] / c["median_s"] / 1e9)
        assert c["compile_s"] is not None and c["max_abs_err"] <= 1e-3
    applied = len(read_log(tiny_log).best())
    assert cols[bench.TUNED]["coverage"] == f"1/1 subgraphs in TVM, {applied}/2 tasks tuned, nchw layout", "the layout the log was tuned in"
    assert cols[bench.TUNED]["served"]["applied"] == applied and cols[bench.TUNED]["served"]["pytorch"] == 0
    assert cols[bench.UNTUNED]["coverage"] == "1/1 subgraphs in TVM, 0/2 tasks tuned, nchw layout", "fallback 'never': naive kernels in TVM"
    assert 'backend="tunebench"' in cols[bench.TUNED]["path"] and "apply_history_best" in cols[bench.TUNED]["path"]
    assert data["protocol"] == "interleaved, 1 untimed settling call(s) before each sample"
    assert data["flop"] > 0 and data["threads"] == {"torch": 2, "tvm": 2} and data["settle"] == 1
    assert data["target"]["mcpu"] == "core-avx2"  # no --target: the one the log was tuned for
    assert data["command"].startswith("tunebench ") and data["versions"]["tvm"] and data["host"]["cpu"] and data["date"]
    assert "inductor" in result.stdout and "eager_median / column_median" in result.stdout
    assert data["torch_isa"]["ONEDNN_MAX_CPU_ISA"] == "AVX2" and data["torch_isa"]["aten_capability"], "oneDNN capped at the log's ISA"
    assert "oneDNN capped at AVX2" in result.stdout


def test_inductor_column_compiles_and_calls_with_freezing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Frozen, as a PyTorch user serves a CPU model (the default ran ResNet18 slower than eager); on
    every call, so a recompile freezes too, and the setting does not leak to what runs after."""
    import torch
    from torch._inductor import config

    seen: list[bool] = []
    monkeypatch.setattr(torch, "compile", lambda module, backend: lambda *args: seen.append(config.freezing) or module(*args))
    call = bench._inductor(torch.nn.Identity(), (torch.ones(2),))
    call()
    call()
    assert seen == [True, True] and not config.freezing


def test_torch_isa_needs_a_fresh_process() -> None:
    with pytest.raises(TunebenchError, match="unknown --torch-isa 'sse4'"):
        bench.run_bench(TINY, torch_isa="sse4")
    with pytest.raises(TunebenchError, match="before torch is imported"):
        bench.run_bench(TINY, torch_isa="avx2")


def test_tuned_column_is_the_serving_path(tiny_log: Path) -> None:
    runs = cache.STATS.tvm_runs
    result = bench.run_bench(TINY, log=tiny_log, iters=3, warmup=1, inductor=False, whole_model=True, saved=True)
    tuned, whole, saved = result.column(bench.TUNED), result.column(bench.WHOLE), result.column(bench.SAVED)
    assert result.column(bench.UNTUNED).reason.startswith("with a log, only with --untuned")  # it distorts the other columns
    assert tuned.status == "ok" and tuned.max_abs_err is not None and tuned.max_abs_err <= 1e-3 and tuned.compile_s
    assert tuned.coverage == "1/1 subgraphs in TVM, 2/2 tasks tuned, nchw layout" and tuned.served.applied == 2
    assert saved.status == "ok" and saved.max_abs_err <= 1e-3 and saved.coverage == tuned.coverage and saved.served == tuned.served
    # every call of the tuned column (compile, check, warm-up, samples) ran the backend's TVM subgraph,
    # and every call of the saved one (check, warm-up, samples) the loaded library's
    assert cache.STATS.tvm_runs - runs == 3 + 3 * tuned.calls_per_sample + 2 + 3 * saved.calls_per_sample
    assert whole.status == "ok" and whole.max_abs_err <= 1e-3 and whole.coverage == tuned.coverage and len(whole.times) == 3
    assert result.lower_s is not None and [c["name"] for c in result.to_json()["columns"]][-2:] == [bench.WHOLE, bench.SAVED]
    assert "strict alternation" in result.to_json()["protocol"]


def _without_one_task(log: Path, out: Path, rename_others: bool) -> Path:
    """``log`` with every record of its first recorded task dropped; with ``rename_others`` the other
    workloads' task names changed, so they compute no relative of it (``choose.stand_ins``)."""
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    dropped = next(d["key"] for d in lines if d["type"] == "record")
    kept = [d for d in lines if not (d["type"] == "record" and d["key"] == dropped)]
    for d in kept:
        if rename_others and d["type"] == "workload":
            d["task"] = "fused_other_op"
    out.write_text("".join(json.dumps(d) + "\n" for d in kept))
    return out


def test_partly_tuned_log_keeps_the_tuned_column_honest(tiny_log: Path, tmp_path: Path) -> None:
    # one task without records and no relative to stand in: the backend keeps that subgraph in PyTorch, no "tuned" time shown
    partial = _without_one_task(tiny_log, tmp_path / "partial.jsonl", rename_others=True)
    with pytest.warns(UserWarning, match="run in PyTorch: 1/2 of their tasks"):
        result = bench.run_bench(TINY, log=partial, iters=1, warmup=1, inductor=False, untuned=False)
    tuned = result.column(bench.TUNED)
    assert tuned.status == "skipped" and not tuned.times
    assert tuned.reason == "nothing runs in TVM (0/1 subgraphs in TVM, 1/2 tasks tuned): 1 task(s) have no usable record and their subgraphs stay in PyTorch"


@pytest.mark.parametrize("best_unfit", [False, True])
def test_a_task_without_records_served_by_a_relative_is_said_so(tiny_log: Path, tmp_path: Path, best_unfit: bool) -> None:
    # the other conv of the model computes the same ops at other extents: its schedule, refitted, serves the untuned one;
    # with ``best_unfit`` its fastest record's schedule does not apply (as when a tile does not divide the untuned
    # task's extents, 2 of 8 suite runs): its next record serves (before: the task stayed in PyTorch)
    partial = _without_one_task(tiny_log, tmp_path / "partial.jsonl", rename_others=False)
    if best_unfit:
        _add_fastest_unfit_record(partial)
    result = bench.run_bench(TINY, log=partial, iters=1, warmup=1, inductor=False, untuned=False)
    tuned = result.column(bench.TUNED)
    assert tuned.status == "ok" and tuned.max_abs_err <= 1e-3, (tuned.status, tuned.reason)
    assert tuned.coverage == "1/1 subgraphs in TVM, 2/2 tasks tuned (1 transferred from other workloads, untimed), nchw layout"


def _add_fastest_unfit_record(log: Path) -> None:
    """Append to ``log`` a record faster than any, of its one recorded task, whose schedule names a block no TIR has."""
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    fake = dict(next(d for d in lines if d["type"] == "record" and d["error"] is None))
    insts, decisions = fake["trace"]
    fake["trace"] = [[[kind, ins, ["no_such_block", *attrs[1:]] if kind == "GetSBlock" else attrs, outs] for kind, ins, attrs, outs in insts], decisions]
    fake["run_secs"] = [1e-9] * len(fake["run_secs"])
    log.write_text(log.read_text() + json.dumps(fake) + "\n")


def test_log_this_host_cannot_use_skips_the_tuned_column(tiny_log: Path, tmp_path: Path, fake_host: Callable[[str], Host]) -> None:
    foreign = rewritten(tiny_log, tmp_path / "foreign.jsonl", target={"mcpu": "skylake-avx512"})
    fake_host("zen3")  # an AVX2-only host
    result = bench.run_bench(TINY, log=foreign, iters=1, warmup=1, inductor=False, untuned=False, whole_model=True, saved=True)
    for name in (bench.TUNED, bench.WHOLE, bench.SAVED):
        col = result.column(name)
        assert col.status == "skipped" and not col.times and col.compile_s is None, name
        assert col.reason.startswith("no record in the log is usable here: it was tuned for skylake-avx512, this run's target is core-avx2")
        assert "this CPU lacks avx512bw, avx512cd, avx512dq, avx512f, avx512vl" in col.reason
    assert result.target["mcpu"] == "core-avx2" and result.column(bench.EAGER).times
    with pytest.raises(TunebenchError, match="no record in the log is usable here"):
        apply_model(TINY, foreign, runs=1)


def test_apply_is_the_bench_under_strict_alternation(tiny_log: Path) -> None:
    report = apply_model(TINY, tiny_log, runs=2)
    assert report.protocol == bench.protocol(0) and report.protocol.startswith("strict alternation") and report.rounds == 2
    assert report.coverage == "1/1 subgraphs in TVM, 2/2 tasks tuned, nchw layout" and report.applied == 2
    assert report.max_abs_error <= 1e-3 and report.tvm_ms > 0 and report.eager_ms > 0


def test_wrong_outputs_are_failed_not_timed(tiny_log: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tunebench.serve.runtime import CompiledModel

    def wrong(self: TvmSubgraph, *xs: torch.Tensor) -> object:
        out = torch.randn(1, 8, 16, 16)
        return (out,) if self.tuple_out else out

    monkeypatch.setattr(TvmSubgraph, "forward", wrong)
    monkeypatch.setattr(CompiledModel, "__call__", lambda self, *xs: torch.randn(1, 8, 16, 16))
    monkeypatch.setattr(bench, "_inductor", lambda module, inputs: lambda: torch.zeros(1, 8, 16, 16))
    result = bench.run_bench(TINY, log=tiny_log, iters=2, warmup=1, whole_model=True, untuned=True)
    assert result.column(bench.EAGER).status == "ok"
    for name in (bench.INDUCTOR, bench.UNTUNED, bench.TUNED, bench.WHOLE):
        col = result.column(name)
        assert col.status == "failed" and "differs from eager" in col.reason and not col.times, name
    assert json.loads(json.dumps(result.to_json()))["columns"][1]["median_s"] is None


def test_columns_that_cannot_run_are_skipped_with_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(module: object, inputs: object) -> object:
        def call() -> None:
            raise RuntimeError("no C++ compiler\nmore detail")

        return call

    monkeypatch.setattr(bench, "_inductor", broken)
    monkeypatch.setattr(bench, "UNTUNED_GFLOP_LIMIT", 0.0)  # tiny_conv now counts as large
    result = bench.run_bench(TINY, iters=2, warmup=1)
    assert result.column(bench.INDUCTOR).status == "skipped"
    assert result.column(bench.INDUCTOR).reason == "cannot run: RuntimeError: no C++ compiler"
    assert result.column(bench.UNTUNED).status == "skipped" and "--untuned" in result.column(bench.UNTUNED).reason
    assert result.column(bench.TUNED).reason == "no --log given"
    assert result.column(bench.EAGER).times and result.lower_s is None  # nothing to lower for


def test_missing_log_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(TunebenchError, match="does not exist"):
        bench.run_bench(TINY, log=tmp_path / "nope.jsonl")


def test_with_batch_makes_fresh_rows_of_the_same_kind() -> None:
    x, ids = torch.randn(1, 3, 8, 8), torch.randint(0, 50, (1, 16))
    bx, bids = bench.with_batch((x, ids), 4)
    assert bx.shape == (4, 3, 8, 8) and bx.dtype == x.dtype and not torch.equal(bx[0], bx[1])
    assert bids.shape == (4, 16) and bids.dtype == torch.int64 and int(bids.max()) <= 49
    assert bench.with_batch((x,), None)[0] is x
    with pytest.raises(TunebenchError):
        bench.with_batch((x,), 0)


def test_compare_rejects_shape_and_value_mismatches() -> None:
    ref = torch.ones(2, 3)
    assert bench.compare(ref + 1e-5, ref)[0]
    assert not bench.compare(ref + 0.1, ref)[0]
    assert "shape" in bench.compare(torch.ones(3, 2), ref)[2]
    assert "outputs" in bench.compare((ref, ref), ref)[2]
