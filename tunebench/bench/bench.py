"""Benchmark: PyTorch eager, torch.compile (inductor), tunebench untuned and tunebench tuned, in one process.

Why the tunebench columns go through ``torch.compile(model, backend="tunebench")`` (the tuned one
inside ``apply_history_best(log)``): that is what users run, so the bench's number is the number
they get, and ``tunebench apply`` (the same columns, strict alternation) agrees with it by
construction. The whole-model build (``build.compile_model``) is an opt-in extra column, timed
under the same protocol, to compare the two paths in one run.

Why interleaved: on a shared, noisy machine the load drifts over seconds; timing A B C A B C ...
exposes every column to the same drift, so the ratios hold even when absolute numbers wander.
Why medians and percentiles: one preempted call should not move the result. Why outputs are
checked against eager before any time counts: a fast wrong kernel is not a result, so such a
column is reported as failed and never timed. Compile time (inductor's first call, TVM's
lowering and build) is kept apart from run time.
"""

from __future__ import annotations

import dataclasses
import datetime
import gc
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import TunebenchError
from ..serve.spin import openmp_spin
from ..zoo import with_batch

EAGER, INDUCTOR, UNTUNED, TUNED = "eager", "inductor", "tunebench-untuned", "tunebench-tuned"
WHOLE = "tunebench-whole-model"
SAVED = "tunebench-saved"
ORT, OPENVINO = "onnxruntime", "openvino"  # peers.PEERS: the runtimes a user would pick instead
# What each column times, as the JSON and the table caption say it.
PATHS = {
    EAGER: "model(*inputs)",
    INDUCTOR: 'torch.compile(model, backend="inductor"), called under torch._inductor.config.patch(freezing=True)',
    UNTUNED: 'torch.compile(model, backend="tunebench") with no records and fallback "never" (naive TVM kernels)',
    TUNED: 'torch.compile(model, backend="tunebench") inside tunebench.apply_history_best(log)',
    WHOLE: "build.compile_model: the whole model lowered and built at once, no dynamo, no partitioner",
    SAVED: "tunebench.load(folder) after tunebench.save(model, inputs, folder) with the log's records: no dynamo",
    ORT: "onnxruntime.InferenceSession of torch.onnx.export(model), CPU provider, fp32",
    OPENVINO: "openvino compile_model of torch.onnx.export(model) on CPU, INFERENCE_PRECISION_HINT=f32",
}
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
    processes: list[float] = field(default_factory=list)  # ``run_alone``: the median of each of its processes, in order
    served: Any = None  # backend.Served: what ran in TVM and PyTorch, as the backend reported it
    settings: dict[str, Any] = field(default_factory=dict)  # a peer's runtime options, as it ran
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

    @property
    def fastest_process(self) -> float | None:
        """The lowest of ``processes``' medians: this host in its fast phase. Each process of a column
        runs at one of two speeds ~30% apart on the 2-core hosts here (every runtime alike, ONNX Runtime
        and TVM alone in a process included), so the pooled median says which phase most processes met."""
        return min(self.processes) if self.processes else None


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
    alone: int = 0  # rounds of ``run_alone`` (each column in its own process); 0: one process, interleaved

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    def speedup(self, col: Column) -> float | None:
        """eager median / this column's median: above 1 means faster than eager (None when eager was not timed)."""
        eager = next((c.median for c in self.columns if c.name == EAGER), None)
        return eager / col.median if eager and col.median else None

    def gflops(self, col: Column) -> float | None:
        return self.flop / col.median / 1e9 if col.median and self.flop else None

    @property
    def protocol(self) -> str:
        if self.alone:
            rounds = f"{self.alone} rounds alternated" if self.alone > 1 else "1 round"
            return f"alone: each column in its own process, {rounds}, {self.iters // self.alone} calls each"
        return protocol(self.settle)

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
            "openmp_spin": openmp_spin(),  # what actually bounds the spinning (``spin``): GOMP_SPINCOUNT overrides the policy
            "torch_isa": self.torch_isa,
            "flop": self.flop,
            "flop_source": self.flop_source,
            "iters": self.iters,
            "warmup": self.warmup,
            "settle": self.settle,
            "protocol": self.protocol,
            "log": self.log,
            "lower_s": self.lower_s,
            "tolerance": {"rtol": RTOL, "atol": ATOL},
            "speedup_definition": SPEEDUP,
            "columns": [
                {
                    "name": c.name,
                    "path": PATHS[c.name],
                    "status": c.status,
                    "reason": c.reason,
                    "compile_s": c.compile_s,
                    "coverage": c.coverage,
                    "served": dataclasses.asdict(c.served) if c.served is not None else None,
                    "settings": c.settings,
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
                    "process_medians_s": c.processes,
                    "fastest_process_s": c.fastest_process,
                }
                for c in self.columns
            ],
        }


def set_threads(threads: int) -> dict[str, int]:
    """Give torch and TVM the same thread count, and return what each actually uses.

    TVM alone would take half the hardware threads on x86, a handicap against torch.
    """
    import torch

    from ..threads import set_tvm_threads

    torch.set_num_threads(threads)
    return {"torch": torch.get_num_threads(), "tvm": set_tvm_threads(threads)}


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


def protocol(settle: int) -> str:
    """The timing protocol in words, for the table title, the JSON and ``tunebench apply``."""
    if settle:
        return f"interleaved, {settle} untimed settling call(s) before each sample"
    return "strict alternation (A B A B ..., no settling calls)"


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
    whole_model: bool = False,
    saved: bool = False,
    inductor: bool = True,
    peers: bool = False,
    peer_spin: bool = True,
    only: Collection[str] | None = None,
    fallback: str = "untuned",
    torch_isa: str | None = None,
    command: str | None = None,
    cache_dir: str | None = None,
) -> BenchResult:
    """Benchmark ``model`` (zoo name or ``file.py:factory``): eager, inductor, and tunebench as users serve it.

    ``untuned=None`` runs the untuned TVM column only under UNTUNED_GFLOP_LIMIT; ``whole_model`` adds
    the ``build.compile_model`` column, ``saved`` the ``tunebench.save``/``load`` one; ``inductor=False`` and ``fallback`` (the backend's policy for
    untuned subgraphs) serve ``tunebench apply``. ``torch_isa`` (a ``TORCH_ISA`` key) caps PyTorch's ISA.
    """
    from ..serve.context import check_fallback

    _check_counts(iters=iters, warmup=warmup, settle=settle, batch=batch, threads=threads)
    check_fallback(fallback)
    isa_env = _cap_torch_isa(torch_isa)
    import torch

    from ..target import host_fingerprint

    history, spec, module, inputs = _setup(model, log, target, threads, batch)
    picks = _Picks(untuned, inductor, whole_model, saved, peers, peer_spin, _only(only))
    thread_counts = set_threads(spec.num_cores)
    counted = count_flops(module, inputs)
    # a private compile cache: compile time is capture + lowering + build, not loading an earlier run's library
    with tempfile.TemporaryDirectory(prefix="tunebench-bench-") as private, torch.no_grad():
        ref = module(*inputs)
        serving = _Serving(spec, history, cache_dir or private, fallback, winograd)
        columns, lower_s = _columns(module, inputs, serving, counted, picks)
        _check(columns, ref)
        _time(columns, iters, warmup, settle)
    flop, flop_source = _flop(counted, columns)
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
        versions=_versions(peers),
        torch_isa={**isa_env, "aten_capability": torch.backends.cpu.get_cpu_capability()},
    )


def run_alone(model: str, *, rounds: int = 3, command: str | None = None, **options: Any) -> BenchResult:
    """``run_bench`` with each column timed alone in a fresh process, ``rounds`` rounds alternated.

    On 2 cores, runtimes in one process disturb whoever runs next (libgomp's, TVM's and ONNX Runtime's
    threads spin after their parallel regions; OpenVINO runs its own TBB pool): a process per column
    pays none of that, and alternating the rounds exposes every column to the same drift. Each
    process checks its column's output against eager before timing; ``iters`` calls per round. The
    processes share one compile cache, so a column's compile time is its first process's.
    """
    if rounds < 1:
        raise TunebenchError(f"--alone must be at least 1 round, got {rounds}")
    names = _alone_columns(options)
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}  # the column's JSON from each of its processes
    with tempfile.TemporaryDirectory(prefix="tunebench-alone-") as cache_dir:
        for _ in range(rounds):
            for name in [n for n in names if all(c["status"] == "ok" for c in runs[n])]:  # a skipped column is not retried
                doc = _child(model, {**options, "only": [name], "settle": 0, "cache_dir": cache_dir})
                runs[name].append(next(c for c in doc["columns"] if c["name"] == name))
    result = _result_from_json(doc, [_merged(n, runs[n]) for n in names])
    result.command, result.settle, result.alone = command, 0, rounds
    result.iters = options.get("iters", 30) * rounds
    return result


def _alone_columns(options: dict[str, Any]) -> list[str]:
    """The columns ``run_alone`` starts a process for, in table order: what ``run_bench`` would time
    with these options (``_Picks.timed``), each child then asked for its one column."""
    asked = {f.name: options[f.name] for f in dataclasses.fields(_Picks) if f.name in options and f.name != "only"}
    return _Picks(**asked, only=_only(options.pop("only", None))).timed(has_log=options.get("log") is not None)


def _child(model: str, options: dict[str, Any]) -> dict[str, Any]:
    """One ``run_bench`` in a fresh Python process; its result as JSON."""
    import json
    import subprocess

    code = "import json, sys; from tunebench.bench.bench import run_bench; print(json.dumps(run_bench(sys.argv[1], **json.loads(sys.argv[2])).to_json()))"
    args = {k: str(v) if isinstance(v, Path) else v for k, v in options.items()}
    proc = subprocess.run([sys.executable, "-c", code, model, json.dumps(args)], capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise TunebenchError(f"the {args['only'][0]} process failed: {tail}")
    _forward_warnings(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _forward_warnings(stderr: str) -> None:
    """Warn here what tunebench warned in a child process (its stderr is captured): without this,
    ``bench --alone`` on a machine no record was timed on never said so. Python's warning registry
    shows each message once, however many processes repeat it; other libraries' warnings stay behind."""
    import re
    import warnings

    from ..logs.records import LogWarning
    from ..serve.backend import LoweringFallbackWarning, UntunedFallbackWarning
    from ..serve.cache import CacheWarning
    from ..serve.choose import ForeignRecordWarning, ForeignTimingsWarning

    ours = {c.__name__: c for c in (LogWarning, LoweringFallbackWarning, UntunedFallbackWarning, CacheWarning, ForeignRecordWarning, ForeignTimingsWarning)}
    for name, message in re.findall(r"^\S.*?:\d+: (\w+Warning): (.*)$", stderr, flags=re.MULTILINE):
        if name in ours:
            warnings.warn(message, ours[name], stacklevel=2)


def _merged(name: str, runs: list[dict[str, Any]]) -> Column:
    """One column from its per-process runs: their samples pooled, the last run's status and reason."""
    last = runs[-1]
    col = Column(name, last["status"], last["reason"], max((r["compile_s"] or 0.0 for r in runs), default=None), last["coverage"])
    col.max_abs_err, col.settings = last["max_abs_err"], last.get("settings") or {}
    col.times = [t for r in runs for t in r["times_s"]] if last["status"] == "ok" else []
    col.processes = [float(statistics.median(r["times_s"])) for r in runs if r["times_s"]] if col.times else []
    return col


def _result_from_json(doc: dict[str, Any], columns: list[Column]) -> BenchResult:
    keys = ("model", "batch", "input_shapes", "target", "threads", "flop", "flop_source", "iters", "settle", "warmup", "log")
    result = BenchResult(**{k: doc[k] for k in keys}, columns=columns, torch_isa=doc["torch_isa"], host=doc["host"])
    result.versions = doc["versions"]
    return result


def _check_counts(**counts: int | None) -> None:
    """Refuse, before anything is imported or built, a count out of range: ``iters``, ``batch`` and
    ``threads`` (when given) at least 1, ``warmup`` and ``settle`` at least 0. Errors name the CLI option."""
    for name, value in counts.items():
        least = 0 if name in ("warmup", "settle") else 1
        if value is not None and value < least:
            raise TunebenchError(f"--{name} must be at least {least}, got {value}")


def _setup(model: str, log: str | Path | None, target: str | None, threads: int | None, batch: int | None) -> tuple[Any, Any, Any, tuple[Any, ...]]:
    """(log, target, module, inputs), the log read first: a bad log path fails before anything compiles."""
    from ..logs.records import read_log
    from ..serve.choose import target_for_log
    from ..target import resolve_target
    from ..zoo import get_model

    history = read_log(log) if log is not None else None
    spec = resolve_target(target if target is not None else target_for_log(history), threads)
    module, inputs = get_model(model)
    return history, spec, module, with_batch(inputs, batch)


def _only(names: Collection[str] | None) -> frozenset[str] | None:
    """``only`` checked against the column names: a typo must not time nothing."""
    if names is None:
        return None
    unknown = sorted(set(names) - set(PATHS))
    if unknown:
        raise TunebenchError(f"unknown column(s) {', '.join(unknown)}; columns: {', '.join(PATHS)}")
    return frozenset(names)


def _flop(counted: float, columns: list[Column]) -> tuple[float, str]:
    """(FLOP per call, where it came from): FlopCounterMode's count, else the FLOP of the TVM tasks
    the backend reported (a model of ops FlopCounterMode does not count)."""
    tasks = max((c.served.flop for c in columns if c.served is not None), default=0.0)
    return (tasks, "TVM task FLOP sum") if not counted and tasks else (counted, "torch FlopCounterMode")


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


@dataclass
class _Serving:
    """What the TVM columns share: target, log, the run's private compile cache, serving options."""

    spec: Any  # TargetSpec
    history: Any  # HistoryLog | None
    cache_dir: str
    fallback: str = "untuned"
    winograd: bool = False

    def settings(self) -> dict[str, Any]:
        """The ``apply_history_best`` settings of the columns that serve the log."""
        return {"fallback": self.fallback, "winograd": self.winograd, "cache_dir": self.cache_dir}


def _columns(module: Any, inputs: tuple[Any, ...], serving: _Serving, flop: float, picks: _Picks) -> tuple[list[Column], float | None]:
    """Every column, the TVM ones compiled (first call timed); returns them and the whole-model lowering time.

    A column ``picks`` leaves out is skipped before anything of it is built.
    """
    eager, inductor_col = Column(EAGER, compile_s=0.0), Column(INDUCTOR)
    eager.fn = lambda: module(*inputs)
    if picks.inductor:
        inductor_col.fn = _inductor(module, inputs)
    else:
        inductor_col.skip("not asked for")
    unusable = _unusable(serving.history, serving.spec)
    columns = [eager, inductor_col]
    columns.append(_untuned_column(module, inputs, serving, flop, picks.untuned) if picks.wants(UNTUNED) else _not_asked(UNTUNED))
    columns.append(_tuned_column(module, inputs, serving, unusable) if picks.wants(TUNED) else _not_asked(TUNED))
    lower_s = None
    if picks.whole_model:
        whole, lower_s = _whole_model_column(module, inputs, serving, unusable)
        columns.append(whole)
    if picks.saved:
        columns.append(_saved_column(module, inputs, serving, unusable))
    if picks.peers:
        columns += _peer_columns(module, inputs, serving, picks)
    for col in columns:
        if not picks.wants(col.name) and col.status == "ok":
            col.skip("not in --only")
    return columns, lower_s


@dataclass
class _Picks:
    """Which columns a run builds: the optional ones asked for, and ``only`` (None: all of them)."""

    untuned: bool | None = None
    inductor: bool = True
    whole_model: bool = False
    saved: bool = False
    peers: bool = False
    peer_spin: bool = True
    only: frozenset[str] | None = None

    def wants(self, name: str) -> bool:
        return self.only is None or name in self.only

    def timed(self, has_log: bool) -> list[str]:
        """The columns a run would time, in table order (an implicit untuned column is not: with a
        log it is skipped, so ``run_alone`` starts no process for it)."""
        on = {EAGER: True, INDUCTOR: self.inductor, UNTUNED: self.untuned is True, TUNED: has_log, WHOLE: self.whole_model, SAVED: self.saved}
        on |= {ORT: self.peers, OPENVINO: self.peers}
        return [n for n, yes in on.items() if yes and self.wants(n)]


def _not_asked(name: str) -> Column:
    col = Column(name)
    col.skip("not in --only")
    return col


def _peer_columns(module: Any, inputs: tuple[Any, ...], serving: _Serving, picks: _Picks) -> list[Column]:
    """ONNX Runtime and OpenVINO on the model's ONNX export, same inputs and threads, fp32 (``peers``).

    A peer not installed is skipped with the install line; the export happens once, and only if a peer runs.
    """
    from . import peers

    columns = [Column(name) for name in peers.PEERS]
    live = []
    for col in columns:
        col.settings = peers.settings(col.name, serving.spec.num_cores, picks.peer_spin)
        why = peers.missing(col.name) or ("" if picks.wants(col.name) else "not in --only")
        if why:
            col.skip(why)
        else:
            live.append(col)
    if not live:
        return columns
    t0 = time.perf_counter()
    try:
        path = peers.export_onnx(module, inputs, Path(serving.cache_dir) / "model.onnx")
    except TunebenchError as e:
        for col in live:
            col.skip(str(e))
        return columns
    export_s = time.perf_counter() - t0
    for col in live:
        t1 = time.perf_counter()
        try:
            col.fn = peers.runner(col.name, path, inputs, serving.spec.num_cores, picks.peer_spin)
        except Exception as e:  # a peer that cannot load the export (unsupported op) is a skipped column
            col.skip(f"cannot load the ONNX export: {_first_line(e)}")
            continue
        col.compile_s = export_s + time.perf_counter() - t1
    return columns


def _inductor(module: Any, inputs: tuple[Any, ...]) -> Callable[[], Any]:
    """Inductor as a PyTorch user serves a CPU model for inference: with freezing (weights folded as
    constants, convs on oneDNN with prepacked weights; bench calls under ``no_grad``), which ran ResNet18
    at 19.8-20.7 ms where the default ran 39.9 and eager 31.3-32.2 (AMD EPYC Zen 4, 2026-12-01).
    torch.compile compiles on the first call; _check times that call as the compile time. Freezing is
    patched around every call, so a recompile freezes too: ``torch.compile(options={"freezing": True})``
    did not freeze (ResNet18 32.7 ms, as the default)."""
    import torch
    from torch._inductor import config

    compiled = torch.compile(module, backend="inductor")

    def call() -> Any:
        with config.patch(freezing=True):
            return compiled(*inputs)

    return call


def _unusable(history: Any, spec: Any) -> str:
    """Why no record of ``history`` can serve ``spec`` on this host ("" when one can, or no log).

    ``choose.best_records`` decides usability; this only explains its empty answer. A log tuned
    for another CPU, or an ISA this host lacks, would otherwise give a "tuned" column of untuned code.
    """
    from ..serve.choose import best_records

    if history is None or best_records(history, spec, warn=False):
        return ""
    ok = [r for r in history.records if r.ok]
    if not ok:
        return "the log holds no successful record"
    tuned_for = sorted({str(r.target.get("mcpu") or r.target.get("kind")) for r in ok})
    lacks = sorted({f for r in ok if r.target.get("kind") == "llvm" for f in _missing(r.target)})
    why = f"; this CPU lacks {', '.join(lacks)}" if lacks else ""
    return f"no record in the log is usable here: it was tuned for {', '.join(tuned_for)}, this run's target is {spec.mcpu}{why}"


def _missing(config: dict[str, Any]) -> list[str]:
    """ISA flags this CPU lacks for ``config``; none for a target TVM cannot parse (it is unusable anyway)."""
    from ..errors import TunebenchError
    from ..target import missing_flags

    try:
        return missing_flags(config)
    except TunebenchError:
        return []


def _serve(col: Column, module: Any, inputs: tuple[Any, ...], cfg: Any) -> None:
    """Make ``col`` call ``torch.compile(module, backend="tunebench")`` with ``cfg`` active, as users do.

    The first call (dynamo capture, partitioning, lowering, build) is the compile time; what ran
    where comes from the backend (``backend.watch``). Every later call re-enters ``cfg``
    (``context.activate``), as a user's calls inside the ``apply_history_best`` block do.
    """
    import torch

    from ..serve.backend import served, watch
    from ..serve.context import activate

    compiled = torch.compile(module, backend="tunebench")

    def call() -> Any:
        with activate(cfg):
            return compiled(*inputs)

    try:
        with watch() as graphs:
            t0 = time.perf_counter()
            call()
            col.compile_s = time.perf_counter() - t0
    except Exception as e:  # a capture or build that fails is a column that cannot run
        col.skip(f"cannot compile: {_first_line(e)}")
        return
    col.fn, col.served = call, served(graphs)
    col.coverage = str(col.served)


def _untuned_column(module: Any, inputs: tuple[Any, ...], serving: _Serving, flop: float, untuned: bool | None) -> Column:
    """TVM with no records, every subgraph forced into TVM: the naive kernels tuning starts from.

    By default only for a small model run without a log. Beside a log's columns it distorted them:
    bert_tiny, Zen 4, 60 rounds with ``--settle 1``, eager ran 1.2-1.4 ms per call except for phases
    of 10-15 rounds at 15-16 ms (inductor 1.1 vs 18 ms), the TVM columns untouched; without the
    untuned column, no such phase in 60 or 100 rounds (what the naive calls leave behind was not found).
    """
    from ..serve.context import make_config

    col = Column(UNTUNED)
    if untuned is False:
        col.skip("--no-untuned")
    elif untuned is None and flop > UNTUNED_GFLOP_LIMIT * 1e9:
        col.skip(f"{flop / 1e9:.2f} GFLOP > {UNTUNED_GFLOP_LIMIT}: naive kernels are tens of times slower; pass --untuned")
    elif untuned is None and serving.history is not None:
        col.skip("with a log, only with --untuned: its naive kernels slowed the PyTorch columns beside them")
    else:
        _serve(col, module, inputs, make_config(None, serving.spec, fallback="never", cache_dir=serving.cache_dir))
    return col


def _tuned_column(module: Any, inputs: tuple[Any, ...], serving: _Serving, unusable: str) -> Column:
    """The log's best records, served as users serve them: ``torch.compile`` inside ``apply_history_best``.

    Skipped with the reason when no record can serve this host and target, or when nothing would
    run in TVM: a "tuned" row timing PyTorch (or naive kernels) would claim what did not happen.
    """
    from ..serve.context import apply_history_best

    col = Column(TUNED)
    if serving.history is None:
        col.skip("no --log given")
    elif unusable:
        col.skip(unusable)
    else:
        with apply_history_best(serving.history, serving.spec, **serving.settings()) as cfg:
            _serve(col, module, inputs, cfg)
        if col.served is not None and not col.served.tvm:
            untuned = col.served.tasks - col.served.tuned
            why = f"{untuned} task(s) have no usable record and their subgraphs stay in PyTorch" if untuned else "TVM could not build its subgraphs"
            col.skip(f"nothing runs in TVM ({col.coverage}): {why}")
    return col


def _whole_model_column(module: Any, inputs: tuple[Any, ...], serving: _Serving, unusable: str) -> tuple[Column, float | None]:
    """The whole model lowered and built at once (``build.compile_model``: no dynamo, no partitioner).

    Beside the tuned column, one run compares the two paths under one protocol. Returns the
    column and its lowering time (its compile time counts lowering and build).
    """
    from ..lowering.model import lower_model
    from ..serve.backend import Served
    from ..serve.build import compile_model

    col = Column(WHOLE)
    if serving.history is None or unusable:
        col.skip(unusable or "no --log given")
        return col, None
    try:
        t0 = time.perf_counter()
        lowered = lower_model(module, serving.spec, example_inputs=inputs, layout="nchw")
        lower_s = time.perf_counter() - t0
        compiled = compile_model(lowered.relax_mod, serving.spec, serving.history, source=lowered.source, layout=lowered.layout, winograd=serving.winograd)
        col.compile_s = time.perf_counter() - t0
    except Exception as e:  # a lowering or build that fails costs this column, not the benchmark
        col.skip(f"cannot lower or build: {_first_line(e)}")
        return col, None
    cov = compiled.coverage
    flop = sum(t.total_flop for t in cov.tasks)
    col.served = Served(1, 0, len(cov.tasks), len(cov.applied), len(cov.applied), [str(compiled.lowering)], flop, len(cov.transferred))
    col.coverage = str(col.served)
    if cov.applied:
        col.fn = lambda: compiled(*inputs)
    else:
        col.skip(f"no record of the log matches this model's tasks ({col.coverage})")
    return col, lower_s


def _saved_column(module: Any, inputs: tuple[Any, ...], serving: _Serving, unusable: str) -> Column:
    """The tuned build saved as an artifact and loaded back (``tunebench.save``, ``tunebench.load``),
    called without dynamo. Its compile time is ``save``'s build (the module exported whole, not
    dynamo's graph: another cache entry than the tuned column's), writing and loading."""
    from ..serve.backend import Served
    from ..serve.context import apply_history_best
    from ..serve.deploy import load, save

    col = Column(SAVED)
    if serving.history is None or unusable:
        col.skip(unusable or "no --log given")
        return col
    try:
        t0 = time.perf_counter()
        with apply_history_best(serving.history, serving.spec, **serving.settings()):
            manifest = save(module, inputs, Path(serving.cache_dir) / "saved")
        deployed = load(Path(serving.cache_dir) / "saved")
        col.compile_s = time.perf_counter() - t0
    except TunebenchError as e:  # split or untuned: nothing to save
        col.skip(str(e))
        return col
    col.served, col.coverage = Served(**manifest.served), manifest.coverage
    col.fn = lambda: deployed(*inputs)
    return col


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


def _versions(with_peers: bool = False) -> dict[str, str]:
    import torch
    import tvm

    from .. import __version__
    from .peers import PEERS, version

    found = {p: version(p) for p in PEERS} if with_peers else {}
    return {"torch": torch.__version__, "tvm": tvm.__version__, "tunebench": __version__} | {p: v for p, v in found.items() if v}


def write_json(result: BenchResult, path: str | Path) -> None:
    """Write the result as JSON (parent folders created), for tracking numbers over time."""
    import json

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result.to_json(), indent=2) + "\n")


def table(result: BenchResult) -> Any:
    """The result as a rich table: one row per column, skipped and failed ones with their reason."""
    from rich.markup import escape
    from rich.table import Table

    shapes = ", ".join("x".join(map(str, s)) for s in result.input_shapes)
    isa = f", PyTorch's oneDNN capped at {result.torch_isa['ONEDNN_MAX_CPU_ISA']}" if result.torch_isa.get("ONEDNN_MAX_CPU_ISA") else ""
    paths = f"{UNTUNED} and {TUNED}: {PATHS[TUNED].split(' inside')[0]} (tuned: inside apply_history_best(log))"
    if any(c.name == WHOLE for c in result.columns):
        paths += f"; {WHOLE}: {PATHS[WHOLE].split(':')[0]} (whole model)"
    if any(c.name == SAVED for c in result.columns):
        paths += f"; {SAVED}: tunebench.save, then tunebench.load (no dynamo)"
    if any(c.name in (ORT, OPENVINO) for c in result.columns):
        paths += f"\n{ORT}, {OPENVINO}: the model's ONNX export, same inputs and threads, fp32 (OpenVINO pinned to f32: bf16 on AMX hosts otherwise)"
        vs, fast = peer_ratio(result), peer_ratio(result, stat="fastest_process_s")
        paths += f"; best peer / tunebench-tuned: {vs:.2f} (>1: tunebench faster)" if vs else ""
        paths += f", {fast:.2f} by each column's fastest process" if vs and fast else ""
    threads = f"{result.threads['torch']} torch / {result.threads['tvm']} TVM threads"
    t = Table(
        title=f"{escape(result.model)} ({shapes}), {threads}, {result.iters} rounds, {result.protocol}{isa}",
        caption=f"{paths}\nspeedup = {SPEEDUP}; {result.flop / 1e6:.1f} MFLOP per call ({result.flop_source})",
    )
    alone = result.alone > 1
    for name in ("column", "status", "compile s", "median ms", "p10-p90 ms", *(["fastest process ms"] if alone else []), "GFLOP/s", "speedup", "note"):
        t.add_column(name, justify="left" if name in ("column", "status", "note") else "right")
    for c in result.columns:
        if c.status != "ok":
            colour = "yellow" if c.status == "skipped" else "red"
            t.add_row(c.name, f"[{colour}]{c.status}[/{colour}]", _fmt(c.compile_s, "{:.1f}"), "", "", *([""] if alone else []), "", "", escape(c.reason))
            continue
        p10, p90 = c.percentile(10), c.percentile(90)
        t.add_row(
            c.name,
            "ok",
            _fmt(c.compile_s, "{:.1f}"),
            _fmt(c.median and c.median * 1e3, "{:.3f}"),
            f"{p10 * 1e3:.3f}-{p90 * 1e3:.3f}" if p10 is not None and p90 is not None else "",
            *([_fmt(c.fastest_process and c.fastest_process * 1e3, "{:.3f}")] if alone else []),
            _fmt(result.gflops(c), "{:.1f}"),
            _fmt(result.speedup(c), "{:.2f}x"),
            escape(c.coverage or ""),
        )
    return t


def peer_ratio(result: BenchResult, column: str = TUNED, stat: str = "median_s") -> float | None:
    """Faster peer's median / ``column``'s median (above 1: tunebench beats both peers), None without both."""
    return faster_peer_over(result.to_json()["columns"], column, stat)


def faster_peer_over(columns: list[dict[str, Any]], column: str = TUNED, stat: str = "median_s") -> float | None:
    """The same ratio from a bench JSON file's ``columns``: one rule for the table's caption, the zoo
    table (``benchmarks/peers_table.py``) and the results page, which read it from the files. Only
    columns that ran ("ok") count; None without such a peer or ``column``. ``stat``: the pooled
    median, or with ``--alone`` each column's fastest process (``"fastest_process_s"``)."""
    ok = {c["name"]: c[stat] for c in columns if c.get("status") == "ok" and c.get(stat)}
    peer = min((ok[n] for n in (ORT, OPENVINO) if n in ok), default=None)
    return peer / ok[column] if peer and column in ok else None


def _fmt(value: float | None, spec: str) -> str:
    return spec.format(value) if value is not None else ""


@dataclass
class ApplyReport:
    """What ``tunebench apply`` prints: where subgraphs ran, records applied, error, latency and how it was timed."""

    coverage: str
    applied: int
    max_abs_error: float
    tvm_ms: float
    eager_ms: float
    protocol: str = ""
    rounds: int = 0


def apply_model(model: str, log: str | Path, target: str | None = None, fallback: str = "untuned", runs: int = 20) -> ApplyReport:
    """Serve a model with ``log``'s best records, check it against eager, time both: ``tunebench bench``'s
    eager and tuned columns under strict alternation, so ``apply`` and ``bench`` agree by construction.

    The path is the one users run, ``torch.compile(model, backend="tunebench")`` inside
    ``apply_history_best(log)``. A wrong output, or a log with nothing to serve here, is an error,
    not a line in a report.
    """
    from ..errors import TunebenchError

    if runs < 1:  # run_bench would name its own --iters
        raise TunebenchError(f"--runs must be at least 1, got {runs}")
    result = run_bench(model, log=log, target=target, iters=runs, settle=0, untuned=False, inductor=False, fallback=fallback)
    tuned, eager = result.column(TUNED), result.column(EAGER)
    if tuned.status != "ok" or tuned.median is None or eager.median is None:
        raise TunebenchError(f"{model}: tunebench {tuned.status}: {tuned.reason}")
    return ApplyReport(
        coverage=tuned.coverage or "",
        applied=tuned.served.applied,
        max_abs_error=tuned.max_abs_err or 0.0,
        tvm_ms=tuned.median * 1e3,
        eager_ms=eager.median * 1e3,
        protocol=result.protocol,
        rounds=result.iters,
    )
