"""History logs: tunebench's own append-only JSON-lines format for tuning records.

MetaSchedule's JSONDatabase points records at workloads by line number in a second file, so two
machines' databases cannot simply be concatenated. A tunebench log is one file that means the
same thing anywhere:

* ``{"type": "workload", "v": 1, "key": ..., "task": ..., "flop": ..., "mod": <base64>}``: a TIR
  workload, written once per log, found by ``key`` (MetaSchedule's structural hash).
* ``{"type": "record", "v": 1, "key": ..., "trace": ..., "args_info": ..., "run_secs": [...] | null,
  "error": str | null, "target": {...}, "host": {...}, "tvm": ..., "time": ...}``: one measured
  candidate, failed ones included (they count against the budget on resume). A record timed on
  an RPC server also has ``"measured_on": {"tracker", "key", "server", ...}``; ``host`` stays the
  machine that ran the search and built the candidate (older logs without the field still read).
  A record timed with flushed caches has ``"protocol": "cold"``; one without the field was timed
  warm (see ``PROTOCOLS``). A record timed side by side with rival schedules of its workload, in
  alternated rounds in one process, has ``"compared": n`` (the schedules in that comparison,
  ``search.siblings``): that verdict supersedes every record of its workload and machine class timed
  before it, whatever their lone timings read (``ranking``).

A log named ``*.jsonl.gz`` holds the same lines gzip-compressed, one gzip member per appended
batch (the shipped ResNet18 logs, written as one member each: 32x smaller, 42 MB to 1.3 MB). A
damaged member costs its own batch only: reading goes on at the next member, and a writer cuts
off a torn last member only, never the whole members behind a damaged one.

Writing follows Optuna's journal storage: each batch is one ``write`` under an exclusive
``flock`` on an ``O_APPEND`` descriptor, then ``fsync``, so concurrent writers never interleave
and a crash loses at most the batch in flight. A writer that finds the file replaced under it
(``logs prune`` renames a new file into place) reopens the path, so no batch lands in an unlinked
file. Reading skips garbage lines with a warning, refuses a log from a newer format version, and
treats an unterminated last line as a write still in flight (noted, not warned about). Whatever
the damage (truncated, garbled, mistyped or reordered lines), reading raises nothing but
``TunebenchError`` and keeps every valid record (``tests/test_fuzz.py`` checks both).
"""

from __future__ import annotations

import fcntl
import gzip
import json
import math
import os
import statistics
import time
import warnings
import zlib
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import TunebenchError
from ..files import atomic_write, locked
from ..target import TargetSpec, measurement_class, missing_flags, same_preset

FORMAT_VERSION = 1
LOG_SUFFIXES = (".jsonl", ".jsonl.gz")  # plain, or gzip (one member per appended batch): about 30x smaller, for shipping
# How a candidate was timed, in order of preference. "cold": the kernel's arguments other than its
# input are flushed from the caches before each single call, as inside a model, where a layer's
# weights were last touched one inference ago. "warm": repeated calls on cached data (MetaSchedule's
# default), which measured 5-20% faster than the same kernels inside ResNet18 and flatters large
# weights (Winograd's, a classifier's). Latencies of different protocols are never compared: a
# workload's best record is its best cold one when it has any.
PROTOCOLS = ("cold", "warm")


def to_plain(obj: Any) -> Any:
    """TVM containers and immediates (as traces and arg infos hold them) -> plain JSON values."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if hasattr(obj, "items"):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if hasattr(obj, "value") and not hasattr(obj, "__len__"):  # IntImm, FloatImm
        return obj.value
    return [to_plain(x) for x in obj]


class LogWarning(UserWarning):
    """A problem in a log that cost a line but not the log (torn tail, garbage line)."""


@dataclass
class WorkloadEntry:
    """A TIR workload as the log stores it (module kept serialized until needed).

    ``weight`` is how many times the tuned model calls it: with it, a log alone gives the model's
    estimated latency (sum of weight x best latency), for tuning curves and summaries.
    """

    key: str
    task: str
    flop: float
    mod_b64: str
    weight: int = 1

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "workload",
            "v": FORMAT_VERSION,
            "key": self.key,
            "task": self.task,
            "flop": self.flop,
            "weight": self.weight,
            "mod": self.mod_b64,
        }

    def ms_workload(self) -> Any:
        from tvm.s_tir.meta_schedule.database import Workload

        return Workload.from_json([self.key, self.mod_b64])


@dataclass
class Record:
    """One measured candidate schedule of one workload."""

    key: str
    trace: Any
    args_info: Any
    run_secs: list[float] | None
    error: str | None
    target: dict[str, Any]
    host: dict[str, Any]
    tvm: str
    time: float = field(default_factory=time.time)
    measured_on: dict[str, Any] | None = None  # the RPC server that timed it; None: timed on ``host``
    protocol: str = "warm"  # one of PROTOCOLS
    compared: int = 0  # schedules this one was timed against side by side (``ranking``); 0: timed alone

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.run_secs)

    @property
    def latency(self) -> float:
        """Measured seconds, the mean of ``summarize``'s samples; +inf for a failed candidate so it never wins a comparison."""
        return statistics.fmean(summarize(self.run_secs, self.protocol)) if self.ok else float("inf")  # type: ignore[arg-type]

    @property
    def rank(self) -> tuple[int, float]:
        """Sort key for "better record": preferred protocol first, then latency."""
        return (PROTOCOLS.index(self.protocol), self.latency)

    @property
    def measured_class(self) -> str:
        """The kind of machine whose clock this record's latency is on (``measurement_class``):
        its RPC server's CPU when it went through a tracker, else the searching host's."""
        where = self.measured_on if self.measured_on and self.measured_on.get("llvm_cpu") else self.host
        threads = where.get("threads") or self.target.get("num-cores") or where.get("cores")
        return measurement_class(str(where.get("llvm_cpu", "?")), threads)

    def to_json(self) -> dict[str, Any]:
        obj = {
            "type": "record",
            "v": FORMAT_VERSION,
            "key": self.key,
            "trace": self.trace,
            "args_info": self.args_info,
            "run_secs": self.run_secs,
            "error": self.error,
            "target": self.target,
            "host": self.host,
            "tvm": self.tvm,
            "time": self.time,
        }
        if self.measured_on is not None:  # local records keep the original shape, byte for byte
            obj["measured_on"] = self.measured_on
        if self.protocol != "warm":  # likewise warm records, as every log before protocols held
            obj["protocol"] = self.protocol
        if self.compared:
            obj["compared"] = self.compared
        return obj

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Record:
        """Parse and type-check a record line: a malformed field raises here (and the reader skips
        the line with its number), not later deep inside a ranking or MetaSchedule."""
        return cls(
            key=_typed(obj, "key", str),
            trace=_typed(obj, "trace", list),
            args_info=_typed(obj, "args_info", list),
            run_secs=_samples(obj["run_secs"]),
            error=_typed(obj, "error", (str, type(None))),
            target=_typed(obj, "target", dict),
            host=_typed(obj, "host", dict),
            tvm=_typed(obj, "tvm", str),
            time=float(_typed(obj, "time", (int, float))),
            measured_on=_typed(obj, "measured_on", (dict, type(None)), None),
            protocol=_protocol(obj.get("protocol", "warm")),
            compared=int(_typed(obj, "compared", int, 0)),
        )

    def identity(self) -> str:
        """What makes two records duplicates: same workload, schedule, target and measurement."""
        return json.dumps([self.key, self.trace, self.target, self.run_secs, self.time], sort_keys=True)

    def ms_record(self, workload: Any) -> Any:
        """This record as a MetaSchedule TuningRecord bound to ``workload``, its trace marked where
        its design ends (``traces.marked``): the search mutates it from there."""
        import tvm
        from tvm.s_tir.meta_schedule.database import TuningRecord

        from .traces import marked

        target = tvm.target.Target(self.target)
        return TuningRecord.from_json([marked(self.trace), self.ms_run_secs, target.export(), self.args_info], workload)

    @property
    def ms_run_secs(self) -> list[float] | None:
        """The samples as MetaSchedule should see them (``summarize``)."""
        return summarize(self.run_secs, self.protocol) if self.ok else self.run_secs


@dataclass
class HistoryLog:
    """The parsed contents of one or more logs, plus the problems met while reading them."""

    workloads: dict[str, WorkloadEntry] = field(default_factory=dict)
    records: list[Record] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def by_key(self) -> dict[str, list[Record]]:
        out: dict[str, list[Record]] = {}
        for r in self.records:
            out.setdefault(r.key, []).append(r)
        return out

    def trials(self) -> dict[str, int]:
        """Measured candidates per workload key, failures included (they cost search time too)."""
        counts: dict[str, int] = {}
        for r in self.records:
            counts[r.key] = counts.get(r.key, 0) + 1
        return counts

    def best(self, usable: Any = None, here: str | None = None) -> dict[str, Record]:
        """Best successful record per workload (``Record.rank``), among those ``usable(record)`` accepts.

        With ``here`` (a ``measurement_class``), a record timed on that kind of machine beats any
        record timed elsewhere: another machine's clock is a prior, not a rival, so a log merged
        from several machines gives each its own best, and the others' only where it has none.
        Where it has none, the nearest class's best wins (``target.class_distance``: same vendor,
        then same vector width): on an AMD Zen 3, a Zen 4's best before an Intel Xeon's. Within a
        class and protocol, a side-by-side verdict beats the records timed before it (``ranking``).
        """
        from ..target import class_distance

        better = ranking(self.records)

        def rank(r: Record) -> tuple[float, ...]:
            return (*(class_distance(r.measured_class, here) if here is not None else ()), *better(r))

        out: dict[str, Record] = {}
        for r in self.records:
            if r.ok and (usable is None or usable(r)) and (r.key not in out or rank(r) < rank(out[r.key])):
                out[r.key] = r
        return out

    def extend(self, other: HistoryLog) -> None:
        for key, w in other.workloads.items():
            self.workloads.setdefault(key, w)
        self.records.extend(other.records)
        self.problems.extend(other.problems)


def distinct_schedules(records: Iterable[Record], count: int, skip: Iterable[Any] = ()) -> list[Record]:
    """The first ``count`` of ``records`` (in their order) with distinct traces, none with a trace in
    ``skip``: the schedules worth timing once each (carry-over, ``--from``, a refine's runners-up)."""
    seen = {json.dumps(trace, sort_keys=True) for trace in skip}
    out: list[Record] = []
    for r in records:
        if len(out) == count:
            break
        trace = json.dumps(r.trace, sort_keys=True)
        if trace not in seen:
            seen.add(trace)
            out.append(r)
    return out


def ranking(records: Iterable[Record]) -> Callable[[Record], tuple[int, int, float]]:
    """Sort key for "better record" among ``records``: preferred protocol, then not superseded, then
    latency. A record is superseded when a side-by-side verdict (``Record.compared``) of its
    workload, machine class and protocol was timed after it.

    Lone timings of one schedule drift 20-60% between processes and hours on a 2-core host, so the
    fastest of hundreds is a lucky one; a verdict timed its rivals together, under the same
    conditions, and what was timed before it was either among them or lost to them. Records
    timed after it compete with it by latency, as any two records do."""
    latest: dict[tuple[str, str, str], float] = {}
    for r in records:
        if r.ok and r.compared:
            group = (r.key, r.measured_class, r.protocol)
            latest[group] = max(latest.get(group, r.time), r.time)

    def key(r: Record) -> tuple[int, int, float]:
        stale = r.time < latest.get((r.key, r.measured_class, r.protocol), -math.inf)
        protocol, latency = r.rank
        return (protocol, int(stale), latency)

    return key


def is_compressed(path: str | os.PathLike[str]) -> bool:
    return str(path).endswith(".gz")


def log_files(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Expand a file, a directory (its ``*.jsonl``) or a list of either into log paths."""
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            out.extend(sorted(x for suffix in LOG_SUFFIXES for x in p.glob(f"*{suffix}")))
        elif p.exists():
            out.append(p)
        else:
            raise TunebenchError(f"log {str(p)!r} does not exist")
    return out


def read_log(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], warn: bool = True, lock: bool = True) -> HistoryLog:
    """Read logs, keeping every valid record; each skipped line becomes a problem (and a warning).

    ``lock=False`` is for a caller that already holds the writers' lock on the file: flock locks on
    two descriptors conflict even within one process, so taking it again would wait forever.
    """
    log = HistoryLog()
    for path in log_files(paths):
        log.extend(_read_one(path, lock))
    if warn:
        for p in log.problems:
            warnings.warn(p, LogWarning, stacklevel=2)
    return log


def _read_one(path: Path, lock: bool = True) -> HistoryLog:
    log = HistoryLog()
    data, log.problems = _read_bytes(path, lock)
    lines = data.split(b"\n")
    if lines[-1].startswith(b'{"type": ') and not _complete(lines[-1]):  # read under the lock: only a crash leaves this
        log.problems.append(f"{path}:{len(lines)}: torn last line skipped (a write was cut off by a crash)")
        lines[-1] = b""
    parsed = sum(_parse_line(log, path, lineno, raw) for lineno, raw in enumerate(lines, 1) if raw.strip())
    if parsed == 0 and any(line.strip() for line in lines):
        raise TunebenchError(f"{path} is not a tunebench history log (no valid line in it)")
    _note_foreign_and_orphans(log, path)
    return log


def _read_bytes(path: Path, lock: bool) -> tuple[bytes, list[str]]:
    """The log's text under a shared lock (writers hold LOCK_EX per batch: never read half of one),
    decompressed for ``.jsonl.gz``; with a problem for each compressed batch skipped."""
    try:
        with open(path, "rb") as f:
            if lock:
                fcntl.flock(f.fileno(), fcntl.LOCK_SH)
            data = f.read()
    except OSError as e:
        raise TunebenchError(f"cannot read log {str(path)!r}: {e.strerror}") from None
    if not is_compressed(path):
        return data, []
    text, end, skipped = _gunzip_members(data)
    if data and not end and not data.startswith(b"\x1f\x8b"):  # no whole batch, and not even a torn one
        raise TunebenchError(f"{path} is not a tunebench history log (not gzip data)")
    problems = [f"{path}: damaged compressed batch at byte {at} skipped" for at in skipped if at < end]
    if end < len(data):
        problems.append(f"{path}: torn compressed batch at byte {end} skipped (a write was cut off by a crash)")
    return text, problems


GZIP_MAGIC = b"\x1f\x8b\x08"  # how every gzip member (deflate) starts


def _gunzip_members(data: bytes) -> tuple[bytes, int, list[int]]:
    """Decompress gzip members one by one (each appended batch is one). A member that does not
    decompress whole (torn by a crash, or damaged) is skipped up to the next member header.
    Returns the text, the offset where the last whole member ends (what follows is a torn tail)
    and the offsets of the members skipped."""
    out: list[bytes] = []
    view, pos, end, skipped = memoryview(data), 0, 0, []
    while pos < len(data):
        d = zlib.decompressobj(wbits=31)
        try:
            chunk = d.decompress(view[pos:])
        except zlib.error:
            chunk = b""
        if d.eof:
            out.append(chunk)
            pos = end = len(data) - len(d.unused_data)
            continue
        if not skipped or skipped[-1] < end:  # one offset per damaged stretch
            skipped.append(pos)
        nxt = data.find(GZIP_MAGIC, pos + 1)
        pos = nxt if nxt >= 0 else len(data)
    return b"".join(out), end, skipped


def _parse_line(log: HistoryLog, path: Path, lineno: int, raw: bytes) -> bool:
    """Add one line's workload or record to ``log``; a bad line becomes a problem. True if it parsed."""
    try:
        obj = json.loads(raw)
        if not isinstance(obj, dict):
            raise ValueError("not an object")
        kind, version = obj["type"], obj["v"]
    except (ValueError, KeyError, TypeError, RecursionError):  # RecursionError: garbage nested deeper than json parses
        log.problems.append(f"{path}:{lineno}: not a tunebench record, skipped")
        return False
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise TunebenchError(f"{path}:{lineno}: log format version {version} is newer than this tunebench reads ({FORMAT_VERSION}); upgrade tunebench")
    try:
        if not isinstance(version, int):
            raise TypeError(f"version {version!r}")
        if kind == "workload":
            w = WorkloadEntry(_typed(obj, "key", str), _typed(obj, "task", str), float(obj["flop"]), _typed(obj, "mod", str), int(obj.get("weight", 1)))
            log.workloads.setdefault(w.key, w)
        elif kind == "record":
            log.records.append(Record.from_json(obj))
        else:
            raise KeyError(kind)
    except (KeyError, TypeError, ValueError, OverflowError):  # OverflowError: an infinite weight
        log.problems.append(f"{path}:{lineno}: malformed {kind!r} line skipped")
        return False
    return True


def _note_foreign_and_orphans(log: HistoryLog, path: Path) -> None:
    foreign = sorted({r.tvm for r in log.records} - {tvm_version()})
    if foreign:
        n = sum(r.tvm in foreign for r in log.records)
        log.problems.append(
            f"{path}: {n} record(s) were measured with TVM {', '.join(foreign)} (this is TVM {tvm_version()}); they are kept, but their schedules may not apply"
        )
    orphans = {r.key for r in log.records} - set(log.workloads)
    if orphans:
        log.problems.append(f"{path}: {len(orphans)} workload(s) referenced by records but never defined")


def _typed(obj: dict[str, Any], name: str, kinds: type | tuple[type, ...], *default: Any) -> Any:
    value = obj.get(name, *default) if default else obj[name]
    if not isinstance(value, kinds):
        raise TypeError(f"field {name!r} is {type(value).__name__}")
    return value


def _samples(value: Any) -> list[float] | None:
    """``run_secs``: null (a failed candidate) or a list of numbers (bools and nulls are not numbers)."""
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value):
        raise TypeError("field 'run_secs' is not a list of numbers")
    return [float(x) for x in value]


def summarize(run_secs: list[float], protocol: str) -> list[float]:
    """Samples as rankings should weigh them, MetaSchedule's (the mean of ``run_secs``) and ours:
    a warm record's few long samples as they are, a cold record's many single calls as their median
    alone (one preempted call must not move it)."""
    return [statistics.median(run_secs)] if protocol == "cold" else list(run_secs)


def _protocol(name: Any) -> str:
    if name not in PROTOCOLS:
        raise ValueError(f"unknown timing protocol {name!r}")
    return str(name)


def _complete(raw: bytes) -> bool:
    """Whether a line is whole JSON: a cut-off prefix of a JSON object never is."""
    try:
        json.loads(raw)
    except (ValueError, RecursionError):
        return False
    return True


def unusable_reason(record: Record, target: TargetSpec | None = None, host_flags: frozenset[str] | None = None) -> str:
    """Why ``record`` cannot serve ``target`` (None: any target) on this host, or ``host_flags``'s; '' if it can.

    The one rule serving (``choose.best_records``) and ``logs show`` go by. A record serves ``target``
    if it was measured for the same CPU model (mcpu), or for the other mcpu of the same preset
    (``target.same_preset``: a Zen 4's ``avx512`` is ``znver4``, the shipped Intel records
    ``skylake-avx512``), and this host can execute its code (else SIGILL, not an error message). A
    schedule for another vector width is not evidence; one this host can run is, ranked by where it
    was timed (``HistoryLog.best``).
    """
    if record.target.get("kind") != "llvm":
        return f"target kind {record.target.get('kind')!r}"
    if target is not None and str(record.target.get("mcpu", "")) != target.mcpu and not same_preset(record.target, target.config):
        return f"tuned for {record.target.get('mcpu') or 'generic'}, not {target.mcpu or 'generic'}"
    try:
        missing = missing_flags(record.target, host_flags)  # LLVM's features for its mcpu and mattr, any mcpu
    except TunebenchError as e:  # a target this TVM cannot even parse
        return str(e)
    return f"CPU lacks {', '.join(missing)}" if missing else ""


def tvm_version() -> str:
    """The installed TVM's version, read from package metadata: reading a log must not import TVM."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("apache-tvm")
    except PackageNotFoundError:
        return "unknown"


def _keys_in_file(path: Path) -> set[str]:
    """Workload keys a log already defines (read by a writer that holds the lock)."""
    if not path.exists():
        return set()
    data, _ = _read_bytes(path, lock=False)
    keys: set[str] = set()
    for raw in data.split(b"\n"):
        if raw.startswith(b'{"type": "workload"'):
            with suppress(ValueError, KeyError, TypeError):  # a damaged line: the reader skips it too
                key = json.loads(raw)["key"]
                keys.add(key if isinstance(key, str) else "")
    return keys


def _dump(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, separators=(", ", ": ")) + "\n").encode()


class LogWriter:
    """Appends batches of records to a log, adding each workload line the first time it is needed."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._known: set[str] | None = None
        self._inode = -1  # the file ``_known`` describes; a prune swaps it
        self._whole_to = 0  # bytes of ``_inode`` known whole: up to the end of this writer's last batch

    def append(self, records: list[Record], workloads: dict[str, WorkloadEntry]) -> None:
        """One locked, fsynced write for the batch: all of it reaches the disk, or (on a crash) a torn tail."""
        with locked(self.path) as fd:
            inode = os.fstat(fd).st_ino
            if inode != self._inode:  # first batch, or a prune swapped the file: nothing known whole
                self._whole_to = 0
            if self._known is None or inode != self._inode or any(r.key not in self._known for r in records):
                self._known = _keys_in_file(self.path)  # another writer may have added some, a prune dropped some
                self._inode = inode
            chunks: list[bytes] = []
            for r in records:
                if r.key not in self._known:
                    chunks.append(_dump(workloads[r.key].to_json()))
                    self._known.add(r.key)
                chunks.append(_dump(r.to_json()))
            if chunks:
                data = self._encoded(fd, chunks)
                _write_all(fd, data)
                os.fsync(fd)
                self._whole_to = os.fstat(fd).st_size

    def _encoded(self, fd: int, chunks: list[bytes]) -> bytes:
        """The batch as it goes on disk, after repairing a tail a killed writer tore."""
        if is_compressed(self.path):  # one gzip member per batch; a torn member is cut off, or it would swallow ours
            size = os.fstat(fd).st_size
            # only what was appended since this writer's last batch needs checking (was: the whole file, every batch)
            start = self._whole_to if self._whole_to <= size else 0
            whole = start + (_gunzip_members(os.pread(fd, size - start, start))[1] if size > start else 0)  # a damaged member before whole ones stays
            if whole < size:
                os.ftruncate(fd, whole)
            return gzip.compress(b"".join(chunks), mtime=0)
        if _ends_torn(fd):  # a killed writer's partial line must not swallow our first line
            chunks.insert(0, b"\n")
        return b"".join(chunks)


def _ends_torn(fd: int) -> bool:
    """True if the file's last byte is not a newline (a writer died mid-line)."""
    size = os.fstat(fd).st_size
    return size > 0 and os.pread(fd, 1, size - 1) != b"\n"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_log_atomic(path: str | os.PathLike[str], log: HistoryLog) -> None:
    """Replace ``path`` with ``log``: temp file, fsync, rename, so a crash leaves the old file whole.

    Records are written in a deterministic order (workload key, time, latency, then the record
    itself) so the same records give the same bytes whatever order they were read in.
    """
    target = Path(path)
    used = {r.key for r in log.records}
    body = [_dump(log.workloads[k].to_json()) for k in sorted(used) if k in log.workloads]
    body += [_dump(r.to_json()) for r in sorted(log.records, key=lambda r: (r.key, r.time, r.latency, r.identity()))]
    atomic_write(target, gzip.compress(b"".join(body), compresslevel=9, mtime=0) if is_compressed(target) else b"".join(body))
