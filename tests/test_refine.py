"""Refinement: a task's best schedule raced against its neighbours, the winner logged as a verdict."""

from __future__ import annotations

import itertools
import math
import statistics
from pathlib import Path

import pytest

from tests.conftest import TINY
from tunebench import api
from tunebench.errors import TunebenchError
from tunebench.logs.records import LogWriter, Record, WorkloadEntry, read_log, to_plain
from tunebench.search import refine
from tunebench.search.sidebyside import MARGIN, time_together
from tunebench.target import host_fingerprint


def test_factorizations_are_every_split_within_the_innermost_bound() -> None:
    splits = refine._factorizations(12, 3, 4)
    every = [list(f) for f in itertools.product(range(1, 13), repeat=3) if math.prod(f) == 12 and f[-1] <= 4]
    assert sorted(splits) == sorted(every)


def _design(task: object, target: object) -> object:
    """MetaSchedule's first sampled design of ``task``, post-processed (as a search would time it)."""
    from tvm.s_tir import meta_schedule as ms

    from tunebench.search.measure import import_tensor_intrinsics

    import_tensor_intrinsics()
    ctx = ms.TuneContext(mod=task.mod, target=target.tvm(), space_generator="post-order-apply", task_name=task.name, rand_state=0, num_threads=1)
    sch = ctx.generate_design_space()[0]
    sch.enter_postproc()
    assert all(p.apply(sch) for p in ctx.space_generator.postprocs)
    return sch


def _slowest_near(space: refine._Space, trace: list, target: object, args: list) -> list:
    """The slowest of ``trace`` and its neighbours timed side by side, at least 1.5x slower than the
    fastest of them: a poor schedule a search could have logged by luck, one decision from a better
    one (a neighbour's neighbours include the way back)."""
    from tunebench.threads import set_tvm_threads

    set_tvm_threads(target.num_cores)
    near = [trace, *(t for _, t in space.neighbours(trace) if space.schedule(t) is not None)]
    # 3 rounds: with one, a blip on a loaded host once made a plain schedule the "slowest" (CI, 12-01) and refine found nothing faster
    times = [statistics.median(s) for s in time_together([space.schedule(t) for t in near], args, target, 3)]
    slowest = max(range(len(near)), key=times.__getitem__)
    assert times[slowest] > 1.5 * min(times), times
    return near[slowest]


def test_neighbours_move_one_decision_and_keep_each_tile_whole() -> None:
    lowered = api.lower_model(TINY, "avx2", layout="nchw")
    task = lowered.tasks[-1]
    trace = to_plain(_design(task, lowered.target).trace.as_json(remove_postproc=False))
    space = refine._Space(task, lowered.target)
    moves = list(space.neighbours(trace))
    assert moves and space.schedule(trace) is not None
    kinds = set()
    for what, moved in moves:
        changed = [(a, b) for a, b in zip(trace[1], moved[1], strict=True) if a != b]
        assert len(changed) == 1, what
        (at, old), (_, new) = changed[0]
        kinds.add(trace[0][at][0])
        if trace[0][at][0] == "SamplePerfectTile":
            assert math.prod(new) == math.prod(old) and sum(x != y for x, y in zip(old, new, strict=True)) <= 2
    assert {"SamplePerfectTile", "SampleCategorical", "SampleComputeLocation"} <= kinds


def test_a_replayed_trace_without_its_postproc_mark_moves_as_the_search_would_build() -> None:
    """A schedule replayed from a record loses the ``EnterPostproc`` mark (siblings' verdicts): its
    design part is still found, so each move is post-processed afresh, exactly as from the marked trace."""
    import tvm_ffi

    from tunebench.logs.traces import design_length

    lowered = api.lower_model(TINY, "avx2", layout="nchw")
    task = lowered.tasks[-1]
    marked = to_plain(_design(task, lowered.target).trace.as_json(remove_postproc=False))
    kinds = [inst[0] for inst in marked[0]]
    cut = kinds.index("EnterPostproc")
    assert cut < len(kinds) - 1  # post-processing follows the mark
    bare = [marked[0][:cut] + marked[0][cut + 1 :], marked[1]]  # decisions all point before the mark
    assert design_length(bare[0]) == cut
    assert design_length(bare[0] + [marked[0][cut]]) == cut, "a mark after replayed post-processing (12-01 verdicts)"
    space = refine._Space(task, lowered.target)
    moves = list(zip(space.neighbours(marked), space.neighbours(bare), strict=True))
    assert moves
    for (what, a), (_, b) in moves:
        built_a, built_b = space.schedule(a), space.schedule(b)
        assert (built_a is None) == (built_b is None), what
        if built_a is not None:
            assert tvm_ffi.structural_equal(built_a.mod, built_b.mod), what


def test_the_search_starts_from_a_verdict_without_its_postproc_mark() -> None:
    """A log record whose trace lost the ``EnterPostproc`` mark (siblings' verdicts) seeds the
    evolutionary search marked where its design ends (``traces.marked``, in ``Record.ms_record``):
    seeded with the bare trace, TVM stopped the search ("old_outputs.size() == new_outputs.size()",
    ``tune resnet18`` after ``refine`` and ``siblings``, 2026-12-01)."""
    from tvm.s_tir import meta_schedule as ms

    from tunebench.logs.traces import marked

    lowered = api.lower_model(TINY, "avx2", layout="nchw")
    target = lowered.target
    for task in lowered.tasks:
        good = to_plain(_design(task, target).trace.as_json(remove_postproc=False))
        cut = [inst[0] for inst in good[0]].index("EnterPostproc")
        bare = [good[0][:cut] + good[0][cut + 1 :], good[1]]
        assert marked(good) == good and marked(bare) == good and marked([[*bare[0], good[0][cut]], bare[1]]) == good
        for seed in range(3):
            database = ms.database.MemoryDatabase()
            workload = database.commit_workload(task.mod)
            verdict = Record("w", bare, None, [1e-3], None, dict(target.config), {}, "x", protocol="cold", compared=2)
            for _ in range(3):
                database.commit_tuning_record(verdict.ms_record(workload))
            strategy = ms.search_strategy.EvolutionarySearch(population_size=64)
            ctx = ms.TuneContext(
                mod=task.mod, target=target.tvm(), space_generator="post-order-apply", search_strategy=strategy, task_name=task.name, rand_state=seed
            )
            spaces = ctx.generate_design_space()
            ctx.pre_tuning(max_trials=64, num_trials_per_iter=16, design_spaces=spaces, database=database, cost_model=ms.cost_model.RandomModel())
            assert ctx.generate_measure_candidates(), (task.name, seed)


def test_a_lucky_lone_timing_after_a_verdict_faces_the_schedules_it_displaced() -> None:
    """The log's best may be a lone timing after the last verdict (a search run after refine): the
    first race then includes that verdict's schedule and the next fastest distinct ones."""

    def record(trace_id: int, secs: float, at: float, compared: int = 0) -> Record:
        trace = [[["SampleCategorical", [], [], [f"v{trace_id}"]]], []]
        return Record("w", trace, [], [secs], None, {}, {"llvm_cpu": "znver4"}, "x", time=at, protocol="cold", compared=compared)

    verdict = record(1, 2e-3, at=10.0, compared=4)
    lucky, second, again, older = record(2, 1e-3, at=20.0), record(3, 1.5e-3, at=21.0), record(2, 1.1e-3, at=22.0), record(4, 1.2e-3, at=5.0)
    rivals = refine.runners_up([older, verdict, lucky, second, again], "w")
    assert [r.trace for r in rivals] == [verdict.trace, second.trace, older.trace]  # never the best's own trace; what the verdict beat last
    assert [r.trace for r in refine.runners_up([older, verdict, lucky, second, again], "w", count=1)] == [verdict.trace]
    assert refine.runners_up([verdict], "w") == [] and refine.runners_up([verdict], "other") == []


def test_refine_logs_the_faster_neighbour_as_a_verdict(tmp_path: Path) -> None:
    """The log's best for the second conv is a poor schedule (the slowest near a sampled design) logged
    faster than anything: a neighbour of it runs faster side by side, and its verdict outranks the
    lucky record."""
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo
    from tvm.s_tir.meta_schedule.database import Workload

    lowered = api.lower_model(TINY, "avx2", layout="nchw")
    task = lowered.tasks[-1]
    host = host_fingerprint()
    args = [to_plain(a.as_json()) for a in ArgInfo.from_prim_func(task.mod["main"])]
    design = to_plain(_design(task, lowered.target).trace.as_json(remove_postproc=False))
    trace = _slowest_near(refine._Space(task, lowered.target), design, lowered.target, args)
    lucky = Record(task.workload_key, trace, args, [1e-9], None, dict(lowered.target.config), host, host["tvm"], protocol="cold")
    log = tmp_path / "log.jsonl"
    LogWriter(log).append([lucky], {task.workload_key: WorkloadEntry(task.workload_key, task.name, task.flop, Workload(task.mod).as_json()[1], task.weight)})

    (verdict,) = refine.refine_tasks([task], lowered.target, read_log(log), log, sweeps=1)
    assert verdict.candidates[0][0] == "log's best" and len(verdict.candidates) == 1 + refine.FINALISTS
    assert verdict.winner != 0, verdict.candidates
    assert verdict.candidates[verdict.winner][1] < verdict.candidates[0][1] * (1 - MARGIN)
    after = read_log(log)
    added = after.records[-1]
    assert added.compared == len(verdict.candidates) and added.key == task.workload_key
    best = after.best(here=lowered.target.measurement_class())[task.workload_key]
    assert best.compared and best.trace == added.trace  # the verdict, not the lucky 1 ns record
    assert added.trace != trace
    assert refine._Space(task, lowered.target).schedule(added.trace) is not None
    assert [i[0] for i in added.trace[0]].count("EnterPostproc") == 1  # as a search's record: refining it again moves its decisions only


def test_a_log_without_this_machines_records_is_one_clear_error(tmp_path: Path) -> None:
    lowered = api.lower_model(TINY, "avx2", layout="nchw")
    task = lowered.tasks[-1]
    elsewhere = {"cpu": "fake", "llvm_cpu": "rocketlake", "isa": [], "cores": 2, "tvm": "x"}
    log = tmp_path / "foreign.jsonl"
    record = Record(task.workload_key, [[], []], [], [1e-4], None, dict(lowered.target.config), elsewhere, "x", protocol="cold")
    LogWriter(log).append([record], {task.workload_key: WorkloadEntry(task.workload_key, task.name, task.flop, "", 1)})
    with pytest.raises(TunebenchError, match=r"no task of this model has records timed on this machine .*: tune the model here first"):
        refine.refine_tasks(lowered.tasks, lowered.target, read_log(log), log)
