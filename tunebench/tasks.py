"""Tuning tasks: the distinct fused TIR functions of a lowered model, with weights and FLOP.

A task is what MetaSchedule searches one schedule for; its weight is how many times the model
calls it, so a task's share of the model's latency is weight x latency.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .target import TargetSpec


@dataclass
class Task:
    """One tuning task of a model."""

    name: str
    anchor: str
    flop: float
    weight: int
    workload_key: str
    mod: Any  # the TIR IRModule MetaSchedule tunes (tvm.IRModule)

    @property
    def total_flop(self) -> float:
        return self.flop * self.weight


def workload_key(mod: Any) -> str:
    """The structural hash MetaSchedule's databases match workloads by (its decimal string)."""
    import tvm_ffi

    return str(tvm_ffi.structural_hash(mod))


def anchor_op(mod: Any) -> str:
    """Name of the task's main computation (conv2d, matmul, ...): its anchor block, else its first."""
    from tvm.s_tir.analysis import find_anchor_sblock

    block = find_anchor_sblock(mod)
    if block is not None:
        return str(block.name_hint)
    return str(next(iter(mod.functions.keys())).name_hint)


def extract_tasks(relax_mod: Any, target: TargetSpec) -> list[Task]:
    """Extract tasks from a fused Relax module; heaviest (weight x FLOP) first."""
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.analysis import estimate_tir_flops

    extracted = ms.relax_integration.extract_tasks(relax_mod, target.tvm())
    tasks = [
        Task(
            name=t.task_name,
            anchor=anchor_op(t.dispatched[0]),
            flop=float(estimate_tir_flops(t.dispatched[0])),
            weight=int(t.weight),
            workload_key=workload_key(t.dispatched[0]),
            mod=t.dispatched[0],
        )
        for t in extracted
    ]
    return sorted(tasks, key=lambda t: (-t.total_flop, t.name))
