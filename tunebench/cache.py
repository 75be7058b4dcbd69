"""The compile cache: one build per (subgraph, input shapes and dtypes, weights, target, records).

Two levels. In memory, a key maps to a ready entry. On disk (``~/.cache/tunebench``, or
``$TUNEBENCH_CACHE_DIR``, or a ``cache_dir`` option) a key maps to ``<key>.so``, the exported
Relax VM library, and ``<key>.json``, what was decided and applied; a new process loads the
library instead of lowering and compiling again. Both files are written to a temp name and
renamed, JSON last, so a reader sees a whole entry or none. An entry that fails to load (torn,
corrupt, from another TVM) is rebuilt with a warning, never fatal.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CACHE_VERSION = 2  # 2: entries say how the subgraph was lowered and its task FLOP (what bench and apply report)


class CacheWarning(UserWarning):
    """A disk cache entry could not be used or written; it is rebuilt or kept in memory only."""


@dataclass
class CacheStats:
    """Counters tests and users read to see what the cache did (``tunebench.cache.STATS``)."""

    compiles: int = 0  # subgraphs lowered (and built, if they run in TVM)
    memory_hits: int = 0
    disk_hits: int = 0
    tvm_runs: int = 0  # calls into a compiled TVM subgraph

    def reset(self) -> None:
        self.compiles = self.memory_hits = self.disk_hits = self.tvm_runs = 0


STATS = CacheStats()


def stats() -> CacheStats:
    """The process-wide serving counters."""
    return STATS


def default_cache_dir() -> Path:
    return Path(os.environ.get("TUNEBENCH_CACHE_DIR") or Path.home() / ".cache" / "tunebench")


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
        }


class CompileCache:
    """Memory over disk over ``build``; see the module docstring for the disk layout."""

    def __init__(self) -> None:
        self.memory: dict[str, Entry] = {}

    def get(self, key: str, directory: Path | None, build: Callable[[], Entry]) -> Entry:
        if key in self.memory:
            STATS.memory_hits += 1
            return self.memory[key]
        folder = directory or default_cache_dir()
        entry = self._load(key, folder)
        if entry is not None:
            STATS.disk_hits += 1
        else:
            STATS.compiles += 1
            entry = build()
            self._store(key, folder, entry)
        self.memory[key] = entry
        return entry

    def _load(self, key: str, folder: Path) -> Entry | None:
        import tvm

        meta_path = folder / f"{key}.json"
        if not meta_path.exists():
            return None
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("v") != CACHE_VERSION or meta.get("key") != key or meta.get("tvm") != tvm.__version__:
                raise ValueError("written by another tunebench or TVM version")
            entry = Entry(meta["runner"], int(meta["tasks"]), list(meta["applied"]), lowering=str(meta["lowering"]), flop=float(meta["flop"]))
            if entry.runner == "tvm":
                entry.module = tvm.runtime.load_module(str(folder / f"{key}.so"))
            elif entry.runner != "pytorch":
                raise ValueError(f"unknown runner {entry.runner!r}")
            return entry
        except Exception as e:  # json, OS, and TVM loader errors alike mean: rebuild
            warnings.warn(f"tunebench cache entry {meta_path} is unusable ({type(e).__name__}: {e}); rebuilding it", CacheWarning, stacklevel=4)
            return None

    def _store(self, key: str, folder: Path, entry: Entry) -> None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if entry.runner == "tvm":
                tmp_so = folder / f".{key}.{os.getpid()}.tmp.so"
                entry.module.export_library(str(tmp_so))
                os.replace(tmp_so, folder / f"{key}.so")
            tmp_meta = folder / f".{key}.{os.getpid()}.tmp.json"
            tmp_meta.write_text(json.dumps(entry.meta(key)))
            os.replace(tmp_meta, folder / f"{key}.json")
        except Exception as e:  # disk full, read-only dir, linker failure: serving goes on from memory
            warnings.warn(f"cannot write the tunebench cache in {folder} ({e}); the build is kept in memory only", CacheWarning, stacklevel=4)


CACHE = CompileCache()
