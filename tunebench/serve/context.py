"""Which tuning records serving uses: ``apply_history_best`` blocks and a script-wide ``enable``.

The role ``autotvm.apply_history_best`` and ``torch_tvm.enable()`` played: compilation reads the
active ``ServingConfig`` when it happens, not when ``torch.compile`` was called, so a model
compiled lazily on its first call inside the block uses the block's records. Configs live in a
``ContextVar`` so threads and asyncio tasks each see their own block.

A server may open a block per request: a config is then made once per log content and settings,
not per block. Reading a log's digest and ranking its records took 165 ms per block (ResNet18 avx2
log, AMD EPYC Zen 3, loaded) against a 40 ms call, and every block's config, holding its parsed
log, was kept by the graphs built for it. Now a block whose log files (by size and modification
time), target, settings and host match a live config gets that config back, and configs with
equal content share one ``token``, the key the backend files compiled graphs under. "Live" means
held by something: a compiled graph, an open block. The memo holds configs weakly, so its bound is
the backend's (graphs live as long as the compile cache holds their builds).
"""

from __future__ import annotations

import hashlib
import os
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import TunebenchError

FALLBACKS = ("untuned", "never")
LogPaths = str | os.PathLike[str] | Iterable[str | os.PathLike[str]]


@dataclass(frozen=True)
class ServingConfig:
    """Records, target and build settings for every compilation while the config is active.

    ``fallback="untuned"`` runs in PyTorch any subgraph with a task lacking a record (untuned TVM
    kernels are tens of times slower than PyTorch); ``"never"`` runs every lowerable subgraph in TVM.
    ``best`` holds only records usable on this target and host; ``fingerprint`` hashes them for
    compile-cache keys, and ``token`` hashes everything a compiled graph depends on (``build_text``,
    threads, cache folder): configs with equal tokens are served by the same graphs.
    """

    target: Any  # TargetSpec
    log: Any = None  # HistoryLog | None
    best: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""
    opt_level: int = 3
    fallback: str = "untuned"
    cache_dir: Path | None = None
    num_threads: int | None = None
    winograd: bool = False  # let conv shapes whose Winograd records win run as Winograd (choose.choose_lowering)
    token: str = ""

    @property
    def build_text(self) -> str:
        """What of the config a build depends on: target, records (by fingerprint), build and fallback policy."""
        return f"{self.target.key()}|{self.fingerprint}|{self.opt_level}|{self.fallback}|{self.winograd}"


_made: weakref.WeakValueDictionary[tuple[Any, ...], ServingConfig] = weakref.WeakValueDictionary()  # by what was asked
_alike: weakref.WeakValueDictionary[str, ServingConfig] = weakref.WeakValueDictionary()  # by token


def make_config(
    logs: LogPaths | Any | None = None,
    target: Any = None,
    *,
    opt_level: int = 3,
    fallback: str = "untuned",
    cache_dir: str | os.PathLike[str] | None = None,
    num_threads: int | None = None,
    winograd: bool = False,
) -> ServingConfig:
    """Validate settings and read the logs (or take a ``HistoryLog``) once, as ``digest`` reduces them.

    Records for another CPU model, or an ISA this host lacks, are dropped here with a
    ``ForeignRecordWarning``: applying them could end in an illegal instruction. A config asked for
    again while the first is live comes back as it was (module docstring), warnings not repeated.
    """
    from ..logs.records import HistoryLog

    check_fallback(fallback)
    if not isinstance(opt_level, int) or not 0 <= opt_level <= 3:
        raise TunebenchError(f"opt_level must be 0, 1, 2 or 3, got {opt_level!r}")
    if num_threads is not None and (not isinstance(num_threads, int) or num_threads < 1):
        raise TunebenchError(f"num_threads must be a positive integer, got {num_threads!r}")
    settings = (opt_level, fallback, Path(cache_dir) if cache_dir is not None else None, num_threads, bool(winograd))
    asked = None if isinstance(logs, HistoryLog) or logs is None else _asked(logs, target, settings)
    cfg = _made.get(asked) if asked is not None else None
    if cfg is None:
        made = _make(logs, target, *settings)
        cfg = _alike.setdefault(made.token, made)  # equal content: the live config its graphs are filed under
        if asked is not None:
            _made[asked] = cfg
    return cfg


def _asked(logs: LogPaths, target: Any, settings: tuple[Any, ...]) -> tuple[Any, ...]:
    """What a config made from log files depends on, cheap to compute: each file by path, size and
    modification time (a tune appending to it makes another config), the arguments, and the host."""
    from ..logs.records import log_files
    from ..target import host_key

    files = []
    for path in log_files(logs):
        st = path.stat()
        files.append((os.path.abspath(path), st.st_size, st.st_mtime_ns))
    return (tuple(files), repr(target), settings, host_key())


def _make(logs: Any, target: Any, opt_level: int, fallback: str, cache_dir: Path | None, num_threads: int | None, winograd: bool) -> ServingConfig:
    """Read the logs (or take a ``HistoryLog``) as ``digest`` reduces them, pick the best usable records, key the result."""
    from ..logs.records import HistoryLog
    from ..target import resolve_target
    from .choose import best_records, target_for_log
    from .digest import read_for_serving

    log = logs if isinstance(logs, HistoryLog) or logs is None else read_for_serving(logs, cache_dir)
    spec = resolve_target(target if target is not None else target_for_log(log))
    best = best_records(log, spec) if log is not None and log.records else {}
    # stand-ins (``choose.stand_ins``) are chosen by the recorded workloads' task names: part of what a build depends on
    ids = sorted(f"{r.identity()}|{log.workloads[k].task if k in log.workloads else ''}" for k, r in best.items()) if log is not None else []
    cfg = ServingConfig(
        target=spec,
        log=log,
        best=best,
        fingerprint=hashlib.sha256("\n".join(ids).encode()).hexdigest(),
        opt_level=opt_level,
        fallback=fallback,
        cache_dir=cache_dir,
        num_threads=num_threads,
        winograd=winograd,
    )
    token = hashlib.sha256(f"{cfg.build_text}|{num_threads}|{cache_dir}".encode()).hexdigest()
    return replace(cfg, token=token)


def check_fallback(fallback: str) -> None:
    """Refuse a fallback policy that is not one of ``FALLBACKS`` (commands check before building the model)."""
    if fallback not in FALLBACKS:
        raise TunebenchError(f"fallback {fallback!r} is not one of: {', '.join(FALLBACKS)}")


_default: ServingConfig | None = None
_active: ContextVar[ServingConfig | None] = ContextVar("tunebench_serving_config", default=None)


def in_block() -> bool:
    """Whether an ``apply_history_best`` block (or ``activate``) is active here: outside one, a shape
    already compiled keeps the build it got (``backend.GraphDispatcher.prepare``)."""
    return _active.get() is not None


def current() -> ServingConfig:
    """The innermost ``apply_history_best`` block's config, else ``enable``'s, else no records."""
    global _default
    cfg = _active.get()
    if cfg is not None:
        return cfg
    if _default is None:
        _default = make_config()
    return _default


@contextmanager
def apply_history_best(logs: LogPaths | Any, target: Any = None, **settings: Any) -> Iterator[ServingConfig]:
    """Compile with the best record per workload from ``logs`` (file, directory, list, or a read
    ``HistoryLog``) inside the block."""
    with activate(make_config(logs, target, **settings)) as cfg:
        yield cfg


@contextmanager
def activate(cfg: ServingConfig) -> Iterator[ServingConfig]:
    """Make ``cfg`` the active config again inside the block.

    Graphs are built per config content (its ``token``), so re-entering a config finds them, as a new
    ``apply_history_best`` block with the same logs and settings does. ``tunebench bench`` runs each
    call of a column inside its config this way.
    """
    token = _active.set(cfg)
    try:
        yield cfg
    finally:
        _active.reset(token)


apply = apply_history_best


def enable(logs: LogPaths | None = None, target: Any = None, **settings: Any) -> ServingConfig:
    """Set the records and settings for the rest of the script (``torch_tvm.enable()`` style)."""
    global _default
    _default = make_config(logs, target, **settings)
    return _default


def disable() -> None:
    """Forget what ``enable`` set: compilation goes back to no records and default settings."""
    global _default
    _default = None
