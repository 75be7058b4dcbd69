"""Refinement: a measured coordinate search around each task's best schedule, raced side by side.

The evolutionary search ranks candidates by lone timings, and on a 2-core host those drift 20-60%
between minutes, so after a few hundred trials a task's best is partly luck and its neighbours
(one sampling decision away: a tile size, an unroll depth, where the padding is computed) were
timed in other minutes or never, the cost model having judged them no better. Here each
neighbour of the lead (at first the log's best) is built and raced against it side by side
(``sidebyside``): screened in small batches, then the fastest few raced for longer beside the lead
and the log's best; the fastest of that race leads the next sweep. Each task's last race is logged
as a verdict record, whose winner had to beat the log's best by ``sidebyside.MARGIN``. ResNet18's
avx512 log (AMD EPYC Zen 4, 2026-11-30): 8 of 24 tasks moved (1.03-1.36x side by side; the stem
conv 1.11x, the first 3x3 conv of layer2 1.22x), and the served model ran 4-5% faster, the two logs
alternated in one process.

Tasks go in order of their share of the model's estimated latency, as the search's priority
does; a deadline stops between tasks, every verdict so far already appended to the log.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import TunebenchError
from ..logs import records as rec
from ..logs.traces import design_length
from ..lowering.tasks import Task
from ..target import TargetSpec, host_fingerprint
from ..target import identity as target_identity
from ..threads import set_tvm_threads
from .measure import import_tensor_intrinsics, shared_pools
from .sidebyside import Verdict, Verdicts, hint, median, race, time_together

SWEEPS = 3  # sweeps per task at most; ResNet18's leads moved at most twice
SCREEN = 11  # neighbours screened per batch beside the lead
SCREEN_ROUNDS = 2
FINALISTS = 5  # screened neighbours raced again beside the lead and the log's best
RUNNERS_UP = 3  # schedules the log's best may have displaced by a lucky lone timing, raced in the first sweep
ROUNDS = 6


def refine_tasks(
    tasks: list[Task],
    target: TargetSpec,
    log: rec.HistoryLog,
    log_path: str | Path,
    sweeps: int = SWEEPS,
    deadline: float | None = None,
    reporter: Callable[[Verdict], None] | None = None,
) -> list[Verdict]:
    """Refine each task's best record timed on this machine for ``target`` in ``log`` (read from
    ``log_path``), largest latency share first, appending a verdict record per task to ``log_path``;
    stop before the next task once ``time.time()`` passes ``deadline``."""
    here, mine = target.measurement_class(), target.identity
    usable = [r for r in log.records if r.ok and target_identity(r.target) == mine and r.measured_class == here]
    best = rec.HistoryLog(records=usable).best()
    mine_tasks = {t.workload_key: t for t in tasks if t.workload_key in best}  # one per workload
    if not mine_tasks:
        raise TunebenchError(f"no task of this model has records timed on this machine ({here}) for this target in {log_path}: {hint(log, here, mine)}")
    order = sorted(mine_tasks.values(), key=lambda t: -t.weight * best[t.workload_key].latency)
    import_tensor_intrinsics()
    set_tvm_threads(target.num_cores)
    host, verdicts = host_fingerprint(), Verdicts(log_path, log.workloads, reporter)
    with shared_pools():  # one builder pool for every race
        for task in order:
            if deadline is not None and time.time() > deadline:
                break
            verdicts.add(_refine(task, best[task.workload_key], target, host, sweeps, runners_up(usable, task.workload_key)))
    return verdicts.made


def runners_up(records: list[rec.Record], key: str, count: int = RUNNERS_UP) -> list[rec.Record]:
    """The schedules a lone timing may have displaced as ``key``'s best: its latest verdict, then the
    fastest other distinct traces by rank, ``count`` in all, the best's own trace left out.

    A search run after a refine makes the fastest of its lone timings the best (records timed after a
    verdict compete by latency), and the fastest of thousands is partly luck: ResNet18's log after
    2830 more trials (AMD EPYC Zen 4, 12-01) served 2% slower than before it, alternated in one process."""
    mine = [r for r in records if r.key == key]
    if not mine:
        return []
    ordered = sorted(mine, key=rec.ranking(mine))
    latest_verdict = sorted((r for r in mine if r.compared), key=lambda r: -r.time)[:1]
    return rec.distinct_schedules([*latest_verdict, *ordered], count, skip=[ordered[0].trace])


def _refine(
    task: Task, own: rec.Record, target: TargetSpec, host: dict[str, Any], sweeps: int, displaced: Sequence[rec.Record] = ()
) -> tuple[Verdict, rec.Record] | None:
    """Sweeps of screening and racing from ``own``; the last race's verdict and record. Each race
    has the log's best first (what the verdict's winner must beat by the margin), the current lead,
    and the lead's fastest screened neighbours, the first race also the schedules ``own`` may have
    displaced (``runners_up``); the race's fastest, by any margin, leads the next
    sweep (near-ties let the climb cross a plateau: ResNet18's last 3x3 conv moved 0.98x, then 0.90x),
    and the sweeps stop when the lead holds. None when ``own``'s trace does not replay on ``task``."""
    space = _Space(task, target)
    if space.schedule(own.trace) is None:
        return None
    start = ("log's best", own.trace)
    lead = start
    earlier = [(f"runner-up {i + 1}", r.trace) for i, r in enumerate(displaced) if space.schedule(r.trace) is not None]
    for sweep in range(sweeps):
        entrants = [start, *([lead] if lead is not start else []), *(earlier if sweep == 0 else []), *_screen(space, lead, own.args_info)]
        verdict, record = race(task.name, [(who, space.schedule(t)) for who, t in entrants], own, target, host, ROUNDS)
        fastest = entrants[min(range(len(entrants)), key=lambda i: verdict.candidates[i][1])]
        if fastest is lead:
            break
        lead = fastest
    return verdict, record


def _screen(space: _Space, lead: tuple[str, Any], args_info: list[Any]) -> list[tuple[str, Any]]:
    """The ``FINALISTS`` neighbours of ``lead`` (label, trace) fastest against it, each batch timed
    beside it, labelled by their moves from the log's best."""
    path, trace = lead
    scored: list[tuple[float, str, Any]] = []
    built = [(what, t, sch) for what, t in space.neighbours(trace) if (sch := space.schedule(t)) is not None]
    for start in range(0, len(built), SCREEN):
        batch = built[start : start + SCREEN]
        samples = time_together([space.schedule(trace)] + [sch for _, _, sch in batch], args_info, space.target, SCREEN_ROUNDS)
        base = median(samples[0])
        scored += [(median(s) / base, what, t) for s, (what, t, _) in zip(samples[1:], batch, strict=True) if s]
    scored.sort(key=lambda x: x[0])
    before = "" if path == "log's best" else f"{path}; "
    return [(before + what, t) for _, what, t in scored[:FINALISTS]]


class _Space:
    """A task's schedules as decision vectors of the design-space trace its records carry: replayed
    without their post-processing, then post-processed again, so any decision may change."""

    def __init__(self, task: Task, target: TargetSpec) -> None:
        from tvm.s_tir import meta_schedule as ms

        self.task, self.target = task, target
        ctx = ms.TuneContext(mod=task.mod, target=target.tvm(), space_generator="post-order-apply", task_name=task.name, num_threads=1)
        self.postprocs = list(ctx.space_generator.postprocs)

    def schedule(self, trace: Any) -> Any:
        """``task``'s schedule after the decisions of ``trace`` (JSON), or None where they do not apply."""
        from tvm.s_tir import Schedule, Trace

        insts, decisions = trace
        cut = design_length(insts)  # the post-processing is redone for the decisions taken here
        sch = Schedule(self.task.mod)
        try:
            Trace.apply_json_to_schedule([insts[:cut], decisions], sch)
        except RuntimeError:  # ScheduleError, TVMError: a decision the loops cannot take
            return None
        sch.enter_postproc()  # as a search's candidates carry it: a refined record's trace refines again
        return sch if all(p.apply(sch) for p in self.postprocs) else None

    def neighbours(self, trace: Any) -> Iterator[tuple[str, Any]]:
        """Traces one decision away from ``trace``, each with what it changed: a tile's factors (at
        most two of them moved), another categorical choice (unroll depth), another compute location."""
        insts, decisions = trace
        for j, (at, decision) in enumerate(decisions):
            kind = insts[at][0]
            if kind == "SamplePerfectTile":
                splits = _factorizations(math.prod(decision), len(decision), insts[at][2][1])
                options = [f for f in splits if sum(a != b for a, b in zip(f, decision, strict=True)) <= 2]
            elif kind == "SampleCategorical":
                options = list(range(len(insts[at][2][0])))
            elif kind == "SampleComputeLocation":
                options = list(range(-1, 12))  # root, then loops outer to inner; those past the last fail to apply
            else:
                continue
            for option in options:
                if option != decision:
                    moved = copy.deepcopy(trace)
                    moved[1][j][1] = option
                    yield f"{kind.removeprefix('Sample')} #{at} {decision}->{option}", moved


def _factorizations(n: int, parts: int, max_innermost: int) -> list[list[int]]:
    """Every ordered split of ``n`` into ``parts`` factors whose last is at most ``max_innermost``
    (``sample_perfect_tile``'s own bound, so a refined schedule stays in the search's space)."""
    if parts == 1:
        return [[n]] if n <= max_innermost else []
    return [[d, *rest] for d in range(1, n + 1) if n % d == 0 for rest in _factorizations(n // d, parts - 1, max_innermost)]
