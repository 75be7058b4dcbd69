"""Serving's view of a history log: its best record per (workload, target, protocol, machine class), cached on disk.

Serving needs only records that can be a best somewhere (``share.best_k(records, 1)``): the same
bests for every host and target, the same foreign-record warnings, the same lowering choice. A
shipped log holds thousands of records whose traces take seconds to parse (the ResNet18 avx2 log,
8431 records: ~7 s of JSON decoding on a 2-core Zen 4, most of a warm start). So the first process
to serve a log writes this digest to ``<cache dir>/digests/``, named by the log's resolved path and
keyed by its size and modification time; later processes read a few hundred records instead. A log
that changes (a ``tune`` appended to it) gets a new digest, replacing the old one.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Iterable
from pathlib import Path

from ..logs.records import HistoryLog, LogWarning, log_files, read_log, write_log_atomic
from ..logs.share import best_k
from .cache import PREFIX, CacheWarning, default_cache_dir

DIGEST_VERSION = 1


def read_for_serving(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], cache_dir: str | os.PathLike[str] | None = None) -> HistoryLog:
    """The logs at ``paths`` reduced to what serving reads (see module docstring); each file's digest
    is read from the cache when it is current, else made and stored."""
    out = HistoryLog()
    for path in log_files(paths):
        out.extend(_digest(path, Path(cache_dir or default_cache_dir()) / "digests"))
    return out


def _digest(path: Path, folder: Path) -> HistoryLog:
    st = path.stat()
    name = PREFIX + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:24]  # ``cache.DIGEST_FILE``: cleared by ``cache clear``
    version = hashlib.sha256(f"{st.st_size}|{st.st_mtime_ns}|{DIGEST_VERSION}".encode()).hexdigest()[:16]
    current = folder / f"{name}.{version}.jsonl.gz"
    if current.is_file():
        with warnings.catch_warnings():
            warnings.simplefilter("error", LogWarning)  # a damaged digest is rebuilt, not served from
            try:
                return read_log(current)
            except Exception as e:  # a torn or corrupt digest: parse the log again
                warnings.warn(f"tunebench: log digest {current} is unusable ({e}); reading {path} again", CacheWarning, stacklevel=4)
    full = read_log(path)
    top = best_k(full.records, 1)
    digest = HistoryLog(workloads={r.key: full.workloads[r.key] for r in top if r.key in full.workloads}, records=top)
    try:
        for old in folder.glob(f"{name}.*.jsonl.gz"):
            old.unlink(missing_ok=True)
        write_log_atomic(current, digest)
    except OSError as e:  # a read-only cache: serve from the parsed log, parse again next time
        warnings.warn(f"tunebench: cannot write the log digest in {folder} ({e})", CacheWarning, stacklevel=4)
    digest.problems = full.problems
    return digest
