"""Dispatch: choose the best usable record per workload and compile a lowered model with them.

This is the "apply" stage of the pipeline (the role ``autotvm.apply_history_best`` played).
Records are applied with ``MetaScheduleApplyDatabase`` to the module ``frontend.lower`` produced,
then built with ``tvm.compile``; the module is never re-fused, so workload hashes still match.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import Any

from .records import PROTOCOLS, HistoryLog, Record
from .target import MCPU_FLAGS, PRESETS, TargetSpec, canonical, cpu_flags, preset_of, resolve_target
from .tasks import Task, conv_costs, extract_tasks, model_latency


class ForeignRecordWarning(UserWarning):
    """Records skipped because this host or target cannot use them."""


def record_usable(record: Record, target: TargetSpec, host_flags: frozenset[str] | None = None) -> bool:
    """A record serves ``target`` if it was measured for the same CPU model (mcpu) and this host
    can execute that ISA; a schedule timed under other codegen is no evidence of speed here."""
    mcpu = str(record.target.get("mcpu", ""))
    if record.target.get("kind") != "llvm" or mcpu != target.mcpu:
        return False
    flags = cpu_flags() if host_flags is None else host_flags
    return not flags or all(f in flags for f in MCPU_FLAGS.get(mcpu, ()))


def target_for_log(log: HistoryLog | None, default: str = "avx2") -> str:
    """The target a log was tuned for, so ``--log resnet18-avx512.jsonl`` needs no ``--target``.

    Among the targets this host can run, the one with successful records for the most workloads
    (a merged log may hold several); ``default`` when the log has none. Presets come back by name,
    so the thread count follows this host rather than the tuning machine.
    """
    if log is None:
        return default
    workloads: dict[str, set[str]] = {}
    configs: dict[str, dict[str, Any]] = {}
    for r in log.records:
        if r.ok and r.target.get("kind") == "llvm":
            key = canonical({k: v for k, v in r.target.items() if k != "num-cores"})
            workloads.setdefault(key, set()).add(r.key)
            configs[key] = r.target
    runnable = [k for k in workloads if not TargetSpec("log", configs[k]).missing_flags()]
    if not runnable:
        return default
    best = configs[max(runnable, key=lambda k: (len(workloads[k]), preset_of(configs[k]) == default))]
    preset = preset_of(best)
    if preset in PRESETS and resolve_target(preset, check=False).mcpu == best.get("mcpu"):
        return preset
    return canonical({k: v for k, v in best.items() if k != "num-cores"})


def best_records(log: HistoryLog, target: TargetSpec, warn: bool = True) -> dict[str, Record]:
    """Fastest usable record per workload key; warn once about the records skipped as foreign."""
    best = log.best(lambda r: record_usable(r, target))
    foreign = {r.key for r in log.records if r.ok} - set(best)
    if foreign and warn:
        mcpus = sorted({str(r.target.get("mcpu")) for r in log.records if r.key in foreign})
        warnings.warn(
            f"{len(foreign)} workload(s) have records only for other targets ({', '.join(mcpus)}); they are skipped for {target.name} ({target.mcpu})",
            ForeignRecordWarning,
            stacklevel=2,
        )
    return best


@dataclass
class Coverage:
    """Which tasks of a module had a tuning record applied."""

    tasks: list[Task]
    applied: list[str] = field(default_factory=list)  # workload keys

    @property
    def missing(self) -> list[Task]:
        return [t for t in self.tasks if t.workload_key not in self.applied]

    @property
    def complete(self) -> bool:
        return bool(self.tasks) and not self.missing

    def __str__(self) -> str:
        return f"{len(self.applied)}/{len(self.tasks)} tasks tuned"


def _database(log: HistoryLog, best: dict[str, Record]) -> Any:
    from tvm.s_tir import meta_schedule as ms

    db = ms.database.MemoryDatabase()
    for key, record in best.items():
        if key in log.workloads:
            workload = db.commit_workload(log.workloads[key].ms_workload().mod)
            db.commit_tuning_record(record.ms_record(workload))
    return db


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
    coverage.applied = [t.workload_key for t in tasks if t.workload_key in best and t.workload_key in log.workloads]
    if not coverage.applied:
        return relax_mod, coverage
    with target.tvm(), _database(log, best):
        return relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(relax_mod), coverage


@dataclass
class Lowering:
    """One way to lower a model, and what the log says of it."""

    mod: Any
    layout: str  # layout.LAYOUTS
    winograd: list[Any] = field(default_factory=list)  # conv shapes lowered as Winograd
    estimate: tuple[int, float] = (len(PROTOCOLS), float("inf"))  # (worst timing protocol, seconds): lower is better

    def __str__(self) -> str:
        return f"{self.layout} layout" + (f", Winograd for {len(self.winograd)} conv shape(s)" if self.winograd else "")


def choose_lowering(
    source: Any, given: Any, given_layout: str, target: TargetSpec, log: HistoryLog | None, best: dict[str, Record], winograd: bool = False
) -> Lowering:
    """The lowering of ``source`` the log says runs fastest.

    Candidates: ``given`` (``source`` already lowered in ``given_layout``), the other layout when
    the log holds its workloads, and with ``winograd`` the NCHW lowering with each conv shape in
    the implementation the log measured faster (``winograd_shapes``). Each candidate's estimate is
    ``tasks.model_latency`` over the best records; a candidate with a task lacking a record never
    wins, and one resting on any warm record loses to one timed cold throughout (latencies of two
    protocols are not comparable). ``given`` is kept when no candidate is fully covered.
    """
    from .frontend import optimize
    from .layout import in_log

    if log is None or not log.records:
        return Lowering(given, given_layout)
    mods = {given_layout: given}
    if "blocked" not in mods and in_log(log):
        mods["blocked"] = optimize(source, target, layout="blocked")
    if "nchw" not in mods:
        mods["nchw"] = optimize(source, target)
    options = [Lowering(mod, name) for name, mod in mods.items()]
    if winograd:
        shapes, mod = winograd_shapes(source, mods["nchw"], target, log, best)
        if shapes:
            options.append(Lowering(mod, "nchw", shapes))
    for option in options:
        tasks = extract_tasks(option.mod, target)
        if all(t.workload_key in best for t in tasks):
            worst = max(PROTOCOLS.index(best[t.workload_key].protocol) for t in tasks)
            option.estimate = (worst, model_latency(tasks, lambda t: best[t.workload_key].latency))
    chosen = min(options, key=lambda o: o.estimate)
    return chosen if chosen.estimate[0] < len(PROTOCOLS) else options[0]


def winograd_shapes(source: Any, direct: Any, target: TargetSpec, log: HistoryLog, best: dict[str, Record]) -> tuple[list[Any], Any]:
    """Per Winograd-eligible conv shape, the implementation the log measured faster.

    ``direct`` is ``source`` lowered with direct NCHW convs. A shape goes Winograd only when every
    one of its Winograd tasks has a record and their weighted latency sum beats the direct tasks' (a
    direct task without a record counts as infinitely slow), all timed under one protocol (a warm
    time never beats a cold one). Returns the shapes lowered as Winograd and the module.
    """
    from .frontend import optimize
    from .winograd import in_log, signatures

    if not in_log(log):
        return [], direct
    convs = signatures(source)
    if not convs:
        return [], direct
    every = optimize(source, target, convs)
    inf = float("inf")
    tasks = {t.workload_key: t for mod in (direct, every) for t in extract_tasks(mod, target, convs)}.values()
    _, costs = conv_costs(tasks, lambda t: best[t.workload_key].latency if t.workload_key in best else inf)
    protocols: dict[Any, set[str]] = {}
    for t in tasks:
        if t.conv is not None and t.workload_key in best:
            protocols.setdefault(t.conv, set()).add(best[t.workload_key].protocol)
    chosen = [c for c in convs if len(protocols.get(c, ())) == 1 and costs.get(c, {}).get("winograd", inf) < costs.get(c, {}).get("direct", inf)]
    if not chosen:
        return [], direct
    return chosen, (every if len(chosen) == len(convs) else optimize(source, target, chosen))


def build(relax_mod: Any, target: TargetSpec) -> Any:
    """Compile a (scheduled or not) Relax module into a VM executable."""
    import tvm

    return tvm.compile(relax_mod, target=target.tvm())


def set_tvm_threads(n: int) -> int:
    """Size TVM's thread pool to ``n`` threads sharing this process's CPUs; return the size it took.

    TVM's default is half the hardware threads (1 on a 2-vCPU VM), and ``config_threadpool`` in its
    default mode (1, "big cores") stays at that count here; mode -3 (threads share the listed cores,
    with max concurrency ``n``) does resize it. The environment variable covers worker processes.
    """
    import tvm

    os.environ["TVM_NUM_THREADS"] = str(n)
    cpus = [str(c) for c in sorted(os.sched_getaffinity(0))]
    tvm.get_global_func("runtime.config_threadpool")(-3, n, cpus, n)
    return int(tvm.get_global_func("runtime.NumThreads")())


class CompiledModel:
    """A Relax VM over a compiled executable, called with torch tensors, returning torch tensors.

    Inputs and outputs cross by DLPack, so no copy is made at the PyTorch/TVM border.
    """

    def __init__(self, executable: Any, coverage: Coverage, lowering: Lowering | None = None) -> None:
        import tvm
        from tvm import relax

        self.executable = executable
        self.coverage = coverage
        self.lowering = lowering  # how the model was lowered (layout, Winograd shapes); None: as given
        self.vm = relax.VirtualMachine(executable, tvm.cpu())
        self._main = self.vm["main"]

    def __call__(self, *inputs: Any) -> Any:
        import torch
        import tvm

        args = [tvm.runtime.from_dlpack(x.detach().contiguous()) for x in inputs]
        out = self._main(*args)
        return _to_torch(out, torch)


def _to_torch(out: Any, torch: Any) -> Any:
    if hasattr(out, "__dlpack__"):
        return torch.from_dlpack(out)
    items = [_to_torch(o, torch) for o in out]
    return items[0] if len(items) == 1 else tuple(items)


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
