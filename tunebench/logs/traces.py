"""Replaying a tuned schedule on a workload: as recorded, through its anchor block, or with its tiles refitted.

Workloads are matched by structural hash, which ignores block names, so one key can stand for
the same conv fused into another model's epilogue (ResNet34's convs are ResNet18's, its global
mean reduction is named after another Relax variable). A trace names blocks, so replaying it as
is can fail there; ``schedule_using_anchor_trace`` replays the anchor block's part (the conv)
and inlines or parallelizes the rest. Search (carrying schedules over) and build (applying the
best records) both go through ``schedule_for``, so a record either applies or is dropped, never
a crash in the middle of a compile.

``refitted`` carries a schedule to the same computation at other extents (another batch size,
another conv shape of the same fused op sequence), as Transfer-Tuning does: the trace is replayed
with each tile-size decision refitted to the loop it now splits. A conv with its batch norm
computed in its epilogue counts as the same computation as the conv with the batch norm folded in
(``lowering.batchnorm``): a schedule reaches the other through the anchor.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
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


_LOOKUPS = frozenset({"GetSBlock", "GetLoops", "GetChildBlocks", "GetConsumers", "GetProducers"})
_REWRITES = frozenset({"Unannotate", "DecomposeReduction", "Fuse", "Parallel", "Vectorize", "Unroll"})


def design_length(insts: list[Any]) -> int:
    """How many of a trace's instructions (JSON) are its design: the sampled decisions and the
    transformations they steer, before MetaSchedule's post-processors rewrite the loops: the first
    run of lookups after the last sampling instruction that leads into a post-processor's rewrite
    (parallelize, vectorize, unroll, decompose a reduction). A search's record marks that place
    (``EnterPostproc``: the same cut on 108,682 of the shipped logs' 108,707 marked records), but a
    schedule replayed from a record loses the mark (siblings' verdicts), and the other 25, verdicts of
    12-01 replayed whole from unmarked leads, carry it at the end, after the replayed post-processing;
    so the mark bounds the cut, never sets it. A move replayed with the post-processing recorded for other tiles builds a schedule no
    search would (ResNet18's layer-4 conv with 28 accumulators ran 1.33x its lead's time built so,
    1.02x post-processed afresh, AMD EPYC Zen 4)."""
    kinds = [inst[0] for inst in insts]
    marked = kinds.index("EnterPostproc") if "EnterPostproc" in kinds else len(kinds)
    first = 1 + max((i for i, kind in enumerate(kinds) if kind.startswith("Sample")), default=0)
    rewrite = next((i for i in range(first, marked) if kinds[i] in _REWRITES and kinds[i - 1] in _LOOKUPS), None)
    if rewrite is None:
        return marked
    while kinds[rewrite - 1] in _LOOKUPS:  # back to the lookups that lead into it
        rewrite -= 1
    return rewrite


_MARK = ["EnterPostproc", [], [], []]


def marked(trace: Any) -> Any:
    """``trace`` (JSON) with MetaSchedule's ``EnterPostproc`` mark where its design ends
    (``design_length``), as a search's own candidates carry it; a trace marked there already, or
    one with no instruction, comes back as is.

    The evolutionary search replays the records it starts from without their post-processing (up
    to the mark) and mutates their decisions; a verdict record without the mark (``siblings``, an
    early ``refine``) or with it at the end was replayed whole, post-processing included, and TVM
    stopped the search: "Check failed: old_outputs.size() == new_outputs.size() (5 vs. 7)" (``tune
    resnet18`` after ``refine`` and ``siblings``, AMD EPYC Zen 4, 2026-12-01)."""
    insts, decisions = trace
    kinds = [inst[0] for inst in insts]
    if not insts or ("EnterPostproc" in kinds and kinds.index("EnterPostproc") == design_length(insts)):
        return trace  # marked already, or the unscheduled workload: nothing to mark
    kept = [i for i, kind in enumerate(kinds) if kind != "EnterPostproc"]
    plain = [insts[i] for i in kept]
    cut = design_length(plain)
    moved = {old: new + (1 if new >= cut else 0) for new, old in enumerate(kept)}  # decisions name sampling instructions, never the mark
    return [[*plain[:cut], list(_MARK), *plain[cut:]], [[moved[at], value] for at, value in decisions]]


def schedule_for(trace_json: Any, mod: Any, tuned_on: Any, target: Any) -> Any:
    """``mod`` scheduled by a trace recorded on ``tuned_on`` (the record's ``records.WorkloadEntry``,
    or None if unknown): replayed as is, else through the anchor block; None when neither applies.
    ``tuned_on`` is deserialized only for the fallback: most traces replay as they are."""
    sch = replay(trace_json, mod)
    if sch is not None or tuned_on is None:
        return sch
    tuned = replay(trace_json, tuned_on.ms_workload().mod)
    return None if tuned is None else _through_anchor(tuned.trace, mod, target)


def _through_anchor(trace: Any, mod: Any, target: Any) -> Any:
    """``mod`` scheduled by the anchor block's part of ``trace`` (the rest inlined or parallelized
    by MetaSchedule's ``schedule_using_anchor_trace``), or None when it does not apply."""
    from tvm.s_tir import Schedule
    from tvm.s_tir.meta_schedule.trace_apply import schedule_using_anchor_trace

    sch = Schedule(mod)
    try:
        schedule_using_anchor_trace(sch, trace, target)
    except RuntimeError:
        return None
    return sch


def op_signature(task_name: str) -> str:
    """A fused task's op sequence without Relax's numbering (``fused_conv2d_NCHWc3_add5_relu2`` ->
    ``fused_conv2d_NCHWc_add_relu``; a ``_1`` that ``tasks.merge_tasks`` appended goes too): tasks that
    compute the same ops at other extents share it. A batch norm decomposed after a conv
    (``_subtract_divide_multiply_add``) reads as the bias ``_add`` it folds into, and a valid-tap
    conv (``lowering.taps``) as the conv it guards: same blocks and loops, so its schedules apply."""
    ops = re.sub(r"(?<=[A-Za-z])\d+(?=_|$)", "", _unmerged(task_name))
    return ops.replace(_DECOMPOSED_BATCH_NORM, "_add").replace(_VALID_TAPS, "")


_DECOMPOSED_BATCH_NORM = "_subtract_divide_multiply_add"
_VALID_TAPS = "_taps"  # lowering.taps.TASK_MARK's suffix


def relatives(task_name: str, flop: float, workloads: Mapping[str, Any], exclude: str = "") -> list[str]:
    """Keys of ``workloads`` (``records.WorkloadEntry`` by key, ``exclude`` left out) computing the op
    sequence of task ``task_name`` at other extents (``op_signature``), most alike first: the same
    task name (the same layer of the model at another batch size), then the same main op
    (``main_op``: the same conv with its batch norm folded or not), then nearest in FLOP."""
    sig, name, main = op_signature(task_name), _unmerged(task_name), main_op(task_name)

    def unlike(key: str) -> tuple[bool, bool, float, str]:
        w = workloads[key]
        return (_unmerged(w.task) != name, main_op(w.task) != main, abs(math.log(max(flop, 1.0) / max(w.flop, 1.0))), key)

    return sorted((k for k, w in workloads.items() if k != exclude and op_signature(w.task) == sig), key=unlike)


def main_op(task_name: str) -> str:
    """The task's main op with Relax's number (``conv2d_NCHWc1`` of ``fused_conv2d_NCHWc1_add1_relu1``):
    one conv shape in a model, the same whether its batch norm is folded or in the epilogue. It finds
    a folded conv's own unfolded twin before a conv of another shape with the FLOP closer by chance
    (ResNet stages' 3x3 convs do equal work; the epilogue's element-wise ops tip the balance)."""
    found = re.match(r"fused_(.+?)_(?:add|subtract|relu|maximum|minimum|multiply|divide)", _unmerged(task_name))
    return found.group(1) if found else task_name


def _unmerged(task_name: str) -> str:
    """A task's name without the ``_1`` ``tasks.merge_tasks`` appends to a name two workloads share."""
    return re.sub(r"_\d+$", "", task_name)


def refitted(trace_json: Any, mod: Any, tuned_on: Any, target: Any) -> Any:
    """``mod`` scheduled by a trace tuned on ``tuned_on`` (a ``records.WorkloadEntry`` of the same
    op sequence, ``op_signature``), each ``SamplePerfectTile`` decision refitted (``_refit``); else,
    when the trace names blocks ``mod`` lacks (another epilogue), through its anchor block at the
    extents it was tuned for; None when neither applies."""
    from tvm.s_tir import Schedule

    tuned = replay(trace_json, tuned_on.ms_workload().mod)
    if tuned is None:
        return None
    sch = Schedule(mod)

    def decide(inst: Any, inputs: list[Any], attrs: list[Any], decision: Any) -> Any:
        if inst.kind.name != "SamplePerfectTile":
            return decision
        return _refit([int(d) for d in decision], int(sch.get(inputs[0]).extent))

    try:
        tuned.trace.apply_to_schedule(sch, remove_postproc=False, decision_provider=decide)
    except RuntimeError:
        return _through_anchor(tuned.trace, mod, target)
    return sch


def _refit(factors: list[int], extent: int) -> list[int]:
    """Tile factors for ``extent`` closest to ``factors`` (tuned for another extent): from the
    innermost out, each keeps the part of its factor that still divides what is left (inner tiles
    are what the vector units and caches were tuned for); the outermost takes the rest."""
    if math.prod(factors) == extent:
        return factors
    out, rest = [1] * len(factors), extent
    for i in range(len(factors) - 1, 0, -1):
        out[i] = math.gcd(factors[i], rest)
        rest //= out[i]
    out[0] = rest
    return out
