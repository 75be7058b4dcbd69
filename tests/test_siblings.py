"""Side-by-side verdicts: a conv's tasks compete for each other's schedules, and the winner outranks lucky lone timings."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import TINY
from tunebench import api
from tunebench.errors import TunebenchError
from tunebench.logs.records import HistoryLog, LogWriter, Record, WorkloadEntry, read_log
from tunebench.logs.share import best_k, summarize
from tunebench.logs.traces import design_length
from tunebench.search.sidebyside import MARGIN
from tunebench.target import host_fingerprint, measurement_class

SIBLINGS = "tests/fixtures/tiny.py:tiny_siblings"
NAIVE = [[], []]  # a trace with no instruction: the unscheduled TIR, one scalar thread


def _record(secs: float, at: float, compared: int = 0, llvm_cpu: str = "znver3") -> Record:
    host = {"cpu": "fake", "llvm_cpu": llvm_cpu, "isa": [], "cores": 2, "tvm": "x"}
    return Record("w", [], [], [secs], None, {"kind": "llvm", "mcpu": "core-avx2", "num-cores": 2}, host, "x", time=at, protocol="cold", compared=compared)


def test_a_verdict_outranks_the_faster_lone_timings_before_it_not_after() -> None:
    lucky, verdict = _record(1e-3, at=1.0), _record(2e-3, at=2.0, compared=3)
    here = measurement_class("znver3", 2)
    assert HistoryLog(records=[lucky, verdict]).best(here=here)["w"] is verdict
    assert best_k([lucky, verdict], 1) == [verdict]  # what serving's digest and ``logs prune`` keep
    later_faster, later_slower = _record(1.5e-3, at=3.0), _record(2.5e-3, at=4.0)
    assert HistoryLog(records=[lucky, verdict, later_faster]).best(here=here)["w"] is later_faster
    assert HistoryLog(records=[lucky, verdict, later_slower]).best(here=here)["w"] is verdict
    elsewhere = _record(3e-3, at=5.0, compared=2, llvm_cpu="rocketlake")  # another machine's verdict judges its own records only
    assert HistoryLog(records=[lucky, verdict, later_faster, elsewhere]).best(here=here)["w"] is later_faster


def test_a_verdict_survives_the_log_round_trip(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    LogWriter(log).append([_record(1e-3, at=1.0), _record(2e-3, at=2.0, compared=3)], {"w": WorkloadEntry("w", "fused_conv2d", 1e6, "", 1)})
    lone, verdict = read_log(log, warn=False).records
    assert (lone.compared, verdict.compared) == (0, 3)
    assert "compared" not in lone.to_json()  # records timed alone keep the shape every older log has
    assert summarize(log).rows[0].best.compared == 3  # ``logs show`` reads the verdict as the best


def _scheduled(task: object, target: object) -> object:
    """MetaSchedule's first sampled design of ``task`` with its postprocessors applied (parallel,
    vectorized, unrolled): what a search would time first, here without timing anything."""
    from tvm.s_tir import meta_schedule as ms

    from tunebench.search.measure import import_tensor_intrinsics

    import_tensor_intrinsics()
    ctx = ms.TuneContext(mod=task.mod, target=target.tvm(), space_generator="post-order-apply", task_name=task.name, rand_state=0, num_threads=1)
    sch = ctx.generate_design_space()[0]
    assert all(p.apply(sch) for p in ctx.space_generator.postprocs)
    return sch


@pytest.fixture(scope="module")
def sibling_log(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """A log for tiny_siblings written without a search: each task's best a scheduled design, except the
    ReLU conv's, a lucky naive schedule, logged faster than anything though it runs one scalar thread."""
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo
    from tvm.s_tir.meta_schedule.database import Workload

    from tunebench.logs.records import to_plain

    log = tmp_path_factory.mktemp("siblings") / "log.jsonl"
    lowered = api.lower_model(SIBLINGS, "avx2", layout="nchw")
    host, records, workloads = host_fingerprint(), [], {}
    for task in lowered.tasks:
        naive = task.name == "fused_conv2d1_add_relu"
        trace = NAIVE if naive else to_plain(_scheduled(task, lowered.target).trace.as_json(remove_postproc=False))
        args = [to_plain(a.as_json()) for a in ArgInfo.from_prim_func(task.mod["main"])]
        records.append(Record(task.workload_key, trace, args, [1e-7 if naive else 1e-4], None, dict(lowered.target.config), host, host["tvm"], protocol="cold"))
        workloads[task.workload_key] = WorkloadEntry(task.workload_key, task.name, task.flop, Workload(task.mod).as_json()[1], task.weight)
    LogWriter(log).append(records, workloads)
    return log, lowered


def test_siblings_serve_a_task_the_schedule_that_runs_faster_side_by_side(sibling_log: tuple[Path, object]) -> None:
    log, lowered = sibling_log
    before = read_log(log, warn=False)
    verdicts = {v.task: v for v in api.compare_siblings(SIBLINGS, "avx2", log=log, layout="nchw", rounds=3)}
    assert set(verdicts) == {"fused_conv2d1_add_relu", "fused_conv2d1_add_add1_relu"}  # the stem has no sibling
    for v in verdicts.values():  # the winner is the fastest median, a sibling's only by the margin
        fastest = min(range(len(v.candidates)), key=lambda i: v.candidates[i][1])
        assert v.winner == (fastest if v.candidates[fastest][1] < v.candidates[0][1] * (1 - MARGIN) else 0)
    after = read_log(log, warn=False)
    added = after.records[len(before.records) :]
    assert [r.compared for r in added] == [2, 2]
    for r in added:  # marked where the design ends, as the search's records are (a schedule replayed through its anchor lost the mark)
        assert r.trace == NAIVE or [inst[0] for inst in r.trace[0]].index("EnterPostproc") == design_length(r.trace[0])
    best = after.best(here=lowered.target.measurement_class())
    relu_key = next(t.workload_key for t in lowered.tasks if t.name == "fused_conv2d1_add_relu")
    assert before.best()[relu_key].trace == NAIVE and before.best()[relu_key].latency < 1e-6
    # the lucky 0.1 µs record is superseded by the verdict, which holds the winner's side-by-side samples
    assert best[relu_key] in added and best[relu_key].latency > 1e-5
    naive = verdicts["fused_conv2d1_add_relu"]
    assert (best[relu_key].trace == NAIVE) == (naive.winner == 0)


def test_a_model_without_sibling_tasks_is_one_clear_error(tiny_log: Path, tmp_path: Path) -> None:
    with pytest.raises(TunebenchError, match="no two tasks of this model compute one conv shape"):
        api.compare_siblings(TINY, "avx2", log=tiny_log, layout="nchw")


def test_records_timed_here_for_another_target_are_named_in_the_error(sibling_log: tuple[Path, object]) -> None:
    """The log's records are core-avx2's: asked for another target, the error says which one to pass
    (an avx512 log tuned as skylake-avx512 met ``--target avx512``, which means znver4 on an AMD host)."""
    log, _ = sibling_log
    with pytest.raises(TunebenchError, match="this machine's records there are for --target '\\{\"kind\":\"llvm\",\"mcpu\":\"core-avx2\"\\}'"):
        api.compare_siblings(SIBLINGS, '{"kind": "llvm", "mcpu": "haswell"}', log=log, layout="nchw")
