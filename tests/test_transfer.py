"""Logs that travel: host-aware bests, transfer of schedules between machines, core counts and logs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import PATIENT, TINY, rewritten
from tunebench import api
from tunebench.errors import TunebenchError
from tunebench.logs.records import HistoryLog, Record, read_log
from tunebench.search.driver import load_priors, tune_tasks
from tunebench.serve.choose import best_records
from tunebench.target import TargetSpec, measurement_class, resolve_target
from tunebench.zoo import get_model


def _record(key: str, secs: float, llvm_cpu: str, cores: int = 2) -> Record:
    target = {"kind": "llvm", "mcpu": "core-avx2", "num-cores": cores}
    host = {"cpu": "fake", "llvm_cpu": llvm_cpu, "isa": [], "cores": cores, "tvm": "x"}
    return Record(key, [], [], [secs], None, target, host, "x", protocol="cold")


def test_each_machine_gets_its_own_best_from_a_merged_log() -> None:
    fast_elsewhere, slow_here = _record("w", 1e-3, "rocketlake"), _record("w", 3e-3, "znver3")
    log = HistoryLog(records=[fast_elsewhere, slow_here, _record("v", 2e-3, "rocketlake")])
    assert log.best(here=measurement_class("znver3", 2))["w"] is slow_here
    assert log.best(here=measurement_class("rocketlake", 2))["w"] is fast_elsewhere
    # a workload with no timing on this machine still serves the other machine's best
    assert log.best(here=measurement_class("znver3", 2))["v"].host["llvm_cpu"] == "rocketlake"
    assert log.best()["w"] is fast_elsewhere  # no machine given: plain ranking


def test_serving_prefers_this_machines_records(monkeypatch: pytest.MonkeyPatch) -> None:
    log = HistoryLog(records=[_record("w", 1e-3, "rocketlake"), _record("w", 3e-3, "znver3")])
    spec = TargetSpec("avx2", {"kind": "llvm", "mcpu": "core-avx2", "num-cores": 2})
    monkeypatch.setattr(TargetSpec, "measurement_class", lambda self: measurement_class("znver3", self.num_cores))
    assert best_records(log, spec)["w"].host["llvm_cpu"] == "znver3"
    monkeypatch.setattr(TargetSpec, "measurement_class", lambda self: measurement_class("rocketlake", self.num_cores))
    assert best_records(log, spec)["w"].host["llvm_cpu"] == "rocketlake"


def test_threads_are_part_of_the_measurement_class() -> None:
    assert _record("w", 1e-3, "znver3", cores=2).measured_class != _record("w", 1e-3, "znver3", cores=4).measured_class


def test_a_log_written_with_2_cores_resumes_on_4(tiny_log: Path, tmp_path: Path) -> None:
    """Trials count across core counts (the budget is spent), and the 2-thread timings become priors on 4."""
    lowered = api.lower_model(TINY, resolve_target("avx2", num_cores=4, check=False), layout="nchw")
    four = lowered.target
    priors = load_priors(tiny_log, four, four.measurement_class())
    assert sum(priors.counts.values()) == len(read_log(tiny_log).records)
    assert not priors.local and priors.sources
    state = tune_tasks(lowered.tasks, four, tiny_log, trials=sum(priors.counts.values()))
    assert state.stopped_by == "budget already spent by the log"
    assert all(s.prior_trials > 0 and s.best_record is None and s.carry for s in state.states)


def test_transfer_times_the_other_machines_best_schedules_first(tiny_log: Path, tmp_path: Path) -> None:
    """--from a log timed elsewhere: this run's first trials are that log's best schedules, timed here."""
    foreign = rewritten(tiny_log, tmp_path / "foreign.jsonl", host={"llvm_cpu": "otherlake", "cpu": "Other CPU"})
    lowered = api.lower_model(TINY, "avx2", layout="nchw")
    new = tmp_path / "new.jsonl"
    here = lowered.target.measurement_class()
    state = tune_tasks(lowered.tasks, lowered.target, new, more=3, transfer_from=[foreign], measure=PATIENT)
    assert state.new_trials == 3
    src = read_log(foreign)
    first = state.states[0]
    distinct: dict[str, Record] = {}
    for r in sorted((r for r in src.records if r.ok and r.key == first.task.workload_key), key=lambda r: r.rank):
        distinct.setdefault(json.dumps(r.trace, sort_keys=True), r)
    got = read_log(new).records
    assert [r.trace for r in got] == [r.trace for r in list(distinct.values())[:3]]
    assert {r.measured_class for r in got} == {here}
    # the estimate is this machine's: the foreign records were never a task's best
    assert all(s.best_record is None or s.best_record.measured_class == here for s in state.states)


def test_resuming_a_foreign_log_transfers_automatically(tiny_log: Path, tmp_path: Path) -> None:
    log = rewritten(tiny_log, tmp_path / "shipped.jsonl", host={"llvm_cpu": "otherlake"})
    lowered = api.lower_model(TINY, "avx2", layout="nchw")
    priors = load_priors(log, lowered.target, lowered.target.measurement_class())
    assert not priors.local
    state = tune_tasks(lowered.tasks, lowered.target, log, trials=sum(priors.counts.values()))  # nothing to spend: inspect only
    assert all(s.carry and s.best_record is None for s in state.states)


def test_from_a_log_this_cpu_cannot_run_is_one_clear_error(tiny_log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tunebench.target as target_mod

    monkeypatch.setattr(target_mod, "cpu_flags", lambda: frozenset({"avx", "avx2", "fma", "f16c", "bmi1", "bmi2", "sse4_2"}))
    other = rewritten(tiny_log, tmp_path / "avx512.jsonl", target={"mcpu": "skylake-avx512"})
    lowered = api.lower_model(TINY, "avx2", layout="nchw")
    with pytest.raises(TunebenchError, match=r"--from .*can run on this CPU \(mcpu: skylake-avx512\)"):
        tune_tasks(lowered.tasks, lowered.target, tmp_path / "new.jsonl", more=1, transfer_from=[other])


def test_from_a_corrupt_log_is_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text("this is not a log\n")
    lowered = api.lower_model(TINY, "avx2", layout="nchw")
    with pytest.raises(TunebenchError, match="not a tunebench history log"):
        tune_tasks(lowered.tasks, lowered.target, tmp_path / "new.jsonl", more=1, transfer_from=[bad])


def test_mistyped_record_fields_are_skipped_with_their_line(tiny_log: Path, tmp_path: Path) -> None:
    log = tmp_path / "typed.jsonl"
    shutil.copy(tiny_log, log)
    lines = log.read_text().splitlines()
    i = next(n for n, line in enumerate(lines) if '"type": "record"' in line)
    obj = json.loads(lines[i])
    obj["run_secs"] = [None]
    lines[i] = json.dumps(obj)
    log.write_text("\n".join(lines) + "\n")
    parsed = read_log(log, warn=False)
    assert any(f":{i + 1}: malformed 'record' line skipped" in p for p in parsed.problems)
    assert len(parsed.records) == len(read_log(tiny_log, warn=False).records) - 1


def test_logs_show_gives_each_machine_class_its_own_rows(tiny_log: Path, tmp_path: Path) -> None:
    from tunebench.logs.share import merge_logs, summarize

    other = rewritten(tiny_log, tmp_path / "other.jsonl", host={"llvm_cpu": "otherlake"})
    merged = tmp_path / "merged.jsonl"
    merge_logs([tiny_log, other], merged)
    summary = summarize(merged)
    machines = {row.machine for row in summary.rows}
    assert len(machines) == 2 and any(m.startswith("otherlake") for m in machines)
    assert len(summary.rows) == 2 * len(read_log(tiny_log).workloads)
    assert len([t for t in summary.totals if t.complete]) == 2  # one estimate per machine, each from its own records
    kept = read_log(merged).records
    from tunebench.logs.share import best_k

    assert {r.measured_class for r in best_k(kept, 1)} == machines  # --top keeps each machine's best


def test_a_batch_size_never_tuned_gets_the_tuned_ones_schedules(tiny_log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tuned at batch 1, called at batch 2: every task serves batch 1's schedule refitted to its loops (said
    so in the coverage), output as eager's; and a search at batch 2 times those schedules first."""
    import torch

    import tunebench
    from tunebench.logs.traces import refitted
    from tunebench.search.driver import _carry_over
    from tunebench.serve import cache

    monkeypatch.setenv("TUNEBENCH_CACHE_DIR", str(tmp_path / "cache"))
    model, _ = get_model(TINY)
    x2 = torch.randn(2, 3, 16, 16)
    cache.CACHE.memory.clear()
    with tunebench.apply_history_best(tiny_log):
        compiled = tunebench.compile(model, x2)  # default policy: in TVM only if every task got a schedule
        with torch.no_grad():
            torch.testing.assert_close(compiled(x2), model(x2), rtol=1e-3, atol=1e-3)
    [sub] = compiled.last.subgraphs
    assert sub.runner == "tvm" and len(sub.transferred) == sub.tasks == len(sub.applied) == 2
    assert "2 transferred from other workloads, untimed" in compiled.last.coverage()

    lowered = api.lower_model(TINY, "avx2", layout="nchw", batch=[2])
    priors = load_priors(tiny_log, lowered.target, lowered.target.measurement_class())
    for task in lowered.tasks:
        carried = _carry_over(task, priors, "cold")
        assert carried and all(r.key != task.workload_key for r in carried)
        assert refitted(carried[0].trace, task.mod, priors.workloads[carried[0].key], lowered.target.tvm()) is not None


def test_from_a_log_times_its_schedules_for_tasks_this_log_already_holds(tiny_log: Path, tmp_path: Path) -> None:
    """--from another search's log on this machine: its best traces the log lacks are timed first,
    though every task already has records here (they were silently skipped before)."""
    lowered = api.lower_model(TINY, "avx2", layout="nchw")
    lines = tiny_log.read_text().splitlines()
    first: dict[str, str] = {}
    for line in lines:  # this log keeps one record per task: the other traces are only in --from
        obj = json.loads(line)
        if obj["type"] == "record":
            first.setdefault(obj["key"], line)
    mine = tmp_path / "mine.jsonl"
    mine.write_text("\n".join([ln for ln in lines if json.loads(ln)["type"] != "record"] + list(first.values())) + "\n")
    held = read_log(mine).records
    assert {r.key for r in held} == {t.workload_key for t in lowered.tasks}
    state = tune_tasks(lowered.tasks, lowered.target, mine, more=2, transfer_from=[tiny_log], measure=PATIENT)
    assert state.new_trials == 2
    timed = {json.dumps(r.trace, sort_keys=True) for r in held}
    carried = read_log(mine).records[len(held) :]
    for key in {r.key for r in carried}:  # per task, the --from log's best untimed traces, in its order
        untimed: dict[str, Record] = {}
        for r in sorted((r for r in read_log(tiny_log).records if r.ok and r.key == key), key=lambda r: r.rank):
            if json.dumps(r.trace, sort_keys=True) not in timed:
                untimed.setdefault(json.dumps(r.trace, sort_keys=True), r)
        got = [json.dumps(r.trace, sort_keys=True) for r in carried if r.key == key]
        assert got == list(untimed)[: len(got)]
