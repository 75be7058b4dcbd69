"""Replaying a tuned schedule on a workload: as recorded, or through its anchor block.

Workloads are matched by structural hash, which ignores block names, so one key can stand for
the same conv fused into another model's epilogue (ResNet34's convs are ResNet18's, its global
mean reduction is named after another Relax variable). A trace names blocks, so replaying it as
is can fail there; ``schedule_using_anchor_trace`` replays the anchor block's part (the conv)
and inlines or parallelizes the rest. Search (carrying schedules over) and build (applying the
best records) both go through ``schedule_for``, so a record either applies or is dropped, never
a crash in the middle of a compile.
"""

from __future__ import annotations

from typing import Any


def replay(trace_json: Any, mod: Any) -> Any:
    """The schedule of ``mod`` after replaying a record's trace (JSON), or None when it does not apply."""
    from tvm.s_tir import Schedule, Trace

    sch = Schedule(mod)
    try:
        Trace.apply_json_to_schedule(trace_json, sch)
    except RuntimeError:  # ScheduleError, TVMError: the trace names blocks or loops ``mod`` lacks
        return None
    return sch


def schedule_for(trace_json: Any, mod: Any, tuned_on: Any, target: Any) -> Any:
    """``mod`` scheduled by a trace recorded on ``tuned_on`` (the record's ``records.WorkloadEntry``,
    or None if unknown): replayed as is, else through the anchor block; None when neither applies.
    ``tuned_on`` is deserialized only for the fallback: most traces replay as they are."""
    from tvm.s_tir import Schedule
    from tvm.s_tir.meta_schedule.trace_apply import schedule_using_anchor_trace

    sch = replay(trace_json, mod)
    if sch is not None or tuned_on is None:
        return sch
    tuned = replay(trace_json, tuned_on.ms_workload().mod)
    if tuned is None:
        return None
    sch = Schedule(mod)
    try:
        schedule_using_anchor_trace(sch, tuned.trace, target)
    except RuntimeError:
        return None
    return sch
