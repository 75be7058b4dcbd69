"""Sibling schedules: tasks that share a conv compete for each other's best schedules, timed side by side.

A model computes one conv shape in several tasks when the epilogues differ (ResNet18's 3x3 convs
with a ReLU after, or a residual add and a ReLU). The search tunes each alone, and a task's
log-best can be a lone timing's luck: ResNet18's first conv of layer3.1 ran 2.38 ms side by side
with its siblings' best schedules refitted to it (1.72-1.79 ms), logged 1.56; served with the
sibling's schedule, its kernel in the model went 2.48 -> 1.87 ms (AMD EPYC Zen 3, 2026-11-30). A
new lone timing of the sibling's schedule would not displace the lucky record, so each task's best
and its siblings' are raced side by side (``sidebyside``), and the winner's verdict record
outranks every record of its workload timed before it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import TunebenchError
from ..logs import records as rec
from ..logs.traces import main_op, refitted, schedule_for
from ..lowering.tasks import Task
from ..target import TargetSpec, host_fingerprint
from ..target import identity as target_identity
from ..threads import set_tvm_threads
from .measure import import_tensor_intrinsics, shared_pools
from .sidebyside import Verdict, Verdicts, hint, race

ROUNDS = 10


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
        raise TunebenchError(f"no two sibling tasks have records timed on this machine ({here}) for this target in {log_path}: {hint(log, here, mine)}")
    import_tensor_intrinsics()
    set_tvm_threads(target.num_cores)
    host, verdicts = host_fingerprint(), Verdicts(log_path, log.workloads, reporter)
    with shared_pools():  # one builder pool for every race
        for group in groups:
            for task in group:
                verdicts.add(_compare(task, group, best, log.workloads, target, host, rounds))
    return verdicts.made


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
    return race(task.name, schedules, own, target, host, rounds)


def _text(sch: Any) -> str:
    return str(sch.mod)
