"""Building: apply the chosen records to a lowered model's TIR and compile it into a VM executable.

Records are applied with ``MetaScheduleApplyDatabase`` to the module ``frontend.lower`` produced,
then built with ``tvm.compile``; the module is never re-fused, so workload hashes still match
(``relax_integration.compile_relax`` fuses again, and then no record applies). A task without a
record of its own (a batch size never tuned) gets its stand-in's schedule refitted to its extents
(``choose.stand_ins``, ``traces.refitted``); coverage says how many, and that they are untimed.
"""

from __future__ import annotations

from typing import Any

from ..logs.records import HistoryLog, Record, unusable_reason
from ..logs.traces import refitted, schedule_for
from ..lowering.tasks import Task, extract_tasks
from ..target import TargetSpec
from .choose import Coverage, best_records, choose_lowering, stand_ins
from .runtime import CompiledModel

TRIES = 8  # records tried per task and stand-in, fastest first: one that does not apply here yields to the next


def _database(tasks: list[Task], log: HistoryLog, best: dict[str, Record], target: TargetSpec) -> tuple[Any, list[str], list[str]]:
    """A MetaSchedule database holding, per task, its fastest record's schedule that replays on the
    task's own TIR (``traces.schedule_for``), or for a task without records a stand-in's refitted to
    its extents (``choose.stand_ins``, ``traces.refitted``); and the keys of the tasks that got one,
    and of those that got a stand-in's. A task none applies to is left out: it counts as untuned."""
    from tvm.s_tir import meta_schedule as ms

    db = ms.database.MemoryDatabase()
    applied, transferred = [], []
    subs = stand_ins([t for t in tasks if t.workload_key not in best], log, best)
    ranked = _ranked(log, best, target)
    for t in tasks:
        key, record, sch = _schedule(t, log, ranked, subs.get(t.workload_key, []), target)
        if sch is None:
            continue
        workload = db.commit_workload(t.mod)
        args = ms.arg_info.ArgInfo.from_entry_func(sch.mod, remove_preproc=True)
        db.commit_tuning_record(ms.database.TuningRecord(sch.trace, workload, record.ms_run_secs, target.tvm(), args))
        applied.append(t.workload_key)
        if key != t.workload_key:
            transferred.append(t.workload_key)
    return db, applied, transferred


def _ranked(log: HistoryLog, best: dict[str, Record], target: TargetSpec) -> dict[str, list[Record]]:
    """Per key with a best record: that record, then the key's other usable records fastest first (``TRIES`` in all)."""
    out = {}
    for key, records in log.by_key().items():
        if key in best:
            others = sorted((r for r in records if r.ok and r is not best[key] and not unusable_reason(r, target)), key=lambda r: r.rank)
            out[key] = [best[key], *others][:TRIES]
    return out


def _schedule(task: Task, log: HistoryLog, ranked: dict[str, list[Record]], subs: list[str], target: TargetSpec) -> tuple[str, Record | None, Any]:
    """The key and record that schedule ``task``, and its schedule: its own fastest record that
    replays on it, else the first stand-in record whose refitted schedule applies (a schedule may
    tile extents a task does not have, or name a block a newer lowering renamed); ("", None, None)
    when none does."""
    own = log.workloads.get(task.workload_key)
    if task.workload_key in ranked and own is not None:
        for r in ranked[task.workload_key]:
            sch = schedule_for(r.trace, task.mod, own, target.tvm())
            if sch is not None:
                return task.workload_key, r, sch
        return "", None, None
    for key in subs:
        for r in ranked[key]:
            sch = refitted(r.trace, task.mod, log.workloads[key], target.tvm())
            if sch is not None:
                return key, r, sch
    return "", None, None


def apply_records(relax_mod: Any, target: TargetSpec, log: HistoryLog | None, best: dict[str, Record] | None = None) -> tuple[Any, Coverage]:
    """Rewrite each task's TIR with its best record's schedule; report coverage.

    ``best`` (from ``best_records``) saves re-ranking, and re-warning, when many modules share a log.
    """
    from tvm import relax

    tasks = extract_tasks(relax_mod, target)
    coverage = Coverage(tasks)
    if log is None or not log.records:
        return relax_mod, coverage
    best = best_records(log, target) if best is None else best
    db, coverage.applied, coverage.transferred = _database(tasks, log, best, target)
    if not coverage.applied:
        return relax_mod, coverage
    with target.tvm(), db:
        return relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(relax_mod), coverage


def build(relax_mod: Any, target: TargetSpec) -> Any:
    """Compile a (scheduled or not) Relax module into a VM executable, under the pass options its
    kernels were timed with in search (``taps.build_config``)."""
    import tvm

    from ..lowering.taps import build_config

    with build_config():
        return tvm.compile(relax_mod, target=target.tvm())


def compile_model(
    relax_mod: Any, target: TargetSpec, log: HistoryLog | None = None, source: Any = None, layout: str = "nchw", winograd: bool = False
) -> CompiledModel:
    """Apply the best usable records from ``log`` (if any) and build: the model, ready to call.

    With ``source`` (the module ``relax_mod`` was lowered from, in ``layout``), the model is first
    lowered the way the log says is fastest (``choose_lowering``): the other conv layout, and with
    ``winograd`` Winograd convs per shape. Winograd is opt-in: its records so far were timed warm,
    which flattered its 4x larger kernels (see README).
    """
    best = best_records(log, target) if log is not None and log.records else {}
    lowering = None
    if source is not None:
        lowering = choose_lowering(source, relax_mod, layout, target, log, best, winograd)
        relax_mod = lowering.mod
    scheduled, coverage = apply_records(relax_mod, target, log, best)
    return CompiledModel(build(scheduled, target), coverage, lowering)
