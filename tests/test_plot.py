"""tunebench plot: the tuning curve's arithmetic on a hand-made log, and the PNG it draws."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import tvm
from typer.testing import CliRunner

from tunebench.bench.plot import eager_ms_from_bench, plot_curve, plot_log, tuning_curve
from tunebench.cli import app
from tunebench.errors import TunebenchError
from tunebench.logs.records import LogWriter, Record, WorkloadEntry, read_log

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _record(key: str, ms: float | None, t: float) -> Record:
    run_secs = [ms / 1e3] * 3 if ms is not None else None
    return Record(key, [], [], run_secs, None if ms else "build failed", {"kind": "llvm", "mcpu": "core-avx2"}, {}, tvm.__version__, time=t)


@pytest.fixture
def small_log(tmp_path: Path) -> Path:
    """Workload a (called twice) and b (once): b is first measured at record 3, after a failure."""
    workloads = {"a": WorkloadEntry("a", "conv_a", 1e6, "", weight=2), "b": WorkloadEntry("b", "conv_b", 1e6, "", weight=1)}
    path = tmp_path / "small.jsonl"
    writer = LogWriter(path)
    writer.append([_record("a", 10.0, 100.0), _record("b", None, 110.0)], workloads)
    writer.append([_record("b", 4.0, 160.0), _record("a", 3.0, 220.0), _record("a", 5.0, 280.0), _record("b", 1.0, 340.0)], workloads)
    return path


def test_curve_starts_when_every_workload_is_measured(small_log: Path) -> None:
    curve = tuning_curve(read_log(small_log))
    assert curve.workloads == 2 and curve.total_trials == 6 and curve.first_complete == 3
    assert curve.trials == [1, 2, 3, 4, 5, 6] and curve.measured == [1, 1, 2, 2, 2, 2]
    assert curve.elapsed_s == [0.0, 10.0, 60.0, 120.0, 180.0, 240.0]
    # 2 x best(a) + 1 x best(b), in seconds: a worse later record (a=5 ms) changes nothing
    assert curve.latency_s == pytest.approx([0.020, 0.020, 0.024, 0.010, 0.010, 0.007])
    partial, complete = curve.split()
    assert curve.trials[partial] == [1, 2] and curve.trials[complete] == [3, 4, 5, 6]


def test_model_weights_hold_the_curve_back_until_unseen_tasks_are_measured(small_log: Path) -> None:
    log = read_log(small_log)
    unseen = tuning_curve(log, {"a": 2, "b": 1, "c": 1})
    assert unseen.first_complete is None and unseen.measured[-1] == 2 and unseen.trials[unseen.split()[1]] == []
    assert tuning_curve(log, {"a": 2}).latency_s == pytest.approx([0.020, 0.020, 0.020, 0.006, 0.006, 0.006])


def test_plot_cli_writes_a_png(small_log: Path, tmp_path: Path) -> None:
    bench_json = tmp_path / "bench.json"
    bench_json.write_text(json.dumps({"columns": [{"name": "eager", "median_s": 0.012}]}))
    out = tmp_path / "plots" / "curve.png"
    result = CliRunner().invoke(app, ["plot", str(small_log), "-o", str(out), "--bench-json", str(bench_json)])
    assert result.exit_code == 0, result.output
    data = out.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 10_000
    width, height = struct.unpack(">II", data[16:24])  # IHDR: the image's pixel size
    assert (width, height) == (1210, 462)
    assert "7.00 ms now" in result.output


def test_plot_model_defaults_to_the_blocked_layout_for_the_logs_target(small_log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As ``tune`` does, ``plot --model`` counts the blocked lowering's tasks; those depend on the
    vector width, so they are lowered for the target the log was tuned for, not avx2."""
    import tunebench.bench.plot as plot

    haswell = tmp_path / "haswell.jsonl"
    haswell.write_text(small_log.read_text().replace('"mcpu": "core-avx2"', '"mcpu": "haswell"'))
    asked: list[tuple[str, str, str]] = []

    def weights(model: str, target: str, layout: str) -> dict[str, int]:
        asked.append((model, target, layout))
        return {"a": 2, "b": 1}

    monkeypatch.setattr(plot, "model_weights", weights)
    result = CliRunner().invoke(app, ["plot", str(haswell), "-o", str(tmp_path / "cli.png"), "--model", "m"])
    assert result.exit_code == 0, result.output
    plot_log(haswell, tmp_path / "api.png", model="m")
    assert asked == [("m", '{"kind":"llvm","mcpu":"haswell"}', "blocked")] * 2


def test_plot_draws_a_partial_log_marked_as_such(small_log: Path, tmp_path: Path) -> None:
    out = tmp_path / "partial.png"
    curve = plot_curve(read_log(small_log), out, weights={"a": 2, "b": 1, "c": 1})
    assert curve.first_complete is None and out.read_bytes()[:8] == PNG_MAGIC


def test_eager_line_source_and_errors(small_log: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(TunebenchError, match="no eager median"):
        eager_ms_from_bench(bad)
    with pytest.raises(TunebenchError, match="none of the 1 workloads"):
        empty = tmp_path / "failed.jsonl"
        LogWriter(empty).append([_record("a", None, 1.0)], {"a": WorkloadEntry("a", "conv_a", 1e6, "")})
        plot_log(empty, tmp_path / "x.png")
