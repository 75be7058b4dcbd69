"""Tuning tasks: the distinct fused TIR functions of a lowered model, with weights and FLOP.

A task is what MetaSchedule searches one schedule for; its weight is how many times the model
calls it, so a task's share of the model's latency is weight x latency.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from ..target import TargetSpec


@dataclass
class Task:
    """One tuning task of a model."""

    name: str
    anchor: str
    flop: float
    weight: int
    workload_key: str
    mod: Any  # the TIR IRModule MetaSchedule tunes (tvm.IRModule)
    conv: Any = None  # winograd.ConvSig of a Winograd-eligible conv this task computes, else None
    impl: str = ""  # how it computes ``conv``: "direct" or "winograd"

    @property
    def total_flop(self) -> float:
        return self.flop * self.weight


def conv_costs(tasks: Iterable[Task], latency: Callable[[Task], float]) -> tuple[float, dict[Any, dict[str, float]]]:
    """Weight x latency summed over the tasks of no competing conv, and per conv shape and
    implementation for the rest (``latency`` may be inf for a task never measured)."""
    plain = 0.0
    per_conv: dict[Any, dict[str, float]] = {}
    for t in tasks:
        if t.conv is None:
            plain += t.weight * latency(t)
        else:
            impls = per_conv.setdefault(t.conv, {})
            impls[t.impl] = impls.get(t.impl, 0.0) + t.weight * latency(t)
    return plain, per_conv


def model_latency(tasks: Iterable[Task], latency: Callable[[Task], float]) -> float:
    """Estimated latency of one inference: sum of weight x latency over the tasks it runs, where a
    conv shape with competing implementations runs the faster one."""
    plain, per_conv = conv_costs(tasks, latency)
    return plain + sum(min(impls.values()) for impls in per_conv.values())


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


def extract_tasks(relax_mod: Any, target: TargetSpec, convs: Iterable[Any] = ()) -> list[Task]:
    """Extract tasks from a fused Relax module; heaviest (weight x FLOP) first.

    ``convs`` (``winograd.ConvSig``) are the Winograd-eligible conv shapes: tasks computing one are
    marked with it and their implementation, so competing implementations can be compared.
    """
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.analysis import estimate_tir_flops

    from .winograd import task_signature

    convs = list(convs)
    tasks = []
    for t in ms.relax_integration.extract_tasks(relax_mod, target.tvm()):
        mod = t.dispatched[0]
        conv, impl = task_signature(mod, convs) or (None, "")
        tasks.append(Task(t.task_name, anchor_op(mod), float(estimate_tir_flops(mod)), int(t.weight), workload_key(mod), mod, conv, impl))
    return sorted(tasks, key=lambda t: (-t.total_flop, t.name))


def merge_tasks(groups: Iterable[Iterable[Task]]) -> list[Task]:
    """The union of several lowerings' tasks (a model's partitions, or its input shapes): one task
    per workload key, its weight the sum of the calls each lowering makes, so a search that ranks by
    weight x latency gives each its share. Heaviest first, like ``extract_tasks``.

    Distinct workloads that each lowering named alike (its first conv is ``fused_conv2d...`` in
    every partition) get a numeric suffix, so reports and logs tell them apart.
    """
    merged: dict[str, Task] = {}
    names: set[str] = set()
    for t in (t for group in groups for t in group):
        if t.workload_key in merged:
            merged[t.workload_key].weight += t.weight
            continue
        name = next(n for n in (t.name, *(f"{t.name}_{i}" for i in range(1, len(names) + 2))) if n not in names)
        merged[t.workload_key] = replace(t, name=name)
        names.add(name)
    return sorted(merged.values(), key=lambda t: (-t.total_flop, t.name))
