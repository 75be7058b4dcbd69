"""Choosing what to serve: the best usable record per workload for this host, and the lowering the log says is fastest.

The "apply" stage's decisions (the role ``autotvm.apply_history_best`` played), kept apart from
building (``build``) and from calling the result (``runtime``): a record serves a target only if
this CPU can run its code, this machine's own timings outrank other machines'
(``HistoryLog.best``), and a lowering wins only when the log covers every one of its tasks.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

from ..logs.records import PROTOCOLS, HistoryLog, Record, unusable_reason
from ..lowering.tasks import Task, conv_costs, extract_tasks, model_latency
from ..target import PRESETS, TargetSpec, class_distance, identity, preset_of, resolve_target, runnable


class ForeignRecordWarning(UserWarning):
    """Records skipped because this host or target cannot use them."""


class ForeignTimingsWarning(UserWarning):
    """The records served were all timed on other kinds of machine: none is this machine's own best."""


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
            key = identity(r.target)
            workloads.setdefault(key, set()).add(r.key)
            configs[key] = r.target
    usable = [k for k in workloads if runnable(configs[k])]
    if not usable:
        return default
    best = configs[max(usable, key=lambda k: (len(workloads[k]), preset_of(configs[k]) == default))]
    preset = preset_of(best)
    if preset in PRESETS and resolve_target(preset, check=False).mcpu == best.get("mcpu"):
        return preset
    return identity(best)


def best_records(log: HistoryLog, target: TargetSpec, warn: bool = True) -> dict[str, Record]:
    """Fastest usable record per workload key, this machine's own timings first, then the nearest
    machine's (``HistoryLog.best``); warn once about the records skipped as foreign, and when none
    of the records served was timed on this kind of machine (what to run then)."""
    here = target.measurement_class()
    best = log.best(lambda r: not unusable_reason(r, target), here=here)
    if warn and best and all(r.measured_class != here for r in best.values()):
        classes = sorted({r.measured_class for r in best.values()}, key=lambda c: class_distance(c, here))
        warnings.warn(
            f"none of the log's records for {target.mcpu} was timed on this kind of machine ({here}); served by the nearest "
            f"machines' timings ({', '.join(classes)}). Tune here for this machine's own: tunebench tune MODEL --target {target.name} --log LOG",
            ForeignTimingsWarning,
            stacklevel=2,
        )
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
    """Which tasks of a module had a tuning record applied; ``transferred`` (a subset of ``applied``)
    got a relative's schedule refitted to their extents (``stand_ins``), untimed here."""

    tasks: list[Task]
    applied: list[str] = field(default_factory=list)  # workload keys
    transferred: list[str] = field(default_factory=list)

    @property
    def missing(self) -> list[Task]:
        return [t for t in self.tasks if t.workload_key not in self.applied]

    @property
    def complete(self) -> bool:
        return bool(self.tasks) and not self.missing

    def __str__(self) -> str:
        moved = f" ({len(self.transferred)} transferred from other workloads, untimed)" if self.transferred else ""
        return f"{len(self.applied)}/{len(self.tasks)} tasks tuned{moved}"


@dataclass
class LoweringChoice:
    """One way to lower a model, and what the log says of it."""

    mod: Any
    layout: str  # layout.LAYOUTS
    winograd: list[Any] = field(default_factory=list)  # conv shapes lowered as Winograd
    folded: bool = False  # batch norms folded into the convs (``batchnorm``)
    estimate: tuple[float, ...] = (1, float("inf"))  # ``_estimate``'s key, lower is better; (1, ...): a task has no record
    raced: str = ""  # how it beat the others when built and timed against them (``race``)

    def __str__(self) -> str:
        winograd = f", Winograd for {len(self.winograd)} conv shape(s)" if self.winograd else ""
        raced = f" ({self.raced})" if self.raced else ""
        return f"{self.layout} layout{winograd}" + (", batch norms folded" if self.folded else "") + raced


def choose_lowering(
    source: Any, given: Any, given_layout: str, target: TargetSpec, log: HistoryLog | None, best: dict[str, Record], winograd: bool = False
) -> LoweringChoice:
    """The lowering of ``source`` the log says runs fastest: the first of ``lowering_options``
    (``given`` when none is covered: uncovered options sort alike, and ``given`` comes first)."""
    return lowering_options(source, given, given_layout, target, log, best, winograd)[0]


def lowering_options(
    source: Any, given: Any, given_layout: str, target: TargetSpec, log: HistoryLog | None, best: dict[str, Record], winograd: bool = False
) -> list[LoweringChoice]:
    """The ways to lower ``source`` the log can serve, fastest by the log's estimate first.

    Candidates: ``given`` (``source`` already lowered in ``given_layout``, batch norms unfolded),
    the other layouts when the log holds their workloads (blocked convs, valid-tap convs: ``taps``), each layout with its batch norms folded when
    the log holds folded convs in it (``batchnorm.in_log``) and ``source`` has a batch norm to fold, and
    with ``winograd`` the NCHW lowering with each conv shape in the implementation the log measured
    faster (``winograd_shapes``). Each candidate's estimate is ``tasks.model_latency`` over the best
    records; a candidate with a task lacking a record sorts last, one resting on any record timed
    on another kind of machine after one timed here throughout, and one resting on any warm
    record after one timed cold throughout (latencies of two machines, or two protocols, are not
    comparable). Without records: ``given`` alone.
    """
    from ..lowering import batchnorm, layout, taps
    from ..lowering.frontend import optimize

    if log is None or not log.records:
        return [LoweringChoice(given, given_layout)]
    held = ["blocked"] * layout.in_log(log) + ["taps"] * taps.in_log(log)
    layouts = list(dict.fromkeys([given_layout, "nchw", *held]))
    options = [LoweringChoice(given, given_layout)]
    options += [LoweringChoice(optimize(source, target, layout=lay), lay) for lay in layouts if lay != given_layout]
    folded_layouts = batchnorm.in_log(log)  # the layouts the log holds folded convs in
    folded = batchnorm.folded_or_none(source) if folded_layouts else None
    if folded is not None:
        options += [LoweringChoice(optimize(folded, target, layout=lay), lay, folded=True) for lay in sorted(folded_layouts)]
    if winograd:
        nchw = next(o.mod for o in options if (o.layout, o.folded) == ("nchw", False))
        shapes, mod = winograd_shapes(source, nchw, target, log, best)
        if shapes:
            options.append(LoweringChoice(mod, "nchw", shapes))
    for option in options:
        option.estimate = _estimate(extract_tasks(option.mod, target), log, best, target.measurement_class())
    return sorted(options, key=lambda o: o.estimate)


def _estimate(tasks: list[Task], log: HistoryLog, best: dict[str, Record], here: str) -> tuple[int, int, int, int, float]:
    """A lowering's sort key: (1 if a task has neither a record nor a stand-in, 1 if any record was
    timed on another kind of machine than ``here``, worst timing protocol, 1 if any task is served
    by a stand-in, estimated seconds). A stand-in's time is its relative's, scaled by FLOP: a
    guess, so any lowering timed throughout beats it."""
    subs = stand_ins([t for t in tasks if t.workload_key not in best], log, best)
    timed = {t.workload_key: best[t.workload_key] for t in tasks if t.workload_key in best} | {k: best[v[0]] for k, v in subs.items()}
    if len(timed) < len({t.workload_key for t in tasks}):
        return (1, 1, len(PROTOCOLS), 1, float("inf"))
    flop = {k: w.flop for k, w in log.workloads.items()}

    def seconds(t: Task) -> float:
        r = timed[t.workload_key]
        return r.latency * (t.flop / flop[r.key] if r.key != t.workload_key and flop.get(r.key) else 1.0)

    elsewhere = any(r.measured_class != here for r in timed.values())
    return (0, int(elsewhere), max(PROTOCOLS.index(r.protocol) for r in timed.values()), int(bool(subs)), model_latency(tasks, seconds))


def stand_ins(tasks: list[Task], log: HistoryLog, best: dict[str, Record]) -> dict[str, list[str]]:
    """For tasks without a record: the keys of the workloads with a best record that compute the
    same op sequence at other extents (``traces.op_signature``: another batch size or conv shape),
    most alike first (``traces.relatives``); ``traces.refitted`` carries their schedules over, and a
    caller tries them in order until one applies."""
    from ..logs.traces import relatives

    known = {k: log.workloads[k] for k in best if k in log.workloads}
    out = {}
    for t in tasks:
        keys = relatives(t.name, t.flop, known, exclude=t.workload_key)
        if keys:
            out[t.workload_key] = keys
    return out



def winograd_shapes(source: Any, direct: Any, target: TargetSpec, log: HistoryLog, best: dict[str, Record]) -> tuple[list[Any], Any]:
    """Per Winograd-eligible conv shape, the implementation the log measured faster.

    ``direct`` is ``source`` lowered with direct NCHW convs. A shape goes Winograd only when every
    one of its Winograd tasks has a record and their weighted latency sum beats the direct tasks' (a
    direct task without a record counts as infinitely slow), all timed under one protocol (a warm
    time never beats a cold one). Returns the shapes lowered as Winograd and the module.
    """
    from ..lowering.frontend import optimize
    from ..lowering.winograd import in_log, signatures

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
