"""The compile cache: one build per (subgraph, input shapes and dtypes, weights, target, records).

Two levels. In memory, a key (a SHA-256 hex digest) maps to a ready entry. On disk
(``~/.cache/tunebench``, or ``$TUNEBENCH_CACHE_DIR``, or a ``cache_dir`` option) a key has up to
three files: ``tunebench-<key>.so``, the exported Relax VM library with its weights (tens of MB; none
when the entry runs in PyTorch), ``tunebench-<key>.json``, what was decided and applied, and
``tunebench-<key>.lock``, an empty file to ``flock``. A new process loads the library instead of
lowering and compiling again. Both data files are written to a temp name unique to the process and
thread (``.tunebench-<key>.<pid>.<thread>.tmp.so``) and renamed, JSON last, so a reader sees a whole
entry or none. An entry that fails to load (torn, corrupt, evicted,
from another TVM) is rebuilt with a warning, never fatal.

One build per key: threads wait on a per-key lock (dropped once the key is settled) and then take
the entry from memory; processes wait on the key's ``flock``, held while checking the disk and
building, and then load what the first one stored. Where the lock file cannot be created (read-only
directory) the cache works unlocked.

Bounded: a disk hit touches the entry's files; after each store, entries (``.json`` + ``.so``) are
deleted least recently used first until they total at most ``TUNEBENCH_CACHE_MAX_MB`` (MiB, default
2048), never the one just stored nor one another thread or process holds the lock of. Eviction
deletes the ``.json`` first, then the ``.so``, temp files and the lock file (while holding it: a
waiter that then finds the file gone locks the new one). Temp files over an hour old, a crashed
writer's, go too; lock files of keys never stored (failed builds) stay until ``clear``.

The directory may be shared with the user's own files (``TUNEBENCH_CACHE_DIR=.``, ``cache clear --dir
.``): eviction and ``clear`` delete only names tunebench writes, ``tunebench-`` and a hex digest of
a fixed length (``owned``), never a ``package.json`` or a user's ``.so`` or ``.lock``.

The memory level keeps to the same limit, least recently used first, each entry weighing its files on
disk (a long-running server that meets new logs or settings would otherwise keep every library it ever
loaded); the backend drops its graphs of an entry memory let go (``backend.GraphDispatcher``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..files import atomic_write, locked

CACHE_VERSION = 3  # 2: entries say how the subgraph was lowered and its task FLOP; 3: which tasks got a stand-in's schedule
MB = 2**20  # the MB of TUNEBENCH_CACHE_MAX_MB and of `tunebench cache show`
DEFAULT_MAX_MB = 2048
STALE_TEMP_S = 3600.0  # a temp file this old is no writer's any more (an export takes seconds)
PREFIX = "tunebench-"  # of every file name tunebench writes in a cache directory
_KEY = re.compile("[0-9a-f]{64}")  # a cache key, as ``backend`` and ``plan`` hash them
ENTRY_FILE = re.compile(rf"{PREFIX}(?P<key>{_KEY.pattern})\.(?P<ext>json|so|lock)")
TEMP_FILE = re.compile(rf"\.{PREFIX}(?P<key>{_KEY.pattern})\.\d+\.\d+\.tmp\.(json|so)")
DIGEST_FILE = re.compile(rf"{PREFIX}[0-9a-f]{{24}}\.[0-9a-f]{{16}}\.jsonl\.gz")  # ``digest``'s reduced logs


@functools.cache
def code_version() -> str:
    """A digest of tunebench's own source, part of every key: a build depends on how this code
    lowers, fuses and schedules (a GELU lowered another way is another kernel), and a cached
    library from older code must not be served as if the new code had built it."""
    h = hashlib.sha256()
    for name, path in source_files():
        h.update(name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def source_files() -> list[tuple[str, Path]]:
    """Every ``.py`` file of tunebench, every stage's, by its path in the package (what ``code_version`` hashes)."""
    root = Path(__file__).parent.parent
    return [(path.relative_to(root).as_posix(), path) for path in sorted(root.rglob("*.py"))]


class CacheWarning(UserWarning):
    """A disk cache entry could not be used or written; it is rebuilt or kept in memory only."""


@dataclass
class CacheStats:
    """Counters tests and users read to see what the cache did (``tunebench.serve.cache.STATS``)."""

    compiles: int = 0  # subgraphs lowered (and built, if they run in TVM)
    memory_hits: int = 0
    disk_hits: int = 0
    tvm_runs: int = 0  # calls into a compiled TVM subgraph
    plan_hits: int = 0  # graphs served by a remembered split (``tunebench.serve.plan``), not exported and partitioned again

    def reset(self) -> None:
        self.compiles = self.memory_hits = self.disk_hits = self.tvm_runs = self.plan_hits = 0


STATS = CacheStats()


def stats() -> CacheStats:
    """A snapshot of the process-wide serving counters (a copy: ``before = stats()`` stays as it was)."""
    return replace(STATS)


def default_cache_dir() -> Path:
    return Path(os.environ.get("TUNEBENCH_CACHE_DIR") or Path.home() / ".cache" / "tunebench")


def owned_name(key: str, ext: str) -> str:
    """The file name of ``key``'s ``ext`` file (``json``, ``so``, ``lock``): one ``ENTRY_FILE`` matches,
    so eviction and ``clear`` can tell it from a user's file. Raises ValueError for a key that is not
    a SHA-256 hex digest (a file named by it would never be cleared)."""
    if not _KEY.fullmatch(key):
        raise ValueError(f"a compile-cache key is a SHA-256 hex digest, not {key!r}")
    return f"{PREFIX}{key}.{ext}"


def library_file(key: str, directory: Path | None = None) -> Path:
    """Where the built library of cache entry ``key`` lives on disk (whether or not it is there)."""
    return (directory or default_cache_dir()) / owned_name(key, "so")


def max_cache_bytes() -> int:
    """The disk limit, ``$TUNEBENCH_CACHE_MAX_MB`` or 2 GiB; read at each store, so a server's
    environment applies without a restart. A bad value warns (serving never fails on the cache)."""
    raw = os.environ.get("TUNEBENCH_CACHE_MAX_MB")
    if not raw:
        return DEFAULT_MAX_MB * MB
    try:
        mb = float(raw)
    except ValueError:
        mb = math.nan
    if not (math.isfinite(mb) and mb >= 0):
        warnings.warn(f"TUNEBENCH_CACHE_MAX_MB={raw!r} is not a size in MB; the cache keeps {DEFAULT_MAX_MB} MB", CacheWarning, stacklevel=2)
        return DEFAULT_MAX_MB * MB
    return int(mb * MB)


@dataclass
class Entry:
    """A compiled subgraph: ``runner`` is ``"tvm"`` (with ``module``, a VM-loadable module) or
    ``"pytorch"`` (the fallback policy kept it out of TVM); ``applied`` are workload keys.
    ``lowering`` (layout, Winograd shapes) and ``flop`` (its tasks' FLOP per call) are kept so a
    disk hit reports what a fresh build would."""

    runner: str
    tasks: int
    applied: list[str] = field(default_factory=list)
    module: Any = None
    lowering: str = ""
    flop: float = 0.0
    transferred: list[str] = field(default_factory=list)  # of ``applied``: schedules refitted from another shape
    size: int = 0  # bytes of its files on disk (library and JSON): its weight in the memory level; 0 if never written

    def meta(self, key: str) -> dict[str, Any]:
        import tvm

        return {
            "v": CACHE_VERSION,
            "key": key,
            "tvm": tvm.__version__,
            "runner": self.runner,
            "tasks": self.tasks,
            "applied": self.applied,
            "lowering": self.lowering,
            "flop": self.flop,
            "transferred": self.transferred,
        }


class CompileCache:
    """Memory over disk over ``build``, one build per key; see the module docstring for the disk layout.
    ``max_bytes`` overrides ``max_cache_bytes()`` for this instance (tests, embedding servers)."""

    def __init__(self, max_bytes: int | None = None) -> None:
        self.memory: dict[str, Entry] = {}  # least recently used first
        self.max_bytes = max_bytes
        self._mutex = threading.Lock()  # guards memory, _key_locks and the STATS hit/compile counters
        self._key_locks: dict[str, threading.Lock] = {}  # of keys being fetched, not yet in memory

    def limit(self) -> int:
        return max_cache_bytes() if self.max_bytes is None else self.max_bytes

    def holds(self, key: str) -> bool:
        """Whether ``key``'s entry is in memory (a graph serving it may keep its VM)."""
        return key in self.memory

    def get(self, key: str, directory: Path | None, build: Callable[[], Entry]) -> Entry:
        """``key``'s entry from memory, else disk, else ``build()`` (then stored); a caller that finds
        another thread or process building the key waits for that build instead of repeating it."""
        entry = self._fetch(key, directory, build)
        assert entry is not None  # built when not found
        return entry

    def cached(self, key: str, directory: Path | None) -> Entry | None:
        """``key``'s entry from memory or disk, never built (a caller with another way to make it)."""
        return self._fetch(key, directory, None)

    def _fetch(self, key: str, directory: Path | None, build: Callable[[], Entry] | None) -> Entry | None:
        entry = self._hit(key)
        if entry is not None:
            return entry
        folder = directory or default_cache_dir()
        with self._mutex:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        try:
            with key_lock:
                entry = self._hit(key)  # built by the thread this one waited for
                if entry is not None:
                    return entry
                entry, stored = self._load_or_build(key, folder, build)
                if entry is not None:
                    self._remember(key, entry)
        finally:
            with self._mutex:  # settled: in memory, or to be tried afresh by the next caller
                if self._key_locks.get(key) is key_lock:
                    del self._key_locks[key]
        if stored:
            self._evict(folder, keep=key)
        return entry

    def _hit(self, key: str) -> Entry | None:
        """``key``'s entry from memory, now its most recently used, or None."""
        with self._mutex:
            entry = self.memory.pop(key, None)
            if entry is not None:
                self.memory[key] = entry
                STATS.memory_hits += 1
            return entry

    def _remember(self, key: str, entry: Entry) -> None:
        """Put ``entry`` in memory, then let least recently used others go until the rest fit the limit."""
        limit = self.limit()
        with self._mutex:
            self.memory[key] = entry
            total = sum(e.size for e in self.memory.values())
            for old in [k for k in self.memory if k != key]:
                if total <= limit:
                    break
                total -= self.memory.pop(old).size

    def _load_or_build(self, key: str, folder: Path, build: Callable[[], Entry] | None) -> tuple[Entry | None, bool]:
        """Under the key's file lock, so a process that waited loads what the builder stored; the
        second value says whether a new entry reached the disk. No ``build``: None when not on disk."""
        with _file_lock(folder / owned_name(key, "lock")):
            entry = self._load(key, folder)
            if entry is not None:
                with self._mutex:
                    STATS.disk_hits += 1
                return entry, False
            if build is None:
                return None, False
            with self._mutex:
                STATS.compiles += 1
            entry = build()
            return entry, self._store(key, folder, entry)

    def _load(self, key: str, folder: Path) -> Entry | None:
        import tvm

        meta_path = folder / owned_name(key, "json")
        if not meta_path.exists():
            return None
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("v") != CACHE_VERSION or meta.get("key") != key or meta.get("tvm") != tvm.__version__:
                raise ValueError("written by another tunebench or TVM version")
            entry = Entry(meta["runner"], int(meta["tasks"]), list(meta["applied"]), lowering=str(meta["lowering"]), flop=float(meta["flop"]))
            entry.transferred = list(meta["transferred"])
            if entry.runner == "tvm":
                entry.module = tvm.runtime.load_module(str(library_file(key, folder)))
            elif entry.runner != "pytorch":
                raise ValueError(f"unknown runner {entry.runner!r}")
            entry.size = _files_size(key, folder)
        except Exception as e:  # json, OS, and TVM loader errors (a .so evicted or missing) alike mean: rebuild
            warnings.warn(f"tunebench cache entry {meta_path} is unusable ({type(e).__name__}: {e}); rebuilding it", CacheWarning, stacklevel=5)
            return None
        for path in (meta_path, library_file(key, folder)):  # used now: the last to be evicted
            with suppress(OSError):
                os.utime(path)
        return entry

    def _store(self, key: str, folder: Path, entry: Entry) -> bool:
        """Library, then JSON, each to a temp name renamed into place; False if the disk refused."""
        try:
            if entry.runner == "tvm":
                atomic_write(library_file(key, folder), lambda tmp: entry.module.export_library(str(tmp)), typed=True)
            atomic_write(folder / owned_name(key, "json"), json.dumps(entry.meta(key)), typed=True)
            entry.size = _files_size(key, folder)
            return True
        except Exception as e:  # disk full, read-only dir, linker failure: serving goes on from memory
            warnings.warn(f"cannot write the tunebench cache in {folder} ({e}); the build is kept in memory only", CacheWarning, stacklevel=5)
            return False

    def _evict(self, folder: Path, keep: str) -> None:
        """Delete stale temps, then least recently used entries other than ``keep`` until the rest fit."""
        limit = self.limit()
        try:
            _remove_temps(folder, None, STALE_TEMP_S)
            entries = _scan(folder)
            total = sum(e.size for e in entries)
            for e in sorted(entries, key=lambda e: e.last_used):
                if total <= limit:
                    break
                if e.key != keep and _remove(folder, e.key) is not None:
                    total -= e.size
        except OSError as e:
            warnings.warn(f"cannot evict from the tunebench cache in {folder} ({e}); it may stay over its limit", CacheWarning, stacklevel=4)


CACHE = CompileCache()


def _files_size(key: str, folder: Path) -> int:
    """Bytes of ``key``'s JSON and library on disk (the library absent for an entry run in PyTorch)."""
    size = 0
    for path in (folder / owned_name(key, "json"), library_file(key, folder)):
        with suppress(OSError):
            size += path.stat().st_size
    return size


LOCK_FLAGS = os.O_RDONLY | os.O_CREAT  # a key's lock file is empty: only ever created and locked


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Hold ``path`` locked (``files.locked``: a lock file evicted while we waited is not the lock any
    more); where it cannot be created (read-only or unwritable dir), go on unlocked."""
    with ExitStack() as held:
        with suppress(OSError):
            held.enter_context(locked(path, LOCK_FLAGS))
        yield


@dataclass(frozen=True)
class DiskEntry:
    """One key's files on disk, as ``tunebench cache show`` lists them."""

    key: str
    size: int  # bytes: .json + .so
    last_used: float  # Unix time of its store or latest disk hit
    runner: str = "?"  # "tvm", "pytorch", or "?": no readable .json (torn write, or being stored)
    lowering: str = ""
    applied: int = 0  # records applied


@dataclass(frozen=True)
class DiskListing:
    """A cache directory's entries, most recently used first, and the limit eviction keeps them to."""

    directory: Path
    entries: list[DiskEntry]
    limit: int  # bytes

    @property
    def total(self) -> int:
        return sum(e.size for e in self.entries)


@dataclass(frozen=True)
class Cleared:
    """What ``clear`` deleted: entries and bytes (entries, temp files); ``busy`` entries it kept because
    another process held their lock (loading or building them)."""

    entries: int
    bytes: int
    busy: int


def list_entries(directory: Path | None = None) -> DiskListing:
    """The entries in ``directory`` (default: ``default_cache_dir()``) with what their JSON says."""
    folder = directory or default_cache_dir()
    entries = [_described(folder, e) for e in _scan(folder)] if folder.is_dir() else []
    return DiskListing(folder, sorted(entries, key=lambda e: e.last_used, reverse=True), max_cache_bytes())


def clear(directory: Path | None = None) -> Cleared:
    """Delete every entry, temp and lock file in ``directory`` (default: ``default_cache_dir()``) but
    those of keys another process holds the lock of, and the log digests and plans; files tunebench
    did not name (``owned_name``) are left alone, whatever their extension."""
    folder = directory or default_cache_dir()
    if not folder.is_dir():
        return Cleared(0, 0, 0)
    stored = {e.key for e in _scan(folder)}
    keys = {m["key"] for m in map(_owned_file, os.listdir(folder)) if m is not None}
    entries = freed = busy = 0
    for key in sorted(keys):
        got = _remove(folder, key)
        if got is None:
            busy += key in stored
        else:
            entries, freed = entries + (key in stored), freed + got
    # ``digest``'s reduced logs and ``plan``'s remembered splits: re-made on the next read or build
    for sub, pattern in (("digests", DIGEST_FILE), ("plans", ENTRY_FILE)):
        for derived in _matching(folder / sub, pattern):
            with suppress(FileNotFoundError):
                size = derived.stat().st_size
                derived.unlink()
                freed += size
    return Cleared(entries, freed, busy)


def _owned_file(name: str) -> re.Match[str] | None:
    """The match naming ``name``'s key if it is an entry, lock or temp file of tunebench's, else None."""
    return ENTRY_FILE.fullmatch(name) or TEMP_FILE.fullmatch(name)


def _matching(folder: Path, pattern: re.Pattern[str]) -> list[Path]:
    """The files in ``folder`` (none if it is missing) whose whole name ``pattern`` matches."""
    return [folder / n for n in os.listdir(folder) if pattern.fullmatch(n)] if folder.is_dir() else []


def _scan(folder: Path) -> list[DiskEntry]:
    """Each key with a ``.json`` or ``.so``: their total size and latest mtime (a hit touches both)."""
    found: dict[str, DiskEntry] = {}
    for item in os.scandir(folder):
        named = ENTRY_FILE.fullmatch(item.name)
        if named is None or named["ext"] == "lock":
            continue
        key = named["key"]
        try:
            st = item.stat()
        except FileNotFoundError:  # evicted by another process meanwhile
            continue
        old = found.get(key, DiskEntry(key, 0, 0.0))
        found[key] = replace(old, size=old.size + st.st_size, last_used=max(old.last_used, st.st_mtime))
    return list(found.values())


def _described(folder: Path, entry: DiskEntry) -> DiskEntry:
    try:
        meta = json.loads((folder / owned_name(entry.key, "json")).read_text())
        return replace(entry, runner=str(meta["runner"]), lowering=str(meta.get("lowering", "")), applied=len(meta.get("applied", [])))
    except (OSError, ValueError, KeyError, TypeError):
        return entry


def _remove(folder: Path, key: str) -> int | None:
    """Delete ``key``'s ``.json`` (first: a reader then finds no entry, or one it rebuilds), ``.so``,
    temp files and, still holding it, lock file; the bytes freed. None, deleting nothing, if another
    thread or process holds the lock: it is loading or building the entry."""
    lock = folder / owned_name(key, "lock")
    with locked(lock, LOCK_FLAGS, blocking=False) as fd:
        if fd is None:
            return None
        freed = _remove_temps(folder, key, 0.0)  # the lock is ours: no writer is using them
        for path in (folder / owned_name(key, "json"), library_file(key, folder), lock):
            with suppress(FileNotFoundError):
                size = path.stat().st_size
                path.unlink()
                freed += size
        return freed


def _remove_temps(folder: Path, key: str | None, older_than: float) -> int:
    """Delete ``key``'s temp files (None: any key's) last written over ``older_than`` seconds ago."""
    freed, now = 0, time.time()
    for name in os.listdir(folder):
        named = TEMP_FILE.fullmatch(name)
        if named is None or key not in (None, named["key"]):
            continue
        with suppress(FileNotFoundError):
            st = (folder / name).stat()
            if now - st.st_mtime >= older_than:
                (folder / name).unlink()
                freed += st.st_size
    return freed
