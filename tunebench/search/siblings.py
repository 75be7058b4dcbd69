"""Sibling schedules: tasks that share a conv compete for each other's best schedules, timed side by side.

A model computes one conv shape in several tasks when the epilogues differ (ResNet18's 3x3 convs
with a ReLU after, or a residual add and a ReLU). The search tunes each alone, and a task's
log-best can be a lone timing's luck: ResNet18's first conv of layer3.1 ran 2.38 ms side by side
with its siblings' best schedules refitted to it (1.72-1.79 ms), logged 1.56; served with the
sibling's schedule, its kernel in the model went 2.48 -> 1.87 ms (AMD EPYC Zen 3, 2026-11-30). A
new lone timing of the sibling's schedule would not displace the lucky record, so each task's best
and its siblings' are timed together here: built in this process, then called in alternated
rounds (the order shuffled each round) the cold way the search times (``settings``: caches
flushed before each call). The fastest median (a sibling's only by ``MARGIN``) is written as a verdict
record (``records.Record.compared``), which outranks every record of its workload timed before it.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import TunebenchError
from ..logs import records as rec
from ..logs.traces import main_op, refitted, schedule_for
from ..lowering.tasks import Task
from ..target import TargetSpec, host_fingerprint
from ..target import identity as target_identity
from ..threads import set_tvm_threads
from .measure import import_tensor_intrinsics

ROUNDS = 10
CALLS = 5  # single cold calls per candidate and round
# A sibling's schedule replaces the task's own only this much faster: ResNet18's gains were 6-35%,
# and a tie (1.579 vs 1.578 ms) is a coin flip that would only churn the served schedule.
MARGIN = 0.03


@dataclass
class Verdict:
    """One task's comparison: each candidate's median, the log's best first."""

    task: str
    candidates: list[tuple[str, float]] = field(default_factory=list)  # (whose schedule, median seconds)
    winner: int = 0  # index into ``candidates``

    @property
    def gain(self) -> float:
        """The log's best's median over the winner's (1.0 when the log's best won)."""
        return self.candidates[0][1] / self.candidates[self.winner][1]


def sibling_groups(tasks: list[Task]) -> list[list[Task]]:
    """Tasks computing one conv shape (``traces.main_op``) in more than one workload, in model order."""
    groups: dict[str, dict[str, Task]] = {}
    for t in tasks:
        groups.setdefault(main_op(t.name), {}).setdefault(t.workload_key, t)
    return [list(g.values()) for g in groups.values() if len(g) > 1]


def compare_siblings(
    tasks: list[Task], target: TargetSpec, log: rec.HistoryLog, log_path: str | Path, rounds: int = ROUNDS, reporter: Callable[[Verdict], None] | None = None
) -> list[Verdict]:
    """Time each sibling task's best schedule in ``log`` (read from ``log_path``) against its
    siblings' (refitted) and append a verdict record per task to ``log_path``. Only this
    machine's records compete: run ``tune`` first."""
    here = target.measurement_class()
    mine = target.identity
    best = log.best(usable=lambda r: target_identity(r.target) == mine and r.measured_class == here)
    siblings = sibling_groups(tasks)
    if not siblings:
        raise TunebenchError("no two tasks of this model compute one conv shape: no siblings to compare")
    groups = [g for g in ([t for t in g if t.workload_key in best] for g in siblings) if len(g) > 1]
    if not groups:
        raise TunebenchError(f"no two sibling tasks have records timed on this machine ({here}) for this target in {log_path}: {_hint(log, here, mine)}")
    import_tensor_intrinsics()
    set_tvm_threads(target.num_cores)
    writer, host, verdicts = rec.LogWriter(log_path), host_fingerprint(), []
    for group in groups:
        for task in group:
            compared = _compare(task, group, best, log.workloads, target, host, rounds)
            if compared is None:
                continue
            verdict, record = compared
            writer.append([record], {task.workload_key: log.workloads[task.workload_key]})
            verdicts.append(verdict)
            if reporter is not None:
                reporter(verdict)
    return verdicts


def _hint(log: rec.HistoryLog, here: str, mine: str) -> str:
    """What to run instead: another target this machine's records in ``log`` were tuned for, else tune first.
    (ResNet18's avx512 log holds ``skylake-avx512`` records, while ``--target avx512`` means ``znver4`` on an AMD host.)"""
    theirs = {target_identity(r.target) for r in log.records if r.ok and r.measured_class == here} - {mine}
    if theirs:
        return "this machine's records there are for --target " + " or ".join(f"'{t}'" for t in sorted(theirs))
    return "tune the model here first"


def _compare(
    task: Task, group: list[Task], best: dict[str, rec.Record], workloads: dict[str, rec.WorkloadEntry], target: TargetSpec, host: dict[str, Any], rounds: int
) -> tuple[Verdict, rec.Record] | None:
    """Task's own best (scheduled as serving builds it) and each sibling's best refitted to it (those
    that apply, each schedule once), timed together; None when there is nothing to compare."""
    own = best[task.workload_key]
    own_sch = schedule_for(own.trace, task.mod, workloads.get(own.key), target.tvm())
    if own_sch is None:  # serving drops it too (``serve.build``): no schedule of this task to defend
        return None
    schedules = [("own", own_sch)]
    seen = {_text(schedules[0][1])}
    for sib in group:
        if sib is task:
            continue
        theirs = best[sib.workload_key]
        sch = refitted(theirs.trace, task.mod, workloads[theirs.key], target.tvm())
        if sch is not None and _text(sch) not in seen:
            seen.add(_text(sch))
            schedules.append((sib.name, sch))
    if len(schedules) == 1:
        return None
    samples = _time_together([sch for _, sch in schedules], own.args_info, target, rounds)
    medians = [statistics.median(s) for s in samples]
    fastest = min(range(len(medians)), key=medians.__getitem__)
    winner = fastest if medians[fastest] < medians[0] * (1 - MARGIN) else 0
    verdict = Verdict(task.name, [(who, m) for (who, _), m in zip(schedules, medians, strict=True)], winner)
    record = rec.Record(
        key=own.key,
        trace=rec.to_plain(schedules[winner][1].trace.as_json(remove_postproc=False)),
        args_info=own.args_info,
        run_secs=samples[winner],
        error=None,
        target=own.target,
        host=host,
        tvm=host["tvm"],
        time=time.time(),
        protocol="cold",
        compared=len(schedules),
    )
    return verdict, record


def _text(sch: Any) -> str:
    return str(sch.mod)


def _time_together(schedules: list[Any], args_info: list[Any], target: TargetSpec, rounds: int) -> list[list[float]]:
    """Seconds per single call of each schedule's kernel, ``CALLS`` a round for ``rounds`` shuffled
    rounds, caches flushed before each call but the first argument's (the input, as in a model)."""
    import numpy as np
    import tvm
    from tvm.s_tir.meta_schedule.builder.local_builder import default_build

    dev = tvm.cpu()
    shapes = [([int(d) for d in a[2]], a[1]) for a in args_info]  # MetaSchedule's TensorInfo JSON: ["TENSOR", dtype, shape]
    rng = np.random.default_rng(0)
    args = [tvm.runtime.tensor(rng.uniform(-1, 1, shape).astype(dtype), dev) for shape, dtype in shapes]
    timers = []
    for sch in schedules:
        lib = default_build(sch.mod, target.tvm(), None)
        lib = getattr(lib, "mod", lib)
        name = sch.mod.get_global_vars()[0].name_hint
        timers.append(lib.time_evaluator(name, dev, number=1, repeat=CALLS, f_preproc="cache_flush_cpu_non_first_arg"))
    samples: list[list[float]] = [[] for _ in schedules]
    order = list(range(len(schedules)))
    for _ in range(rounds):
        random.shuffle(order)
        for i in order:
            samples[i].extend(float(x) for x in timers[i](*args).results)
    return samples
