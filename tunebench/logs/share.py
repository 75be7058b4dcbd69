"""Sharing history logs: summarize them, merge logs from many machines, prune one in place.

A log is self-contained (workload lines + records, each record stamped with its target, host and
TVM version), so sharing is set arithmetic on records: merge is a de-duplicated union that can
keep only the best K per (workload, target); prune is the same on one file, swapped in atomically
under the writers' lock. Both write sorted output, so the same records give the same bytes.
"""

from __future__ import annotations

import json
import math
import os
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import TunebenchError
from ..files import locked
from ..target import canonical, preset_of, resolve_target
from ..target import identity as target_identity
from .records import HistoryLog, Record, WorkloadEntry, log_files, ranking, read_log, tvm_version, unusable_reason, write_log_atomic


def _not_usable_here(record: Record) -> str:
    """What ``logs show`` says in its usable column ('' for yes): ``records.unusable_reason`` (for any
    target of this host), or a schedule from another TVM, which serving tries but may not replay."""
    reason = unusable_reason(record)
    if not reason and record.tvm != tvm_version():
        reason = f"measured with TVM {record.tvm}"
    return reason


def measured_where(record: Record) -> str:
    """The machine that timed the record: its RPC server if it went through a tracker, else its host."""
    if record.measured_on:
        m = record.measured_on
        cpu = f" ({m['llvm_cpu']})" if m.get("llvm_cpu") else ""
        return f"rpc {m.get('server', '?')} key {m.get('key', '?')}{cpu}"
    return str(record.host.get("cpu", "?"))


@dataclass
class WorkloadRow:
    """One workload under one target: what ``logs show`` prints per line."""

    task: str
    key: str
    flop: float
    weight: int
    target: str  # preset name (avx2, avx512, or the mcpu)
    machine: str  # ``Record.measured_class`` of the records in this row: timings of one kind of machine
    trials: int
    errors: int
    best: Record | None
    unusable: str  # '' when this machine can use the best record

    @property
    def latency(self) -> float:
        return self.best.latency if self.best else math.inf

    @property
    def gflops(self) -> float:
        return self.flop / self.latency / 1e9 if math.isfinite(self.latency) else 0.0


@dataclass
class ModelTotal:
    """A model's estimated latency from a log: sum over its tasks of weight x best latency."""

    model: str
    target: str
    tasks: int
    covered: int
    latency: float  # inf unless every task has a successful record
    from_log: bool = False  # tasks are the log's own workloads, not a lowered model's

    @property
    def complete(self) -> bool:
        return self.covered == self.tasks


@dataclass
class LogSummary:
    path: Path
    rows: list[WorkloadRow]
    totals: list[ModelTotal]
    problems: list[str] = field(default_factory=list)
    log: HistoryLog = field(default_factory=HistoryLog, repr=False)  # what was read, for ``model_totals``


def summarize(path: str | os.PathLike[str]) -> LogSummary:
    """Per (workload, target, machine class): trials and best record; per target and machine class:
    the tuned model's estimated latency (a merged log shows each machine's own bests).

    The estimate uses the weights stored in the log's workload lines (the model it was tuned for).
    A lowered model's total, which also says which of its tasks the log does not cover, is
    ``model_totals``'s: the caller lowers the model (``api.log_summary``), this module only counts.
    """
    log = read_log(path, warn=False)
    groups: dict[tuple[str, str, str], list[Record]] = {}
    for r in log.records:
        groups.setdefault((r.key, target_identity(r.target), r.measured_class), []).append(r)
    rows = []
    better = ranking(log.records)
    for (key, _, machine), recs in groups.items():
        w = log.workloads.get(key) or WorkloadEntry(key, "?", 0.0, "", 1)
        ok = [r for r in recs if r.ok]
        best = min(ok, key=better) if ok else None
        reason = _not_usable_here(best) if best else ""
        rows.append(WorkloadRow(w.task, key, w.flop, w.weight, preset_of(recs[0].target), machine, len(recs), len(recs) - len(ok), best, reason))
    rows.sort(key=lambda row: (row.target, row.machine, -row.weight * row.latency if math.isfinite(row.latency) else 0.0, row.task, row.key))
    kinds = sorted({(row.target, row.machine) for row in rows})
    name = Path(path).name.removesuffix(".gz").removesuffix(".jsonl")
    totals = [_log_total(name, f"{t} timed on {m}", [row for row in rows if (row.target, row.machine) == (t, m)]) for t, m in kinds]
    return LogSummary(Path(path), rows, totals, log.problems, log)


def _log_total(name: str, target: str, rows: list[WorkloadRow]) -> ModelTotal:
    covered = [row for row in rows if row.best is not None]
    latency = sum(row.weight * row.latency for row in covered) if len(covered) == len(rows) else math.inf
    return ModelTotal(name, target, len(rows), len(covered), latency, from_log=True)


def log_targets(log: HistoryLog) -> list[str]:
    """The target identities (``target.identity``) ``log``'s records were tuned for, sorted."""
    return sorted({target_identity(r.target) for r in log.records})


def model_totals(model: str, log: HistoryLog, config: str, lowerings: list[tuple[str, list[Any]]]) -> list[ModelTotal]:
    """``model``'s estimated latency under target ``config`` (one of ``log_targets``), one total per
    lowering (name, its tasks): weight x the best record this machine would serve, per task."""
    from ..lowering.tasks import model_latency

    spec = resolve_target(json.dumps(json.loads(config)), check=False)
    mine = [r for r in log.records if target_identity(r.target) == config]
    best = HistoryLog(workloads=log.workloads, records=mine).best(here=spec.measurement_class())  # what this machine would serve
    out = []
    for name, tasks in lowerings:
        covered = [t for t in tasks if t.workload_key in best]
        latency = model_latency(tasks, lambda t, best=best: best[t.workload_key].latency if t.workload_key in best else math.inf)
        label = f"{model} ({name})" if len(lowerings) > 1 else model
        out.append(ModelTotal(label, preset_of(json.loads(config)), len(tasks), len(covered), latency))
    return out


@dataclass
class MergeResult:
    inputs: int
    read: int
    duplicates: int
    dropped: int  # beyond the best K, or failed when --top is given
    written: int
    problems: list[str]


def _deduplicated(records: list[Record]) -> list[Record]:
    """One record per identity; of two copies differing only in metadata, the smaller JSON wins (order-free)."""
    unique: dict[str, tuple[str, Record]] = {}
    for r in records:
        dump = json.dumps(r.to_json(), sort_keys=True)
        ident = r.identity()
        if ident not in unique or dump < unique[ident][0]:
            unique[ident] = (dump, r)
    return [r for _, r in unique.values()]


def best_k(records: list[Record], top: int) -> list[Record]:
    """The ``top`` best successful records per (workload, target, timing protocol, machine class)
    by ``records.ranking`` (a side-by-side verdict before the faster lone timings it superseded);
    ties broken by the record itself. Per protocol: warm records are faster, and must not push out
    the cold ones; per machine class: a fast machine's records must not push out a slower one's,
    which are that machine's bests."""
    if top < 1:
        raise TunebenchError(f"--top must be at least 1, got {top}")
    groups: dict[tuple[str, str, str, str], list[Record]] = {}
    for r in records:
        if r.ok:
            groups.setdefault((r.key, canonical(r.target), r.protocol, r.measured_class), []).append(r)
    better = ranking(records)
    return [r for recs in groups.values() for r in sorted(recs, key=lambda r: (better(r), r.identity()))[:top]]


def _merged(log: HistoryLog, top: int | None) -> tuple[HistoryLog, int]:
    unique = _deduplicated(log.records)
    kept = best_k(unique, top) if top is not None else unique
    return HistoryLog(workloads=log.workloads, records=kept), len(unique)


def merge_logs(paths: list[str | os.PathLike[str]], out: str | os.PathLike[str], top: int | None = None) -> MergeResult:
    """Union of ``paths`` into ``out`` (written atomically): duplicates removed, best ``top`` kept.

    An existing ``out`` may be a log a ``tune`` is appending to: as ``prune_log`` does, the merge
    holds the writers' lock on it from reading it to the rename, so a batch lands either in what
    is merged or, after the rename, in the new file. The other inputs are read before the lock is
    taken, so a merge never holds two logs' locks at once (two crossed merges would deadlock).
    """
    files = log_files(paths)
    if not files:
        raise TunebenchError("no log to merge (a directory holds its *.jsonl files)")
    target = Path(out)
    live = target.is_file()
    parts = {f: read_log(f, warn=False) for f in files if not (live and f.samefile(target))}
    with locked(target, os.O_RDWR) if live else nullcontext():
        for f in files:
            if f not in parts:  # ``out`` itself, under the lock we hold: a second flock would wait forever
                parts[f] = read_log(f, warn=False, lock=False)
        log = _union([parts[f] for f in files])
        merged, unique = _merged(log, top)
        write_log_atomic(target, merged)
    return MergeResult(len(files), len(log.records), len(log.records) - unique, unique - len(merged.records), len(merged.records), log.problems)


def _union(parts: list[HistoryLog]) -> HistoryLog:
    """All records and problems of ``parts``; of two workload lines for one key, an order-free pick."""
    log = HistoryLog()
    for part in parts:
        for key, w in part.workloads.items():  # the same TIR from two models: pick one, independent of order
            if key not in log.workloads or _order(w) < _order(log.workloads[key]):
                log.workloads[key] = w
        log.records.extend(part.records)
        log.problems.extend(part.problems)
    return log


def _order(w: WorkloadEntry) -> str:
    return json.dumps(w.to_json(), sort_keys=True)


def prune_log(path: str | os.PathLike[str], top: int) -> MergeResult:
    """Keep the best ``top`` records per (workload, target, protocol) of ``path``, replacing it atomically.

    Holds the writers' lock from read to rename, so a ``tune`` appending meanwhile waits and then
    appends to the new file; a crash before the rename leaves the old file as it was.
    """
    p = Path(path)
    if not p.is_file():
        raise TunebenchError(f"log {str(p)!r} does not exist")
    with locked(p, os.O_RDWR):
        log = read_log(p, warn=False, lock=False)
        pruned, unique = _merged(log, top)
        write_log_atomic(p, pruned)
    return MergeResult(1, len(log.records), len(log.records) - unique, unique - len(pruned.records), len(pruned.records), log.problems)


def print_summary(summary: LogSummary, console: Any) -> None:
    """``logs show``'s table: slowest share of the model first, records this machine cannot use marked.

    Every column when they fit the console on one line per row; else (an 80-column terminal, a pipe)
    the columns that matter most, one line per row, long task names shortened in the middle, and
    why records are not usable here said once below the table."""
    from rich.markup import escape

    wide = _summary_table(summary, None)
    fits = console.measure(wide, options=console.options.update_width(10**6)).maximum <= console.width
    console.print(wide if fits else _summary_table(summary, console.width))
    if not fits:
        reasons: dict[str, int] = {}
        for row in summary.rows:
            if row.best is not None and row.unusable:
                reasons[row.unusable] = reasons.get(row.unusable, 0) + 1
        for reason, n in reasons.items():
            console.print(f"not usable here ({n} workload(s)): {reason}", markup=False, highlight=False)
    for t in summary.totals:
        est = f"{t.latency * 1e3:.3f} ms" if t.complete and math.isfinite(t.latency) else "n/a"
        if t.from_log:
            console.print(f"{escape(t.model)} on {t.target}: weight x best summed over the {t.tasks} workload(s) in the log: {est}")
            console.print("  (a task never measured is not in the log: --model NAME totals a whole model)")
        else:
            console.print(f"model {escape(t.model)} on {t.target}: estimated latency {est}, {t.covered}/{t.tasks} of its tasks in the log")
    for note in summary.problems:
        console.print(f"note: {note}", markup=False, highlight=False)


_LEFT = ("task", "key", "target", "timed", "measured on", "usable here", "usable")


def _summary_table(summary: LogSummary, width: int | None) -> Any:
    """The rows as a rich table of plain-text cells. With ``width``, a borderless one of that width at
    most: no key, failures or protocol, the target only if there are several, "measured on" the
    machine class alone, "usable" yes or no, and task names shortened in the middle to fit."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    names = ["task", "key", "target", "x", "trials", "failed", "best µs", "timed", "GFLOP/s", "measured on", "usable here"]
    if width is not None:
        names = ["task", *(["target"] if len({row.target for row in summary.rows}) > 1 else []), "x", "trials", "best µs", "GFLOP/s", "measured on", "usable"]
    rows = [_summary_cells(row, narrow=width is not None) for row in summary.rows]
    if width is not None:  # what the other columns and the gaps between columns leave the task names
        others = sum(max(len(col), *(len(r[col]) for r in rows)) for col in names[1:]) if rows else 0
        room = max(12, width - others - 2 * (len(names) - 1))
        for r in rows:
            r["task"] = _shortened(r["task"], room)
    table = Table(title=Text(f"{summary.path}: {len(summary.rows)} workload(s)"), box=box.HEAVY_HEAD if width is None else None, pad_edge=width is None)
    for col in names:
        table.add_column(col, justify="left" if col in _LEFT else "right", no_wrap=True)
    for r in rows:
        table.add_row(*(Text(r[col]) for col in names))
    return table


def _summary_cells(row: WorkloadRow, narrow: bool) -> dict[str, str]:
    best = row.best
    usable = "-" if best is None else (f"no: {row.unusable}" if row.unusable else "yes")
    return {
        "task": row.task.removeprefix("fused_") if narrow else row.task,
        "key": row.key[:10],
        "target": row.target,
        "x": str(row.weight),
        "trials": str(row.trials),
        "failed": str(row.errors),
        "best µs": f"{row.latency * 1e6:.1f}" if best else "-",
        "timed": best.protocol if best else "-",
        "GFLOP/s": f"{row.gflops:.1f}" if best else "-",
        "measured on": row.machine if narrow or not best else f"{row.machine}: {measured_where(best)}",
        "usable here": usable,
        "usable": usable.split(":")[0],
    }


def _shortened(name: str, width: int) -> str:
    """``name`` cut to ``width`` characters in the middle: a fused task's name tells tasks apart at both
    ends (its conv's number, its last ops)."""
    if len(name) <= width:
        return name
    head = (width - 1) // 2
    return name[:head] + "…" + name[len(name) - (width - 1 - head) :]


def print_merge(result: MergeResult, out: str | os.PathLike[str], console: Any) -> None:
    console.print(
        f"{out}: {result.written} record(s) written from {result.read} read in {result.inputs} log(s) "
        f"({result.duplicates} duplicate(s), {result.dropped} beyond the best K or failed)",
        markup=False,
        highlight=False,
    )
    for note in result.problems:
        console.print(f"note: {note}", markup=False, highlight=False)
