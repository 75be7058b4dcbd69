"""Benchmark: PyTorch eager, torch.compile (inductor), tunebench untuned and tunebench tuned, in one process.

Why interleaved: on a shared, noisy machine the load drifts over seconds; timing A B C A B C ...
exposes every column to the same drift, so the ratios hold even when absolute numbers wander.
Why medians and percentiles: one preempted call should not move the result. Why outputs are
checked against eager before any time counts: a fast wrong kernel is not a result, so such a
column is reported as failed and never timed. Compile time (inductor's first call, TVM's
lowering and build) is kept apart from run time.
"""

from __future__ import annotations

import datetime
import gc
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import TunebenchError

EAGER, INDUCTOR, UNTUNED, TUNED = "eager", "inductor", "tunebench-untuned", "tunebench-tuned"
# Naive (unscheduled) TVM kernels run tens of times slower than eager: above this much work one
# untuned call takes seconds, so that column is opt-in (--untuned).
UNTUNED_GFLOP_LIMIT = 0.5
# float32 with a different reduction order (blocked, vectorized, FMA) differs in the last bits;
# 1e-3 relative + 1e-3 absolute admits that and rejects a wrong schedule or layout.
RTOL, ATOL = 1e-3, 1e-3
# A sample shorter than this is mostly timer and scheduler noise: tiny models call several times per sample.
MIN_SAMPLE_S = 1e-3
SPEEDUP = "eager_median / column_median (>1: faster than eager)"
# --torch-isa: the environment oneDNN reads when PyTorch loads it, capping the instruction set of
# its convolutions and matmuls (most of a CNN's time). On a host whose AVX-512 FMAs are twice as wide
# as AVX2's, eager runs AVX-512 kernels; capping them gives the same-ISA comparison for an avx2 log.
# ATen's own cap (ATEN_CPU_CAPABILITY=avx2) is left alone: with it, torch 2.13's inductor returned
# NaN for a two-conv model on this project's machine. The JSON records ATen's capability.
TORCH_ISA = {"avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2"}, "avx512": {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}}


class _Skip(Exception):
    """A column that cannot run here; its message is the reason shown."""


@dataclass
class Column:
    """One contender: how to call it, and what the benchmark learned about it."""

    name: str
    status: str = "ok"  # ok | skipped | failed
    reason: str = ""
    compile_s: float | None = None
    coverage: str | None = None
    max_abs_err: float | None = None
    calls_per_sample: int = 1
    times: list[float] = field(default_factory=list)  # seconds per call, one entry per sample
    fn: Callable[[], Any] | None = field(default=None, repr=False)

    def skip(self, reason: str) -> None:
        self.status, self.reason, self.fn = "skipped", reason, None

    def fail(self, reason: str) -> None:
        self.status, self.reason, self.fn = "failed", reason, None

    def percentile(self, q: float) -> float | None:
        import numpy as np

        return float(np.percentile(self.times, q)) if self.times else None

    @property
    def median(self) -> float | None:
        return self.percentile(50)


@dataclass
class BenchResult:
    """Everything one benchmark run measured, plus what it depends on (for tracking over time)."""

    model: str
    batch: int
    input_shapes: list[list[int]]
    target: dict[str, Any]
    threads: dict[str, int]
    flop: float
    flop_source: str
    iters: int
    settle: int  # untimed calls of a column right before each of its samples
    warmup: int
    log: str | None
    columns: list[Column]
    torch_isa: dict[str, str] = field(default_factory=dict)  # the caps --torch-isa set, and ATen's capability
    lower_s: float | None = None
    command: str | None = None
    date: str = field(default_factory=lambda: datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"))
    host: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    def speedup(self, col: Column) -> float | None:
        """eager median / this column's median: above 1 means faster than eager."""
        eager = self.column(EAGER).median
        return eager / col.median if eager and col.median else None

    def gflops(self, col: Column) -> float | None:
        return self.flop / col.median / 1e9 if col.median and self.flop else None

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": 1,
            "date": self.date,
            "command": self.command,
            "host": self.host,
            "versions": self.versions,
            "model": self.model,
            "batch": self.batch,
            "input_shapes": self.input_shapes,
            "target": self.target,
            "threads": self.threads,
            # libgomp's wait policy moves eager by ~50% here (PASSIVE slows it, an explicit ACTIVE spins
            # against TVM's pool): the numbers mean nothing without it
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset (libgomp default)"),
            "torch_isa": self.torch_isa,
            "flop": self.flop,
            "flop_source": self.flop_source,
            "iters": self.iters,
            "warmup": self.warmup,
            "settle": self.settle,
            "log": self.log,
            "lower_s": self.lower_s,
            "tolerance": {"rtol": RTOL, "atol": ATOL},
            "speedup_definition": SPEEDUP,
            "columns": [
                {
                    "name": c.name,
                    "status": c.status,
                    "reason": c.reason,
                    "compile_s": c.compile_s,
                    "coverage": c.coverage,
                    "max_abs_err": c.max_abs_err,
                    "calls_per_sample": c.calls_per_sample,
                    "median_s": c.median,
                    "p10_s": c.percentile(10),
                    "p25_s": c.percentile(25),
                    "p75_s": c.percentile(75),
                    "p90_s": c.percentile(90),
                    "gflops": self.gflops(c),
                    "speedup_vs_eager": self.speedup(c),
                    "times_s": c.times,
                }
                for c in self.columns
            ],
        }


def set_threads(threads: int) -> dict[str, int]:
    """Give torch and TVM the same thread count, and return what each actually uses.

    TVM alone would take half the hardware threads on x86, a handicap against torch.
    """
    import torch

    from .dispatch import set_tvm_threads

    torch.set_num_threads(threads)
    return {"torch": torch.get_num_threads(), "tvm": set_tvm_threads(threads)}


def with_batch(inputs: tuple[Any, ...], batch: int | None) -> tuple[Any, ...]:
    """The example inputs with batch dimension ``batch``: fresh seeded data, not copies of one row,
    so a kernel that mixes up rows shows in the output check."""
    import torch

    if batch is None or all(x.shape[0] == batch for x in inputs):
        return inputs
    if batch < 1:
        raise TunebenchError(f"--batch must be at least 1, got {batch}")
    gen = torch.Generator().manual_seed(0)
    out = []
    for x in inputs:
        shape = (batch, *x.shape[1:])
        if x.dtype.is_floating_point:
            out.append(torch.randn(shape, generator=gen, dtype=x.dtype))
        else:
            out.append(torch.randint(0, int(x.max()) + 1, shape, generator=gen, dtype=x.dtype))
    return tuple(out)


def count_flops(module: Any, inputs: tuple[Any, ...]) -> float:
    """FLOP of one forward pass as PyTorch's FlopCounterMode counts them (matmuls and convs)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(*inputs)
    return float(counter.get_total_flops())


def _tensors(out: Any) -> list[Any]:
    if hasattr(out, "shape"):
        return [out]
    return [t for o in out for t in _tensors(o)]


def compare(out: Any, ref: Any) -> tuple[bool, float, str]:
    """(matches, max abs error, why not) of an output against eager's, at RTOL/ATOL."""
    import torch

    got, want = _tensors(out), _tensors(ref)
    if len(got) != len(want):
        return False, float("inf"), f"{len(got)} outputs, eager gives {len(want)}"
    err = 0.0
    for g, w in zip(got, want, strict=True):
        if tuple(g.shape) != tuple(w.shape):
            return False, float("inf"), f"output shape {tuple(g.shape)}, eager gives {tuple(w.shape)}"
        g, w = g.to(w.dtype), w
        err = max(err, float((g - w).abs().max()) if w.numel() else 0.0)
        if not torch.allclose(g, w, rtol=RTOL, atol=ATOL):
            return False, err, f"output differs from eager (max abs err {err:.3g} > rtol {RTOL:g}, atol {ATOL:g})"
    return True, err, ""


def _first_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0]}" if msg else type(e).__name__


def run_bench(
    model: str,
    *,
    log: str | Path | None = None,
    batch: int | None = None,
    threads: int | None = None,
    target: str | None = None,
    iters: int = 30,
    warmup: int = 3,
    settle: int = 0,
    winograd: bool = False,
    untuned: bool | None = None,
    torch_isa: str | None = None,
    command: str | None = None,
) -> BenchResult:
    """Benchmark ``model`` (zoo name or ``file.py:factory``) in the four columns.

    ``untuned=None`` runs the untuned TVM column only for models under UNTUNED_GFLOP_LIMIT.
    ``torch_isa`` (a ``TORCH_ISA`` key) caps PyTorch's instruction set; torch must not be imported yet.
    """
    isa_env = _cap_torch_isa(torch_isa)
    import torch

    from .dispatch import target_for_log
    from .records import read_log
    from .target import host_fingerprint, resolve_target
    from .zoo import get_model

    if iters < 1:
        raise TunebenchError(f"--iters must be at least 1, got {iters}")
    history = read_log(log) if log is not None else None  # a bad path fails now, not after compiling
    spec = resolve_target(target if target is not None else target_for_log(history), threads)
    thread_counts = set_threads(spec.num_cores)
    module, inputs = get_model(model)
    inputs = with_batch(inputs, batch)
    with torch.no_grad():
        ref = module(*inputs)
    flop, flop_source = count_flops(module, inputs), "torch FlopCounterMode"

    eager, inductor, untuned_col, tuned = Column(EAGER), Column(INDUCTOR), Column(UNTUNED), Column(TUNED)
    eager.fn, eager.compile_s = (lambda: module(*inputs)), 0.0
    inductor.fn = _inductor(module, inputs)

    lower_s, tasks_flop = _tvm_columns(module, inputs, spec, history, flop, untuned, untuned_col, tuned, winograd)
    if not flop and tasks_flop:  # e.g. a model of ops FlopCounterMode does not count
        flop, flop_source = tasks_flop, "TVM task FLOP sum"

    columns = [eager, inductor, untuned_col, tuned]
    with torch.no_grad():
        _check(columns, ref)
        _time(columns, iters, warmup, settle)
    return BenchResult(
        model=model,
        batch=int(inputs[0].shape[0]),
        input_shapes=[list(x.shape) for x in inputs],
        target=dict(spec.config),
        threads=thread_counts,
        flop=flop,
        flop_source=flop_source,
        iters=iters,
        settle=settle,
        warmup=warmup,
        log=str(log) if log is not None else None,
        columns=columns,
        lower_s=lower_s,
        command=command,
        host=host_fingerprint(),
        versions=_versions(),
        torch_isa={**isa_env, "aten_capability": torch.backends.cpu.get_cpu_capability()},
    )


def _cap_torch_isa(isa: str | None) -> dict[str, str]:
    """Set the environment that caps PyTorch's ISA; returns it (empty without ``isa``)."""
    if isa is None:
        return {}
    if isa not in TORCH_ISA:
        raise TunebenchError(f"unknown --torch-isa {isa!r}; choose one of: {', '.join(TORCH_ISA)}")
    env = TORCH_ISA[isa]
    if "torch" in sys.modules and any(os.environ.get(k) != v for k, v in env.items()):
        raise TunebenchError("--torch-isa must be set before torch is imported: run the bench in a fresh process")
    os.environ.update(env)
    return dict(env)


def _inductor(module: Any, inputs: tuple[Any, ...]) -> Callable[[], Any]:
    """torch.compile compiles on the first call; _check times that call as the compile time."""
    import torch

    compiled = torch.compile(module, backend="inductor")
    return lambda: compiled(*inputs)


def _tvm_columns(
    module: Any,
    inputs: tuple[Any, ...],
    spec: Any,
    history: Any,
    flop: float,
    untuned: bool | None,
    untuned_col: Column,
    tuned: Column,
    winograd: bool = False,
) -> tuple[float | None, float]:
    """Lower once (shared by both TVM columns), then build each; returns (lowering secs, task FLOP sum).

    The ahead-of-time path (``lower_model`` + ``compile_model``) is the one records are known to
    apply to; each column's compile time is lowering plus its own build.
    """
    from .api import lower_model
    from .dispatch import compile_model

    if untuned is False:
        untuned_col.skip("--no-untuned")
    elif untuned is None and flop > UNTUNED_GFLOP_LIMIT * 1e9:
        untuned_col.skip(f"{flop / 1e9:.2f} GFLOP > {UNTUNED_GFLOP_LIMIT}: naive kernels are tens of times slower; pass --untuned")
    if history is None:
        tuned.skip("no --log given")
    if untuned_col.status == "skipped" and tuned.status == "skipped":
        return None, 0.0
    try:
        t0 = time.perf_counter()
        lowered = lower_model(module, spec, example_inputs=inputs)
        lower_s = time.perf_counter() - t0
    except Exception as e:  # any lowering failure costs both TVM columns, not the benchmark
        for col in (untuned_col, tuned):
            if col.status == "ok":
                col.skip(f"lowering failed: {_first_line(e)}")
        return None, 0.0
    for col, log in ((untuned_col, None), (tuned, history)):
        if col.status != "ok":
            continue
        try:
            t0 = time.perf_counter()
            compiled = compile_model(lowered.relax_mod, spec, log, source=lowered.source, layout=lowered.layout, winograd=winograd)
            col.compile_s = lower_s + time.perf_counter() - t0
        except Exception as e:  # a build that fails is a column that cannot run
            col.skip(f"build failed: {_first_line(e)}")
            continue
        col.fn = lambda c=compiled: c(*inputs)
        col.coverage = f"{compiled.coverage}, {compiled.lowering}" if log is not None else str(compiled.coverage)
    return lower_s, sum(t.total_flop for t in lowered.tasks)


def _check(columns: list[Column], ref: Any) -> None:
    """First call of each column: compile time where compilation is lazy, then the output check."""
    for col in columns:
        if col.fn is None:
            continue
        try:
            t0 = time.perf_counter()
            out = col.fn()
            first = time.perf_counter() - t0
        except Exception as e:  # e.g. inductor without a working C++ toolchain
            col.skip(f"cannot run: {_first_line(e)}")
            continue
        if col.compile_s is None:
            col.compile_s = first
        ok, col.max_abs_err, why = compare(out, ref)
        if not ok:
            col.fail(why)


def _time(columns: list[Column], iters: int, warmup: int, settle: int = 0) -> None:
    """Warm up, then time one sample per column per round, rounds interleaved (A B C A B C ...).

    ``settle`` untimed calls precede each sample: the first call after another column also pays
    for that column's runtime winding down (libgomp's threads spin for a while after each parallel
    region, TVM's pool likewise), which a process running one of them alone never pays.
    """
    live = [c for c in columns if c.fn is not None]
    for col in live:
        warm = []
        for _ in range(max(warmup, 1)):
            t0 = time.perf_counter()
            col.fn()  # type: ignore[misc]
            warm.append(time.perf_counter() - t0)
        col.calls_per_sample = max(1, math.ceil(MIN_SAMPLE_S / max(min(warm), 1e-9)))
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a collection inside one sample is noise the other columns did not pay
    try:
        for _ in range(iters):
            for col in live:
                for _ in range(settle):
                    col.fn()  # type: ignore[misc]
                t0 = time.perf_counter()
                for _ in range(col.calls_per_sample):
                    col.fn()  # type: ignore[misc]
                col.times.append((time.perf_counter() - t0) / col.calls_per_sample)
    finally:
        if gc_was_enabled:
            gc.enable()


def _versions() -> dict[str, str]:
    import torch
    import tvm

    from . import __version__

    return {"torch": torch.__version__, "tvm": tvm.__version__, "tunebench": __version__}


def write_json(result: BenchResult, path: str | Path) -> None:
    """Write the result as JSON (parent folders created), for tracking numbers over time."""
    import json

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result.to_json(), indent=2) + "\n")


def table(result: BenchResult) -> Any:
    """The result as a rich table: one row per column, skipped and failed ones with their reason."""
    from rich.table import Table

    shapes = ", ".join("x".join(map(str, s)) for s in result.input_shapes)
    settle = f", {result.settle} untimed settling call(s) before each sample" if result.settle else ""
    if result.torch_isa.get("ONEDNN_MAX_CPU_ISA"):
        settle += f", PyTorch's oneDNN capped at {result.torch_isa['ONEDNN_MAX_CPU_ISA']}"
    t = Table(
        title=f"{result.model} ({shapes}), {result.threads['torch']} torch / {result.threads['tvm']} TVM threads, {result.iters} interleaved rounds{settle}",
        caption=f"speedup = {SPEEDUP}; {result.flop / 1e6:.1f} MFLOP per call ({result.flop_source})",
    )
    for name in ("column", "status", "compile s", "median ms", "p10-p90 ms", "GFLOP/s", "speedup", "note"):
        t.add_column(name, justify="left" if name in ("column", "status", "note") else "right")
    for c in result.columns:
        if c.status != "ok":
            colour = "yellow" if c.status == "skipped" else "red"
            t.add_row(c.name, f"[{colour}]{c.status}[/{colour}]", _fmt(c.compile_s, "{:.1f}"), "", "", "", "", c.reason)
            continue
        p10, p90 = c.percentile(10), c.percentile(90)
        t.add_row(
            c.name,
            "ok",
            _fmt(c.compile_s, "{:.1f}"),
            _fmt(c.median and c.median * 1e3, "{:.3f}"),
            f"{p10 * 1e3:.3f}-{p90 * 1e3:.3f}" if p10 is not None and p90 is not None else "",
            _fmt(result.gflops(c), "{:.1f}"),
            _fmt(result.speedup(c), "{:.2f}x"),
            c.coverage or "",
        )
    return t


def _fmt(value: float | None, spec: str) -> str:
    return spec.format(value) if value is not None else ""
