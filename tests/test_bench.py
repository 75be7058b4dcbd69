"""tunebench bench: every column on a tiny model, JSON output, and the output check that gates timing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tunebench import bench
from tunebench.errors import TunebenchError
from tunebench.records import read_log

TINY = f"{Path(__file__).parent / 'fixtures' / 'tiny.py'}:tiny_conv"


def test_bench_cli_writes_json_with_every_column(tiny_log: Path, tmp_path: Path) -> None:
    # a fresh process: TVM sizes its thread pool once, at first use, so an in-process run after other
    # tests could not show that --threads reaches TVM
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "tunebench.cli", "bench", TINY, "--log", str(tiny_log), "--iters", "5", "--warmup", "1", "--settle", "1", "--threads", "2"]
    cmd += ["--torch-isa", "avx2", "--json", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(out.read_text())
    cols = {c["name"]: c for c in data["columns"]}
    assert list(cols) == [bench.EAGER, bench.INDUCTOR, bench.UNTUNED, bench.TUNED]
    for c in cols.values():
        assert c["status"] == "ok", (c["name"], c["reason"])
        assert len(c["times_s"]) == 5 and c["median_s"] > 0 and c["p10_s"] <= c["median_s"] <= c["p90_s"]
        assert c["speedup_vs_eager"] == pytest.approx(cols["eager"]["median_s"] / c["median_s"])
        assert c["gflops"] == pytest.approx(data["flop"] / c["median_s"] / 1e9)
        assert c["compile_s"] is not None and c["max_abs_err"] <= 1e-3
    applied = len(read_log(tiny_log).best())
    assert cols[bench.TUNED]["coverage"] == f"{applied}/2 tasks tuned, nchw layout", "the layout the log was tuned in"
    assert cols[bench.UNTUNED]["coverage"] == "0/2 tasks tuned"
    assert data["flop"] > 0 and data["threads"] == {"torch": 2, "tvm": 2} and data["settle"] == 1
    assert data["target"]["mcpu"] == "core-avx2"  # no --target: the one the log was tuned for
    assert data["command"].startswith("tunebench ") and data["versions"]["tvm"] and data["host"]["cpu"] and data["date"]
    assert "inductor" in result.stdout and "eager_median / column_median" in result.stdout
    assert data["torch_isa"]["ONEDNN_MAX_CPU_ISA"] == "AVX2" and data["torch_isa"]["aten_capability"], "oneDNN capped at the log's ISA"
    assert "oneDNN capped at AVX2" in result.stdout


def test_torch_isa_needs_a_fresh_process() -> None:
    with pytest.raises(TunebenchError, match="unknown --torch-isa 'sse4'"):
        bench.run_bench(TINY, torch_isa="sse4")
    with pytest.raises(TunebenchError, match="before torch is imported"):
        bench.run_bench(TINY, torch_isa="avx2")


def test_wrong_outputs_are_failed_not_timed(tiny_log: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tunebench.dispatch import CompiledModel

    monkeypatch.setattr(CompiledModel, "__call__", lambda self, *xs: torch.randn(1, 8, 16, 16))
    monkeypatch.setattr(bench, "_inductor", lambda module, inputs: lambda: torch.zeros(1, 8, 16, 16))
    result = bench.run_bench(TINY, log=tiny_log, iters=2, warmup=1)
    assert result.column(bench.EAGER).status == "ok"
    for name in (bench.INDUCTOR, bench.UNTUNED, bench.TUNED):
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
