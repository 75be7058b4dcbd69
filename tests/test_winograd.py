"""Issue 7: Winograd convs compete with direct ones per conv shape, on the log's measured times."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from tests.conftest import PATIENT, TINY
from tunebench import api
from tunebench.logs.records import HistoryLog, Record, WorkloadEntry, read_log
from tunebench.lowering import frontend, tasks
from tunebench.lowering.winograd import TASK_MARK, signatures
from tunebench.serve import build, choose, runtime


def test_winograd_lowering_matches_eager_and_skips_ineligible_convs() -> None:
    from tunebench.zoo import get_model

    module, (x,) = get_model(TINY)
    lowered = api.lower_model(TINY, "avx2", layout="nchw")
    convs = signatures(lowered.source)
    assert [str(c) for c in convs] == ["3x16x16->8x16x16", "8x16x16->8x16x16"]
    # stride-2 convs keep the direct kernel
    strided = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)).eval()
    assert signatures(api.lower_model(strided, "avx2", example_inputs=(x,), layout="nchw").source) == []

    winograd_mod = frontend.optimize(lowered.source, lowered.target, convs)
    compiled = runtime.CompiledModel(build.build(winograd_mod, lowered.target), choose.Coverage([]))
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), module(x), rtol=1e-4, atol=1e-4)


def test_winograd_tasks_are_added_beside_the_direct_ones() -> None:
    direct = api.lower_model(TINY, "avx2", layout="nchw")
    both = api.lower_model(TINY, "avx2", winograd=True, layout="nchw")
    assert {t.workload_key for t in direct.tasks} < {t.workload_key for t in both.tasks}
    by_impl = {(str(t.conv), t.impl) for t in both.tasks}
    for conv in ("3x16x16->8x16x16", "8x16x16->8x16x16"):
        assert {(conv, "direct"), (conv, "winograd")} <= by_impl
    winograd_tasks = [t for t in both.tasks if t.impl == "winograd"]
    assert all(TASK_MARK in t.name for t in winograd_tasks)


def _fake_log(tasks: list, latency: dict[str, float]) -> HistoryLog:
    """Records that only carry latencies: enough for choosing, never applied."""
    log = HistoryLog()
    for t in tasks:
        log.workloads[t.workload_key] = WorkloadEntry(t.workload_key, t.name, t.flop, "", t.weight)
        seconds = latency[t.impl or "other"]
        log.records.append(Record(t.workload_key, [], [], [seconds], None, {"kind": "llvm", "mcpu": "core-avx2", "num-cores": 2}, {}, "0.27"))
    return log


def test_the_faster_implementation_per_conv_shape_is_chosen() -> None:
    lowered = api.lower_model(TINY, "avx2", winograd=True, layout="nchw")
    spec = lowered.target
    for fast, expected in (("winograd", 2), ("direct", 0)):
        latency = {"direct": 1e-3, "winograd": 1e-3, "other": 1e-4, fast: 1e-4}
        log = _fake_log(lowered.tasks, latency)
        chosen, mod = choose.winograd_shapes(lowered.source, lowered.relax_mod, spec, log, choose.best_records(log, spec))
        assert len(chosen) == expected
        names = {t.name for t in tasks.extract_tasks(mod, spec)}
        assert any(TASK_MARK in n for n in names) == (expected > 0)
    # a warm Winograd time never beats a cold direct one
    log = _fake_log(lowered.tasks, {"direct": 1e-3, "winograd": 1e-4, "other": 1e-4})
    warm = {t.workload_key for t in lowered.tasks if t.impl == "winograd"}
    for r in log.records:
        r.protocol = "warm" if r.key in warm else "cold"
    chosen, _ = choose.winograd_shapes(lowered.source, lowered.relax_mod, spec, log, choose.best_records(log, spec))
    assert chosen == []
    # a Winograd task without a record never wins, however fast its sibling
    log = _fake_log([t for t in lowered.tasks if not (t.impl == "winograd" and t.conv == lowered.tasks[0].conv)], latency)
    chosen, _ = choose.winograd_shapes(lowered.source, lowered.relax_mod, spec, log, choose.best_records(log, spec))
    assert lowered.tasks[0].conv not in chosen


def test_tune_both_then_serve_the_faster_one(tiny_log: Path, tmp_path: Path) -> None:
    """Resumes the session's NCHW log, whose direct tasks already hold 4 trials each: only the Winograd
    tasks are searched here, and the direct ones compete with the records the log has."""
    from tunebench.zoo import get_model

    log_path = tmp_path / "wino.jsonl"
    shutil.copy(tiny_log, log_path)
    state = api.tune(TINY, "avx2", log=log_path, trials_per_task=2, winograd=True, layout="nchw", measure=PATIENT)
    assert {s.task.impl for s in state.states} >= {"direct", "winograd"}
    assert state.new_trials == 2 * sum(s.task.impl == "winograd" for s in state.states), "the direct tasks' budget was spent"
    log = read_log(log_path)
    lowered = api.lower_model(TINY, "avx2", layout="nchw")
    compiled = build.compile_model(lowered.relax_mod, lowered.target, log, source=lowered.source, winograd=True)
    assert compiled.coverage.complete, str(compiled.coverage)
    best = choose.best_records(log, lowered.target)
    both = api.lower_model(TINY, "avx2", winograd=True, layout="nchw").tasks
    for conv in signatures(lowered.source):
        cost = {impl: sum(t.weight * best[t.workload_key].latency for t in both if t.conv == conv and t.impl == impl) for impl in ("direct", "winograd")}
        assert (conv in compiled.lowering.winograd) == (cost["winograd"] < cost["direct"])
    module, (x,) = get_model(TINY)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), module(x), rtol=1e-4, atol=1e-4)
