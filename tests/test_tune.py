"""Issue 3: resumable search, the history log's records, torn/garbage lines, signals."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import PATIENT, TINY

from tunebench import api
from tunebench.errors import TunebenchError
from tunebench.logs import records
from tunebench.search.settings import COLD_REPEAT

ROOT = Path(__file__).resolve().parents[1]
RECORD_FIELDS = {"type", "v", "key", "trace", "args_info", "run_secs", "error", "target", "host", "tvm", "time"}


def record_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if '"type": "record"' in line]


def test_log_holds_every_field(tiny_log: Path) -> None:
    lines = [json.loads(x) for x in tiny_log.read_text().splitlines()]
    workloads = [x for x in lines if x["type"] == "workload"]
    recs = [x for x in lines if x["type"] == "record"]
    assert len(recs) == 8
    assert {w["key"] for w in workloads} == {r["key"] for r in recs}, "each workload stored once, referenced by key"
    assert len(workloads) == len({w["key"] for w in workloads})
    for w in workloads:
        assert w["mod"] and w["flop"] > 0 and w["task"].startswith("fused_conv2d") and w["weight"] == 1
    for r in recs:
        assert set(r) >= RECORD_FIELDS
        assert r["v"] == records.FORMAT_VERSION
        assert r["target"]["mcpu"] == "core-avx2"
        assert {"cpu", "isa", "cores", "tvm"} <= set(r["host"])
        assert r["trace"] and r["args_info"]
        assert r["protocol"] == "cold", "new records are timed with flushed caches"
        if r["error"] is None:
            assert len(r["run_secs"]) == COLD_REPEAT and all(0 < s < 1 for s in r["run_secs"]), "repeated timings per candidate"
    assert sum(r["error"] is None for r in recs) >= 4, "most candidates of a conv build and run"


def test_records_round_trip_into_metaschedule(tiny_log: Path) -> None:
    log = records.read_log(tiny_log)
    best = log.best()
    assert len(best) == 2
    for key, rec in best.items():
        ms_rec = rec.ms_record(log.workloads[key].ms_workload())
        assert ms_rec.as_measure_candidate().sch.mod is not None


def test_resume_adds_only_the_new_budget(tiny_log: Path, tmp_path: Path) -> None:
    """Resumes with the random tuner (the XGBoost one resumes in the per-task cap test): one search covers both."""
    path = tmp_path / "resume.jsonl"
    shutil.copy(tiny_log, path)
    state = api.tune(TINY, "avx2", log=path, trials=10, tuner="random", layout="nchw", measure=PATIENT)
    assert state.new_trials == 2
    assert len(record_lines(path)) == 10
    again = api.tune(TINY, "avx2", log=path, trials=10, layout="nchw", measure=PATIENT)
    assert again.new_trials == 0 and "already spent" in again.stopped_by
    assert len(record_lines(path)) == 10


def test_per_task_cap_skips_finished_tasks(tiny_log: Path, tmp_path: Path) -> None:
    # the session log less one record: one task is a trial short of the cap, the other has reached it
    lines = tiny_log.read_text().splitlines(keepends=True)
    recs = [i for i, line in enumerate(lines) if '"type": "record"' in line]
    short = json.loads(lines[recs[0]])["key"]
    drop = max(i for i in recs if json.loads(lines[i])["key"] == short)
    path = tmp_path / "cap.jsonl"
    path.write_text("".join(line for i, line in enumerate(lines) if i != drop))
    per_task = records.read_log(path).trials()
    cap = max(per_task.values())
    assert sorted(per_task.values()) == [cap - 1, cap], per_task
    state = api.tune(TINY, "avx2", log=path, trials_per_task=cap, layout="nchw", measure=PATIENT)  # XGBoost, resumed
    after = records.read_log(path).trials()
    assert all(n == cap for n in after.values()), (per_task, after)
    assert state.new_trials == 1, "only the short task was searched"


def test_unknown_tuner_and_missing_budget_are_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_lowering(*args: object, **kwargs: object) -> None:
        raise AssertionError("a bad command lowered the model before refusing it")

    monkeypatch.setattr(api, "lower_model", no_lowering)
    with pytest.raises(TunebenchError, match="unknown tuner"):
        api.tune(TINY, "avx2", log=tmp_path / "x.jsonl", trials=4, tuner="annealing")
    with pytest.raises(TunebenchError, match="give a budget"):
        api.tune(TINY, "avx2", log=tmp_path / "x.jsonl")
    for bad in ({"timeout": 0.0}, {"timeout": -5.0}, {"timeout": float("nan")}, {"trials": -1}, {"more": -3, "timeout": 60.0}):
        with pytest.raises(TunebenchError, match=r"--timeout takes seconds|takes a number of trials"):
            api.tune(TINY, "avx2", log=tmp_path / "x.jsonl", **bad)
    assert not (tmp_path / "x.jsonl").exists()


def test_a_time_budget_alone_tunes_until_the_clock_runs_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--timeout`` alone is a budget ("tune for ten minutes"): MetaSchedule's real search proposes
    batch after batch, each appended to the log, until the deadline, and the run ends by it.
    Measuring and the clock are faked (each candidate "takes" 20 s of a 2500 s budget), so the run
    takes seconds and no speed is assumed. (With measuring free, the pace was the host's jitter: a
    batch was cut to one chunk now and then, on CI.)"""
    from tvm.s_tir.meta_schedule.runner import RunnerResult

    from tunebench.search import driver as search

    skew, batches = [0.0], []
    real_time = time.time
    monkeypatch.setattr(search, "time", type("Clock", (), {"time": staticmethod(lambda: real_time() + skew[0])}))

    def timed(builder: object, runner: object, target: object, cands: list, state: object) -> tuple[list, list]:
        skew[0] += 20.0 * len(cands)
        return [RunnerResult([1e-3], None) for _ in cands], [None] * len(cands)

    monkeypatch.setattr(search, "_measure_chunk", timed)

    def reporter(event: str, state: search.SearchState) -> None:
        if event == "batch":
            batches.append(state.new_trials)

    log = tmp_path / "timed.jsonl"
    state = api.tune(TINY, "avx2", log=log, timeout=2500, tuner="random", layout="nchw", reporter=reporter)
    assert state.stopped_by == "timeout" and len(batches) >= 3, (state.stopped_by, batches)
    assert state.new_trials == batches[-1] == len(record_lines(log)) > search.MAX_BATCH + search.MIN_BATCH
    # ends by the deadline (give or take the last batch's real bookkeeping), with no batch's worth left unused
    assert 2500 - 20 * search.MAX_BATCH < search.time.time() - state.started < 2500 + 5, skew[0]


def test_torn_last_line_and_garbage_line_are_reported_not_fatal(tiny_log: Path, tmp_path: Path) -> None:
    path = tmp_path / "damaged.jsonl"
    lines = tiny_log.read_text().splitlines(keepends=True)
    torn = lines[-1][: len(lines[-1]) // 2]
    path.write_text("".join([*lines[:3], "this is not json\n", *lines[3:-1], torn]))
    with pytest.warns(records.LogWarning) as caught:
        log = records.read_log(path)
    assert len(log.records) == 7, "the torn record is lost, every other one kept"
    assert len(log.problems) == 2
    assert any("torn last line" in p for p in log.problems)
    assert any(":4: not a tunebench record" in p for p in log.problems)
    assert len(caught) == 2
    # appending after a torn tail must not glue the new line onto the fragment
    records.LogWriter(path).append([log.records[0]], log.workloads)
    with pytest.warns(records.LogWarning):
        assert len(records.read_log(path).records) == 8


def _start_tune(log: Path) -> subprocess.Popen[str]:
    # the real CLI and search with a stand-in timing each batch (tests/fixtures: why), a budget that keeps it
    # batching for minutes: what is tested is the signal and the log, not the search or the timings
    driver = ROOT / "tests" / "fixtures" / "tune_timed_by_a_stand_in.py"
    cmd = [sys.executable, str(driver), "tune", TINY, "--trials", "20000", "--tuner", "random", "--log", str(log), "--quiet"]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_records(proc: subprocess.Popen[str], log: Path, timeout: float = 400) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if log.exists() and record_lines(log):
            return
        assert proc.poll() is None, proc.communicate()[0]
        time.sleep(0.5)
    proc.kill()
    pytest.fail("no batch was logged in time")


def test_signalled_runs_leave_a_loadable_log(tmp_path: Path) -> None:
    """Ctrl-C (SIGINT) stops after the batch in flight with a resume hint; SIGKILL stops at once. Either
    way the batches logged before it are kept and the log loads. Both runs go side by side: each spends
    most of its time starting up."""
    procs = {sig: (_start_tune(tmp_path / f"{sig.name}.jsonl"), tmp_path / f"{sig.name}.jsonl") for sig in (signal.SIGINT, signal.SIGKILL)}
    try:
        for proc, log in procs.values():
            _wait_for_records(proc, log)
        for sig, (proc, _) in procs.items():
            proc.send_signal(sig)
        outs = {sig: proc.communicate(timeout=120)[0] for sig, (proc, _) in procs.items()}
    finally:
        for proc, _ in procs.values():
            if proc.poll() is None:
                proc.kill()
    for sig, (_, log) in procs.items():
        kept = records.read_log(log, warn=False)
        assert kept.records, f"{sig.name}: the batches measured before the signal are kept"
        assert set(kept.workloads) >= {r.key for r in kept.records}
    interrupted, out = procs[signal.SIGINT][0], outs[signal.SIGINT]
    assert interrupted.returncode == 130, out
    assert "resume with: tunebench tune" in out
    assert "Traceback" not in out
    assert procs[signal.SIGKILL][0].returncode == -signal.SIGKILL


def test_a_task_with_nothing_timed_gets_a_small_first_batch() -> None:
    """The first batch of a task is picked by an untrained model: FIRST_BATCH of them, not 64, so a short run
    times every task sooner; a task with a time here, or schedules to carry over, is not capped."""
    import math

    from tunebench.lowering.tasks import Task
    from tunebench.search.driver import FIRST_BATCH, MAX_BATCH, TaskState, _batch_cap

    timed = records.Record("k", [], [], [1e-3], None, {"kind": "llvm", "mcpu": "core-avx2"}, {}, "x", protocol="cold")
    task = Task("conv", "conv2d", 1e6, 1, "k", None)
    assert FIRST_BATCH < MAX_BATCH
    assert _batch_cap(TaskState(task)) == FIRST_BATCH
    assert _batch_cap(TaskState(task, best_record=timed)) == math.inf
    assert _batch_cap(TaskState(task, carry=[timed])) == math.inf


def test_the_search_turns_to_a_task_slower_than_its_kin() -> None:
    """Two tasks of one op sequence with the same latency share and trials: the one running at 3/4 of
    its kin's throughput is searched first (``headroom``); a task of another op sequence is not
    measured against them, and no task's headroom exceeds MAX_HEADROOM."""
    from tunebench.lowering.tasks import Task
    from tunebench.search.driver import MAX_HEADROOM, TaskState, _priority, headroom, kin_gflops

    def state(name: str, flop: float, seconds: float) -> TaskState:
        timed = records.Record(name, [], [], [seconds], None, {"kind": "llvm"}, {}, "x", protocol="cold")
        return TaskState(Task(name, "conv2d", flop, 1, name, None), prior_trials=64, best_record=timed)

    fast = state("fused_conv2d_NCHWc1_add1_relu1", 2e9, 1e-2)  # 200 GFLOP/s
    slow = state("fused_conv2d_NCHWc2_add2_relu2", 1.5e9, 1e-2)  # 150 GFLOP/s, the same op sequence
    other = state("fused_conv2d_NCHWc3_add3", 1e8, 1e-2)  # 10 GFLOP/s, alone in its op sequence
    crawl = state("fused_conv2d_NCHWc4_add4_relu4", 1e7, 1e-2)  # 1 GFLOP/s
    kin = kin_gflops([fast, slow, other, crawl])
    assert [headroom(s, kin) for s in (fast, slow, other, crawl)] == pytest.approx([1.0, 4 / 3, 1.0, MAX_HEADROOM])
    assert _priority(slow, kin) > _priority(fast, kin) == _priority(other, kin)


def test_integer_inputs_of_a_candidate_are_in_bounds_indices() -> None:
    """Random int64 'indices' made BERT's embedding lookups read out of bounds and kill the runner: the
    runner's inputs keep MetaSchedule's random floats and zero-fill integer tensors."""
    import tvm

    from tunebench.search.measure import alloc_arguments

    [args] = alloc_arguments(tvm.cpu(), [["TENSOR", "int64", [4]], ["TENSOR", "float32", [8, 8]]], 1)
    assert not args[0].numpy().any() and args[1].numpy().std() > 0


def test_each_custom_target_gets_its_own_default_log() -> None:
    from tunebench.target import resolve_target

    def log_of(target: str, cores: int = 2) -> Path:
        return api.default_log_path("resnet18", resolve_target(target, cores, check=False))

    znver3 = log_of('{"kind": "llvm", "mcpu": "znver3"}')
    assert znver3.parent == api.LOG_DIR and znver3.name.startswith("resnet18-custom-") and znver3.name.endswith(".jsonl.gz")
    assert log_of('{"kind": "llvm", "mcpu": "skylake"}') != znver3
    assert log_of('{"kind": "llvm", "mcpu": "znver3", "mattr": ["+avx2"]}') != znver3
    assert log_of('{"mcpu": "znver3", "kind": "llvm"}', cores=8) == znver3, "the same target, written another way or with other cores: the same log"
    assert log_of("avx2") == api.LOG_DIR / "resnet18-avx2.jsonl.gz"


def test_searches_in_shared_pools_reuse_their_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inside ``shared_pools`` a search reuses the builder and runner a previous one started (a runner per
    TVM thread count: its workers keep theirs), and they are shut down at the end; outside, each is new."""
    import tvm.s_tir.meta_schedule.runner as runner_module

    from tunebench.search import measure
    from tunebench.search.settings import MeasureConfig

    class FakePool:
        down = 0

        def shutdown(self) -> None:
            FakePool.down += 1

    class FakeRunner:  # LocalRunner would start a worker process; what is tested is which object a search gets
        def __init__(self, **kwargs: object) -> None:
            self.pool = FakePool()

    monkeypatch.setattr(runner_module, "LocalRunner", FakeRunner)
    monkeypatch.setattr(measure, "_shared", None)  # outside the session's block (tests.conftest)
    cfg = MeasureConfig()
    assert measure.make_builder(cfg) is not measure.make_builder(cfg)
    with measure.shared_pools():
        monkeypatch.setenv("TVM_NUM_THREADS", "2")
        builder, runner = measure.make_builder(cfg), measure.make_runner(cfg)
        with measure.shared_pools():  # nested: still the same ones
            assert measure.make_builder(cfg) is builder and measure.make_runner(cfg) is runner
        assert measure.make_builder(MeasureConfig(build_timeout=1.0)) is not builder
        assert measure.make_runner(MeasureConfig(protocol="warm")) is not runner
        monkeypatch.setenv("TVM_NUM_THREADS", "4")
        assert measure.make_runner(cfg) is not runner and measure.make_builder(cfg) is builder
    assert FakePool.down == 3, "each runner's workers stop with the block"
    assert measure.make_runner(cfg) is not runner
