"""Peer columns: ONNX Runtime and OpenVINO on the model's ONNX export, fp32, checked against eager;
skipped with the install line where a peer is missing; each column alone in its own process on request."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tunebench.bench import bench, peers
from tunebench.errors import TunebenchError

TINY = f"{Path(__file__).parent / 'fixtures' / 'tiny.py'}:tiny_conv"


@pytest.fixture(scope="module")
def template() -> dict[str, object]:
    """A real run's JSON, eager only: what a stand-in column process answers with its own column in."""
    return bench.run_bench(TINY, iters=1, warmup=1, inductor=False, only=[bench.EAGER]).to_json()


def test_peer_columns_run_the_onnx_export_in_fp32() -> None:
    result = bench.run_bench(TINY, iters=3, warmup=1, inductor=False, peers=True, peer_spin=False, threads=1)
    cols = {c.name: c for c in result.columns}
    for name in peers.PEERS:
        col = cols[name]
        assert col.status == "ok", (name, col.reason)
        assert len(col.times) == 3 and col.max_abs_err is not None and col.max_abs_err <= bench.ATOL
        assert result.versions[name] == peers.version(name)
    assert cols[bench.ORT].settings["intra_op_num_threads"] == 1 and cols[bench.ORT].settings[peers.ORT_SPIN_KEY] == "0"
    assert cols[bench.OPENVINO].settings["INFERENCE_PRECISION_HINT"] == "f32", "bf16 on AMX hosts otherwise"
    assert cols[bench.OPENVINO].settings["INFERENCE_NUM_THREADS"] == "1"
    doc = result.to_json()
    assert next(c["settings"] for c in doc["columns"] if c["name"] == bench.ORT)["provider"] == "CPUExecutionProvider"
    assert bench.peer_ratio(result, bench.EAGER) == pytest.approx(min(cols[n].median for n in peers.PEERS) / cols[bench.EAGER].median)


def test_a_missing_peer_is_a_skipped_column_saying_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    real = peers.version
    monkeypatch.setattr(peers, "version", lambda p: None if p == "openvino" else real(p))
    result = bench.run_bench(TINY, iters=1, warmup=1, inductor=False, peers=True, only=[bench.EAGER, bench.OPENVINO])
    ov = result.column(bench.OPENVINO)
    assert ov.status == "skipped" and "pip install -e '.[peers]'" in ov.reason and "openvino" in ov.reason
    assert result.column(bench.ORT).reason == "not in --only", "left out by --only: never built"
    assert "openvino" not in result.versions


def test_only_refuses_an_unknown_column() -> None:
    with pytest.raises(TunebenchError, match=r"unknown column.*onnx-runtime"):
        bench.run_bench(TINY, iters=1, only=["eager", "onnx-runtime"])


def test_alone_times_each_column_in_its_own_process() -> None:
    result = bench.run_alone(TINY, rounds=1, iters=2, warmup=1, inductor=False, peers=True, only=[bench.EAGER, bench.ORT])
    names = [c.name for c in result.columns]
    assert names == [bench.EAGER, bench.ORT], "only the columns asked for get a process"
    for col in result.columns:
        assert col.status == "ok" and len(col.times) == 2, (col.name, col.reason, col.times)
    assert result.iters == 2 and result.settle == 0 and result.host["cpu"]
    assert result.to_json()["protocol"] == "alone: each column in its own process, 1 round, 2 calls each"
    assert result.speedup(result.column(bench.ORT)) == pytest.approx(result.column(bench.EAGER).median / result.column(bench.ORT).median)


def test_alone_alternates_the_columns_round_by_round_and_pools_their_samples(monkeypatch: pytest.MonkeyPatch, template: dict) -> None:
    # the processes stand in (each real one imports torch and TVM: ~15 s); the test above starts real ones
    calls: list[str] = []

    def child(model: str, options: dict[str, object]) -> dict[str, object]:
        name = options["only"][0]  # type: ignore[index]
        calls.append(name)
        skipped = name == bench.OPENVINO and len(calls) > 2  # its second process finds it missing
        col = {**template["columns"][0], "name": name, "times_s": [] if skipped else [len(calls) / 1e3] * 2}
        col |= {"status": "skipped", "reason": "gone"} if skipped else {}
        return {**template, "columns": [col]}

    monkeypatch.setattr(bench, "_child", child)
    result = bench.run_alone(TINY, rounds=3, iters=2, warmup=1, inductor=False, peers=True, only=[bench.EAGER, bench.OPENVINO])
    assert calls == [bench.EAGER, bench.OPENVINO, bench.EAGER, bench.OPENVINO, bench.EAGER], "a skipped column is not retried"
    assert result.column(bench.EAGER).times == [0.001, 0.001, 0.003, 0.003, 0.005, 0.005]
    assert result.column(bench.EAGER).processes == [0.001, 0.003, 0.005] and result.column(bench.EAGER).fastest_process == 0.001
    assert result.to_json()["columns"][0]["fastest_process_s"] == 0.001
    assert "fastest process ms" in [col.header for col in bench.table(result).columns]
    assert result.column(bench.OPENVINO).status == "skipped" and not result.column(bench.OPENVINO).times
    assert result.iters == 6 and result.to_json()["protocol"] == "alone: each column in its own process, 3 rounds alternated, 2 calls each"


def test_alone_warns_what_its_column_processes_warned(monkeypatch: pytest.MonkeyPatch, template: dict) -> None:
    # `bench --alone` on a Zen 1 no record was timed on: the children's ForeignTimingsWarning went nowhere
    import subprocess
    import warnings

    from tunebench.serve.choose import ForeignTimingsWarning

    stderr = (
        "/x/tunebench/serve/choose.py:62: ForeignTimingsWarning: none of the log's records for core-avx2 was timed on this kind of machine\n"
        "  warnings.warn(\n/x/torch/onnx/utils.py:9: UserWarning: an exporter's own note\n"
    )
    done = subprocess.CompletedProcess([], 0, stdout=json.dumps(template) + "\n", stderr=stderr)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: done)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        result = bench.run_alone(TINY, rounds=2, iters=1, warmup=1, inductor=False, only=[bench.EAGER])
    assert result.column(bench.EAGER).status == "ok"
    ours = [w for w in caught if issubclass(w.category, ForeignTimingsWarning)]
    assert len(ours) == 1 and "none of the log's records for core-avx2" in str(ours[0].message), "once, however many processes said it"
    assert not [w for w in caught if "exporter" in str(w.message)], "only tunebench's own warnings are forwarded"


def test_a_table_without_the_eager_column_has_no_speedups(monkeypatch: pytest.MonkeyPatch, template: dict) -> None:
    # `bench --alone 3 --only tunebench-tuned,tunebench-saved` timed both columns, then crashed printing them
    monkeypatch.setattr(bench, "_child", lambda model, options: {**template, "columns": [{**template["columns"][0], "name": options["only"][0]}]})  # type: ignore[index]
    result = bench.run_alone(TINY, rounds=1, iters=1, warmup=1, inductor=False, peers=True, only=[bench.ORT])
    assert [c.name for c in result.columns] == [bench.ORT] and result.speedup(result.column(bench.ORT)) is None
    assert bench.table(result).row_count == 1


def test_the_peer_ratio_reads_the_pooled_median_or_each_columns_fastest_process() -> None:
    cols = [
        {"name": bench.ORT, "status": "ok", "median_s": 9.0, "fastest_process_s": 7.0},
        {"name": bench.OPENVINO, "status": "ok", "median_s": 10.0, "fastest_process_s": 6.5},
        {"name": bench.SAVED, "status": "ok", "median_s": 8.0, "fastest_process_s": 7.2},
        {"name": bench.TUNED, "status": "ok", "median_s": 8.5, "fastest_process_s": None},  # one process: no such figure
    ]
    assert bench.faster_peer_over(cols, bench.SAVED) == pytest.approx(9.0 / 8.0)
    assert bench.faster_peer_over(cols, bench.SAVED, "fastest_process_s") == pytest.approx(6.5 / 7.2)  # the faster peer may change
    assert bench.faster_peer_over(cols, bench.TUNED, "fastest_process_s") is None


def test_per_layer_reads_each_peers_convs_with_their_true_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """``benchmarks/per_layer.py`` matches convs across runtimes by output elements and FLOP: both
    peers' profiles must give a plain and a grouped strided conv their real work, or nothing matches."""
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("per_layer", Path(__file__).parents[1] / "benchmarks" / "per_layer.py")
    per_layer = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "per_layer", per_layer)  # its dataclass looks its module up there
    spec.loader.exec_module(per_layer)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, 16, 3, stride=2, groups=4)).eval()
    # (output elements, FLOP = 2 x output elements x MACs per output: 8*3*3, then 16/4*3*3)
    expected = sorted([(16 * 16 * 16, 2 * 16 * 16 * 16 * 72), (16 * 7 * 7, 2 * 16 * 7 * 7 * 36)])
    with torch.no_grad():
        for profile in (per_layer.ort_kernels, per_layer.ov_kernels):
            kernels, whole = profile(model, (torch.randn(1, 8, 16, 16),), 1, 2)
            convs = sorted((k.out_numel, k.flop) for k in kernels if k.kind == "conv")
            assert convs == expected, profile.__name__
            assert len(whole) == 2 and all(k.times for k in kernels)


def test_per_layer_times_each_side_in_a_process_of_its_own(tiny_log: Path, tmp_path: Path) -> None:
    """In one process, what ran first slowed what was timed after it (the save's compile: ResNet18's
    whole call 34 ms against 18 loaded alone). ``benchmarks/per_layer.py`` saves, times TVM's kernels
    and times the peer's nodes each in a child; the table still pairs tiny_conv's convs across sides."""
    import json
    import os
    import subprocess

    script = Path(__file__).parents[1] / "benchmarks" / "per_layer.py"
    argv = [sys.executable, str(script), TINY, "--log", str(tiny_log), "--runs", "2", "--threads", "1", "--results", str(tmp_path)]
    run = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err = run.communicate(timeout=600)
    assert run.returncode == 0, err[-3000:]
    doc = json.loads(next(tmp_path.glob("tiny_conv-*.json")).read_text())
    pids = set(doc["processes"].values())
    assert len(pids) == 2 and not pids & {run.pid, os.getpid()}  # two children of the script, not the script
    tvm_convs = [k for k in doc["tvm"] if k["kind"] == "conv"]
    assert tvm_convs and len(tvm_convs) == len([k for k in doc["onnxruntime"] if k["kind"] == "conv"])
    assert all(k["median_ms"] > 0 for k in tvm_convs) and len(doc["tvm_whole_s"]) == 2
