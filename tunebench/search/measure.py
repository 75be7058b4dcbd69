"""Builder and runner: compile candidate schedules and time them, locally or on an RPC fleet.

MetaSchedule's ``LocalBuilder`` starts a fresh process pool for every batch (its source blames a
memory leak), and each new worker's first build imports ``tvm.s_tir.tensor_intrin``, which took
tens of seconds (see ``import_tensor_intrinsics``). ``PersistentBuilder`` keeps one pool, recycled
after ``recycle_every`` builds to bound the leak, and its workers import the intrinsics the fast
way once at start-up (measured by ``benchmarks/trials_per_minute.py``). What to time and for how
long is ``settings.MeasureConfig``, shared with the RPC fleet (``rpc``), which is imported only
when a search asks for it.

Starting those worker processes is most of a short search's cost: a 2-trial run of the two-conv
test model took 30-40 s with its own builder and runner, 4-5 s reusing the previous run's (AMD
EPYC Zen 3, 2 vCPUs, shared, 2026-11-29). Inside ``shared_pools()`` searches reuse them, as a
notebook or a test session running many short searches would want; outside it every search
starts and drops its own, so no idle worker outlives it.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .settings import MeasureConfig, evaluator_config

_shared: dict[tuple[Any, ...], Any] | None = None  # builders and runners by what they were made for, inside ``shared_pools``


@contextmanager
def shared_pools() -> Iterator[None]:
    """Within the block, searches reuse one builder and one local runner per configuration instead
    of starting worker processes each (module docstring: the cost); their workers stop at its end.
    A runner's workers keep the TVM thread count they were started with, so it is part of the key."""
    global _shared
    if _shared is not None:  # nested: the outer block owns them
        yield
        return
    _shared = {}
    try:
        yield
    finally:
        pools, _shared = _shared, None
        for made in pools.values():
            pool = getattr(made, "_pool", None) or getattr(made, "pool", None)
            if pool is not None:
                pool.shutdown()


def _reused(key: tuple[Any, ...], make: Callable[[], Any]) -> Any:
    if _shared is None:
        return make()
    if key not in _shared:
        _shared[key] = make()
    return _shared[key]


def make_builder(cfg: MeasureConfig) -> Any:
    """The persistent builder (module docstring: why); MetaSchedule's own ``LocalBuilder`` if ``cfg``
    turns it off. Either's workers build under the pass options serving builds with (``start_worker``)."""
    from tvm.s_tir.meta_schedule.builder import LocalBuilder

    if cfg.persistent_builder:
        return _reused(("builder", cfg.workers, cfg.build_timeout), lambda: _persistent_builder_cls()(max_workers=cfg.workers, timeout_sec=cfg.build_timeout))
    return LocalBuilder(max_workers=cfg.workers, timeout_sec=cfg.build_timeout, initializer=start_worker)


def start_worker() -> None:
    """A build worker's start-up: the tensor intrinsics (``import_tensor_intrinsics``), and the pass
    options of ``taps.build_config`` for every build it runs, so candidates are timed as served."""
    from ..lowering.taps import enter_build_config

    import_tensor_intrinsics()
    enter_build_config()


def make_runner(cfg: MeasureConfig) -> Any:
    """A local runner, or the fleet's when ``cfg.rpc`` names a tracker (``rpc`` imported only then)."""
    from tvm.s_tir.meta_schedule.runner import LocalRunner

    if cfg.rpc:
        from .rpc import make_rpc_runner

        return make_rpc_runner(cfg)
    key = ("runner", cfg.protocol, cfg.repeat, cfg.min_repeat_ms, cfg.run_timeout, os.environ.get("TVM_NUM_THREADS"))
    return _reused(key, lambda: LocalRunner(timeout_sec=cfg.run_timeout, evaluator_config=evaluator_config(cfg), f_alloc_argument=alloc_arguments))


def alloc_arguments(device: Any, args_info: list[list[Any]], alloc_repeat: int) -> list[list[Any]]:
    """A candidate's inputs as MetaSchedule's runner makes them (random floats), but integer tensors
    zero-filled: they are indices (BERT's embedding ``take`` tasks), and random int64 indices read out
    of bounds and killed the runner process, so such a task never got a successful record."""
    import numpy as np
    from tvm.s_tir.meta_schedule.runner.local_runner import default_alloc_argument

    repeated = default_alloc_argument(device, args_info, alloc_repeat)
    for args in repeated:
        for arg, (kind, dtype, shape) in zip(args, args_info, strict=True):
            if kind == "TENSOR" and ("int" in str(dtype) or str(dtype) == "bool"):
                arg.copyfrom(np.zeros([int(d) for d in shape], dtype=str(dtype)))
    return repeated


def import_tensor_intrinsics() -> None:
    """Register the x86 tensor intrinsics MetaSchedule's CPU rules name (VNNI, AVX-512 and AMX dot
    products), and only those, where ``TuneContext`` and every build worker import all of
    ``tvm.s_tir.tensor_intrin``.

    The package imports every backend's intrinsics, CUDA's alone ~200 TVMScript functions: 5.0 s in
    a process with torch even with the fix below, paid by each tuning run and each build worker
    (AMD EPYC Zen 3). It is registered empty instead, then ``x86`` imported (0.8 s): MetaSchedule's
    own ``import tvm.s_tir.tensor_intrin`` finds it done.

    Each TVMScript parse also calls ``inspect.stack()``, which reads source lines for every frame
    through ``inspect.getmodule``, a scan of ``sys.modules`` per frame: with torch imported, 200 s of
    a 300 s tiny tuning run (cProfile, loaded machine). The parser only needs the frames, and a
    missing code context makes it treat a function as module-level, which every one of these is.
    """
    name = "tvm.s_tir.tensor_intrin"
    if name in sys.modules:
        return
    import tvm.s_tir

    spec = importlib.util.find_spec(name)
    assert spec is not None, name
    sys.modules[name] = tvm.s_tir.tensor_intrin = importlib.util.module_from_spec(spec)  # a package whose __init__ never runs
    real_stack = inspect.stack

    def frames_only(context: int = 1) -> list[inspect.FrameInfo]:
        frame, out = sys._getframe(1), []
        while frame is not None:
            out.append(inspect.FrameInfo(frame, frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name, None, None))
            frame = frame.f_back
        return out

    inspect.stack = frames_only  # type: ignore[assignment]
    try:
        importlib.import_module(f"{name}.x86")
    finally:
        inspect.stack = real_stack


@functools.cache
def _persistent_builder_cls() -> Any:
    """Define the builder class on first use (TVM's ``derived_object`` needs TVM imported)."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.builder import local_builder as lb
    from tvm.support.popen_pool import PopenPoolExecutor, StatusKind

    @derived_object
    class PersistentBuilder(lb.PyBuilder):
        """LocalBuilder's work, but the worker pool survives across batches (recycled after N builds:
        a search batch may build in several calls, ``driver.CHUNK``)."""

        recycle_every = 1024

        def __init__(self, max_workers: int, timeout_sec: float) -> None:
            super().__init__()
            self.max_workers, self.timeout_sec = max_workers, timeout_sec
            self.f_build = self.f_export = None
            self.initializer = start_worker  # once per worker, not once per build
            self._pool: Any = None
            self._built = 0

        def build(self, build_inputs: list[Any]) -> list[Any]:
            if self._pool is None or self._built >= self.recycle_every:
                if self._pool is not None:
                    self._pool.shutdown()
                self._pool = PopenPoolExecutor(max_workers=self.max_workers, timeout=self.timeout_sec, initializer=self.initializer)
                self._built = 0
            self._built += len(build_inputs)
            args = [(self.f_build, self.f_export, b.mod, b.target, lb._serialize_params(b.params)) for b in build_inputs]
            results = []
            for r in self._pool.map_with_error_catching(lambda x: lb._worker_func(*x), args):
                if r.status == StatusKind.COMPLETE:
                    results.append(lb.BuilderResult(r.value, None))
                elif r.status == StatusKind.TIMEOUT:
                    results.append(lb.BuilderResult(None, f"build timed out after {self.timeout_sec} s"))
                else:
                    results.append(lb.BuilderResult(None, f"build failed: {r.value}"))
            return results

    return PersistentBuilder
