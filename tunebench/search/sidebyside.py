"""Side-by-side races: rival schedules of one workload timed together, the winner logged as a verdict.

Lone timings of one schedule drift 20-60% between processes and hours on a 2-core host, so a
log's best is often a lucky sample and a better schedule timed in a slow minute never displaces
it. Rivals built in one process and called in alternated rounds (the order shuffled each round),
the cold way the search times them (``settings``: caches flushed before each call but the input's),
see the same host. The fastest median (a rival's only by ``MARGIN``) is written as a verdict record
(``records.Record.compared``), which outranks every record of its workload timed before it.
``siblings`` races a conv's tasks' schedules, ``refine`` a task's best against its neighbours.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..logs import records as rec
from ..logs.traces import marked
from ..target import TargetSpec
from ..target import identity as target_identity

CALLS = 5  # single cold calls per candidate and round
# A rival replaces the incumbent only this much faster: ResNet18's sibling gains were 6-35%, and a
# tie (1.579 vs 1.578 ms) is a coin flip that would only churn the served schedule.
MARGIN = 0.03


@dataclass
class Verdict:
    """One task's race: each candidate's median, the incumbent (the log's best) first."""

    task: str
    candidates: list[tuple[str, float]] = field(default_factory=list)  # (whose schedule, median seconds)
    winner: int = 0  # index into ``candidates``

    @property
    def gain(self) -> float:
        """The incumbent's median over the winner's (1.0 when the incumbent won)."""
        return self.candidates[0][1] / self.candidates[self.winner][1]


class Verdicts:
    """Where races' results go as they are made: each record appended to the log (a Ctrl-C loses
    the race in flight only), each verdict kept and shown to ``reporter``."""

    def __init__(self, log_path: str | Path, workloads: dict[str, rec.WorkloadEntry], reporter: Callable[[Verdict], None] | None) -> None:
        self.writer, self.workloads, self.reporter = rec.LogWriter(log_path), workloads, reporter
        self.made: list[Verdict] = []

    def add(self, result: tuple[Verdict, rec.Record] | None) -> None:
        """Keep one race's (verdict, record); None (nothing raced) is skipped."""
        if result is None:
            return
        verdict, record = result
        self.writer.append([record], {record.key: self.workloads[record.key]})
        self.made.append(verdict)
        if self.reporter is not None:
            self.reporter(verdict)


def build(schedules: list[Any], target: TargetSpec) -> list[Any | None]:
    """Each schedule's kernel built by the search's builder (its worker pool and ``BUILD_TIMEOUT_S``:
    a neighbour unrolled 512 deep kept LLVM busy for over ten minutes in this process), loaded
    here; None for one that failed or timed out."""
    import tvm
    from tvm.s_tir.meta_schedule.builder import BuilderInput

    from .measure import make_builder
    from .settings import MeasureConfig

    results = make_builder(MeasureConfig()).build([BuilderInput(sch.mod, target.tvm()) for sch in schedules])
    libs = [None if r.error_msg else tvm.runtime.load_module(r.artifact_path) for r in results]
    for r in results:
        if r.artifact_path:
            shutil.rmtree(os.path.dirname(r.artifact_path), ignore_errors=True)  # the builder's temporary folder
    return libs


def time_together(schedules: list[Any], args_info: list[Any], target: TargetSpec, rounds: int) -> list[list[float]]:
    """Seconds per single call of each schedule's kernel, ``CALLS`` a round for ``rounds`` shuffled
    rounds, caches flushed before each call but the first argument's (the input, as in a model);
    no samples for a schedule that did not build (``build``). Call under
    ``threads.set_tvm_threads(target.num_cores)``: TVM's default is one thread here."""
    import numpy as np
    import tvm

    dev = tvm.cpu()
    shapes = [([int(d) for d in a[2]], a[1]) for a in args_info]  # MetaSchedule's TensorInfo JSON: ["TENSOR", dtype, shape]
    rng = np.random.default_rng(0)
    args = [tvm.runtime.tensor(rng.uniform(-1, 1, shape).astype(dtype), dev) for shape, dtype in shapes]
    timers = {}
    for i, (sch, lib) in enumerate(zip(schedules, build(schedules, target), strict=True)):
        if lib is not None:
            name = sch.mod.get_global_vars()[0].name_hint
            timers[i] = lib.time_evaluator(name, dev, number=1, repeat=CALLS, f_preproc="cache_flush_cpu_non_first_arg")
    samples: list[list[float]] = [[] for _ in schedules]
    order = list(timers)
    for _ in range(rounds):
        random.shuffle(order)
        for i in order:
            samples[i].extend(float(x) for x in timers[i](*args).results)
    return samples


def median(samples: list[float]) -> float:
    """The median of ``samples``; infinite for none (a schedule that did not build never wins)."""
    return statistics.median(samples) if samples else math.inf


def race(task: str, rivals: list[tuple[str, Any]], incumbent: rec.Record, target: TargetSpec, host: dict[str, Any], rounds: int) -> tuple[Verdict, rec.Record]:
    """Time ``rivals`` (label, schedule; the incumbent's first) together; the verdict and its record
    for ``incumbent``'s workload: the fastest median's schedule and samples if it beat the
    incumbent's by ``MARGIN``, else the incumbent's."""
    samples = time_together([sch for _, sch in rivals], incumbent.args_info, target, rounds)
    medians = [median(s) for s in samples]
    fastest = min(range(len(medians)), key=medians.__getitem__)
    winner = fastest if medians[fastest] < medians[0] * (1 - MARGIN) else 0
    verdict = Verdict(task, [(who, m) for (who, _), m in zip(rivals, medians, strict=True)], winner)
    record = rec.Record(
        key=incumbent.key,
        trace=marked(rec.to_plain(rivals[winner][1].trace.as_json(remove_postproc=False))),  # a schedule replayed from a record lost the mark
        args_info=incumbent.args_info,
        run_secs=samples[winner],
        error=None,
        target=incumbent.target,
        host=host,
        tvm=host["tvm"],
        time=time.time(),
        protocol="cold",
        compared=len(rivals),
    )
    return verdict, record


def hint(log: rec.HistoryLog, here: str, mine: str) -> str:
    """Why ``log`` has no records to race, and what to run instead: another target this machine's records in ``log`` were tuned for, else tune first.
    (ResNet18's avx512 log holds ``skylake-avx512`` records, while ``--target avx512`` means ``znver4`` on an AMD host.)"""
    theirs = {target_identity(r.target) for r in log.records if r.ok and r.measured_class == here} - {mine}
    if theirs:
        return "this machine's records there are for --target " + " or ".join(f"'{t}'" for t in sorted(theirs))
    return "tune the model here first"
