"""Serving: the ``tunebench`` torch.compile backend and ``tunebench.compile`` (ahead of time).

As torch_tvm did, a captured graph is split (``tunebench.lowering.partition``, which ``tunebench tune``
partitions with too): operators the Relax torch frontend converts form TVM subgraphs, everything
else stays in PyTorch, so a model with one unsupported op still runs.

Each distinct call signature (input shapes and dtypes, the weights' storage, plus the active
``ServingConfig``, by content: its ``token``) gets its own specialized graph: exported to core ATen,
partitioned with torch.fx's ``CapabilityBasedPartitioner``, each TVM subgraph looked up in the compile cache; a graph wholly in
one TVM subgraph is remembered (``tunebench.serve.plan``), and the next process skips straight to the cache. Parameters and
buffers are bound as constants (so constant folding and tuned workloads match ``tunebench
tune``). Weights changed after compiling are caught by their version counters (``load_state_dict``,
in-place updates under ``no_grad``): the graph is rebuilt under the config it was built with, with a
``WeightsChangedWarning``. Writes through ``.data`` bypass the counter and are not seen.

Thread-safe: each signature is built once however many threads call it first, and each TVM
subgraph's VM (which keeps its call frames on the instance) serves one call at a time.

Bounded, for servers that open an ``apply_history_best`` block per request: blocks with equal
logs and settings share one graph and VM (before, each block added a graph, a VM and its parsed
log: +12 MB and 7x the call time per request, ResNet18 on the Intel emeraldrapids host). A graph
lives while the compile cache's memory holds the entries its subgraphs run (``cache.CompileCache``,
bounded like the disk): each build drops the dispatcher's graphs of entries memory let go, with the
per-config state only they used. The weights' digest (plan keys) is recomputed only when a weight changed.

Never slower by surprise: by default a subgraph with a task lacking a tuning record runs in
PyTorch (untuned TVM kernels are naive), with one warning giving the coverage;
``fallback="never"`` runs it in TVM anyway.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import TunebenchError
from ..lowering.partition import Partition, partition, static_inputs
from ..lowering.partition import relax_convertible_ops as relax_convertible_ops  # where callers have always found it
from . import keys, plan
from .cache import CACHE, STATS, Entry
from .context import ServingConfig, current, in_block, make_config
from .runtime import PlannedGraph, TvmSubgraph

OPTIONS = ("target", "logs", "cache_dir", "fallback", "num_threads", "opt_level", "winograd")


class UntunedFallbackWarning(UserWarning):
    """Subgraphs kept in PyTorch because some of their tasks have no tuning record."""


class LoweringFallbackWarning(UserWarning):
    """A subgraph TVM failed to lower or build; it runs in PyTorch instead."""


class WeightsChangedWarning(UserWarning):
    """Weights bound into a compiled graph changed since; the graph is rebuilt with the new ones."""


@dataclass
class SubgraphInfo:
    """Where one partition runs and which tuning records it got."""

    name: str
    runner: str  # "tvm" or "pytorch"
    tasks: int
    applied: list[str] = field(default_factory=list)  # workload keys with a record applied
    reason: str = ""
    lowering: str = ""  # choose.LoweringChoice as text: the conv layout (and Winograd shapes) chosen from the log
    flop: float = 0.0  # FLOP per call of its tasks
    transferred: list[str] = field(default_factory=list)  # of ``applied``: a stand-in's schedule, refitted (choose.stand_ins)
    cache_key: str = ""  # its compile-cache entry


# (addresses, version counters) of the static inputs, then (address, version) of the module's own weights
WeightState = tuple[tuple[int, ...], tuple[int, ...], tuple[tuple[int, int], ...]]


@dataclass
class CompiledGraph:
    """A graph specialized for one call signature: the partitioned module and its subgraphs.

    ``weights`` holds the static inputs (parameters) it was built with: their addresses are part
    of the dispatcher's key, and holding them keeps another model's weights from reusing them.
    ``versions`` is ``_keys`` at build time, ``config`` what it was built under (a rebuild
    for changed weights uses it again).
    """

    module: torch.fx.GraphModule
    subgraphs: list[SubgraphInfo]
    weights: tuple[Any, ...] = ()
    versions: WeightState = ((), (), ())
    config: ServingConfig | None = None

    @property
    def applied(self) -> list[str]:
        return [k for s in self.subgraphs for k in s.applied if s.runner == "tvm"]

    def coverage(self) -> str:
        return str(served([self]))


@dataclass
class Served:
    """What the backend made of a model, over every graph dynamo handed it: the coverage a
    caller (``tunebench bench``, ``tunebench apply``) reports, read from the backend, not recomputed."""

    tvm: int = 0  # subgraphs running in TVM
    pytorch: int = 0  # lowerable subgraphs kept in PyTorch (untuned tasks, or TVM failed on them)
    tasks: int = 0
    tuned: int = 0  # tasks with a record, wherever their subgraph runs
    applied: int = 0  # records in the subgraphs that run in TVM
    lowerings: list[str] = field(default_factory=list)  # of the TVM subgraphs, distinct
    flop: float = 0.0  # FLOP per call of all tasks
    transferred: int = 0  # of ``tuned``: schedules of another shape, refitted and untimed

    def __str__(self) -> str:
        layout = f", {'; '.join(self.lowerings)}" if self.lowerings else ""
        moved = f" ({self.transferred} transferred from other workloads, untimed)" if self.transferred else ""
        return f"{self.tvm}/{self.tvm + self.pytorch} subgraphs in TVM, {self.tuned}/{self.tasks} tasks tuned{moved}{layout}"


def served(graphs: Iterable[CompiledGraph]) -> Served:
    """Sum the subgraphs of ``graphs`` (a model dynamo split at graph breaks has several)."""
    out = Served()
    for s in (s for g in graphs for s in g.subgraphs):
        in_tvm = s.runner == "tvm"
        out.tvm, out.pytorch = out.tvm + in_tvm, out.pytorch + (not in_tvm)
        out.tasks, out.tuned, out.flop = out.tasks + s.tasks, out.tuned + len(s.applied), out.flop + s.flop
        out.applied += len(s.applied) if in_tvm else 0
        out.transferred += len(s.transferred)
        if in_tvm and s.lowering and s.lowering not in out.lowerings:
            out.lowerings.append(s.lowering)
    return out


_watchers: list[list[CompiledGraph]] = []


@contextmanager
def watch() -> Iterator[list[CompiledGraph]]:
    """Collect the graphs the backend serves calls with inside the block.

    ``torch.compile`` hides the backend's callable; a caller that must report what ran (bench's
    coverage column) reads it here. Dynamo may reuse a graph compiled earlier for an equal module,
    so graphs are collected when they serve a call, not when they are created.
    """
    seen: list[CompiledGraph] = []
    _watchers.append(seen)
    try:
        yield seen
    finally:
        _watchers.remove(seen)


def _build_lock() -> Any:
    """Dynamo's own compile lock (an RLock): torch.export and dynamo keep global mode and patching
    state, so a build exporting in one thread while another thread exports or dynamo-compiles
    failed ("Trying to pop empty mode stack") or hung, seen with 8 threads making their first call."""
    from torch._dynamo.convert_frame import compile_lock

    return compile_lock


def _cache_key(sub: torch.fx.GraphModule, bound: dict[int, torch.Tensor], examples: list[torch.Tensor], cfg: ServingConfig) -> str:
    """Graph code, weights (by content), input shapes/dtypes, target, records, versions and tunebench's own code."""
    weights = keys.weights_digest((f"{j}:{tuple(bound[j].shape)}:{bound[j].dtype}", bound[j]) for j in sorted(bound))
    inputs = repr([(tuple(x.shape), str(x.dtype)) for x in examples])
    return keys.key("build", sub.code, inputs, cfg.build_text, weights)


def _lower_and_build(part: Partition, cfg: ServingConfig) -> Entry:
    """Lower the partition the ways the log can serve, build the fastest (``race.fastest``: by the
    log's estimate, or timed here when the log covers several) and say how it was lowered."""
    from ..lowering import frontend
    from .choose import lowering_options
    from .race import fastest

    source = part.source()
    options = lowering_options(source, frontend.optimize(source, cfg.target), "nchw", cfg.target, cfg.log, cfg.best, cfg.winograd)
    # fallback "untuned": a partition with a task no record applies to stays in PyTorch
    won = fastest(options, cfg.target, cfg.log, cfg.best, lambda mod: _build(mod, cfg), lambda cov: not (cov.missing and cfg.fallback == "untuned"))
    coverage = won.coverage
    said = {"lowering": str(won.choice), "flop": float(sum(t.total_flop for t in coverage.tasks)), "transferred": coverage.transferred}
    if won.executable is None:
        return Entry("pytorch", len(coverage.tasks), coverage.applied, **said)
    return Entry("tvm", len(coverage.tasks), coverage.applied, won.executable, **said)


def _build(scheduled: Any, cfg: ServingConfig) -> Any:
    """The VM executable of a scheduled module; a TVM build error becomes a ``TunebenchError`` (that subgraph stays in PyTorch)."""
    import tvm

    from .build import build

    try:
        with tvm.transform.PassContext(opt_level=cfg.opt_level):
            return build(scheduled, cfg.target)
    except Exception as e:
        raise TunebenchError(f"TVM cannot build it: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}") from e


class GraphDispatcher:
    """The callable the backend returns: one ``CompiledGraph`` per call signature and config."""

    def __init__(self, gm: torch.nn.Module, static: frozenset[int], options: dict[str, Any]) -> None:
        self.gm, self.static, self.options = gm, static, options
        self._static_order = tuple(sorted(static))
        self._inputs: tuple[int, tuple[int, ...]] = (-1, ())  # ``_keys``: argument count, its non-static positions
        self.graphs: dict[tuple[Any, ...], CompiledGraph] = {}  # by (config token, signature)
        # by base config token: (base, base overridden by the options); holding the base keeps it live for make_config
        self._configs: dict[str, tuple[ServingConfig, ServingConfig]] = {}
        self._latest: dict[tuple[Any, ...], CompiledGraph] = {}  # per signature, the graph last served
        self._lock = threading.Lock()  # guards the tables above, and hands out one build lock per key
        self._building: dict[tuple[Any, ...], threading.Lock] = {}
        self._digest: tuple[WeightState, str] | None = None  # weight state, the weights' digest
        self.last: CompiledGraph | None = None

    def config(self, base: ServingConfig) -> ServingConfig:
        """``base`` (the active block or ``enable``) overridden by this compile's options."""
        if not self.options:
            return base
        found = self._configs.get(base.token)
        if found is None:
            o = self.options
            found = base, make_config(
                o.get("logs", base.log),
                o.get("target", None if "logs" in o else base.target),  # None: the target the new logs were tuned for
                opt_level=o.get("opt_level", base.opt_level),
                fallback=o.get("fallback", base.fallback),
                cache_dir=o.get("cache_dir", base.cache_dir),
                num_threads=o.get("num_threads", base.num_threads),
                winograd=o.get("winograd", base.winograd),
            )
            self._configs[base.token] = found
        return found[1]

    def prepare(self, *args: Any) -> CompiledGraph:
        """The graph for these inputs' signature under the active config, built on first sight.

        Outside any ``apply_history_best`` block, a signature already compiled keeps the build it
        was last served (the common server shape: compile and warm up in the block, serve after it);
        a signature never seen is built under ``enable``'s config, else with no records.

        Static inputs (parameters) are bound into the build as constants, so they key by address:
        dynamo hands this dispatcher a second instance of the same module class too, and that
        instance's weights must not be served by the first one's build.
        """
        base = current()
        signature, versions = self._keys(args)
        key = (base.token, *signature)
        graph = self._lookup(key)
        if graph is None or graph.versions != versions:
            graph = self._build_once(key, args, versions)
        self._latest[signature] = graph
        self.last = graph
        for seen in _watchers:
            if not any(g is graph for g in seen):
                seen.append(graph)
        return graph

    def _lookup(self, key: tuple[Any, ...]) -> CompiledGraph | None:
        """The graph built for ``key`` (config token, signature); outside any block, the one its signature was last served."""
        graph = self.graphs.get(key)
        if graph is None and not in_block():  # after the block: the kernels this shape was compiled with
            graph = self._latest.get(key[1:])
        return graph

    def _build_once(self, key: tuple[Any, ...], args: tuple[Any, ...], versions: WeightState) -> CompiledGraph:
        """Build the graph for ``key``, or rebuild it when its weights changed, once however many threads ask."""
        with self._lock:
            lock = self._building.setdefault(key, threading.Lock())
        with lock:  # a thread that waited here finds the graph the first one built
            stale = self._lookup(key)
            if stale is not None and stale.versions == versions:
                return stale
            cfg = stale.config if stale is not None and stale.config is not None else self.config(current())
            if stale is not None:
                warnings.warn(
                    "tunebench: weights bound into a compiled graph changed since it was built (load_state_dict or an in-place "
                    "update); rebuilding it with the new weights",
                    WeightsChangedWarning,
                    stacklevel=4,
                )
            with _build_lock():
                graph = self._build(args, cfg, versions)
            with self._lock:
                for k in [k for k, g in self.graphs.items() if stale is not None and g is stale] + [key]:
                    self.graphs[k] = graph
                for k in [k for k, g in self._latest.items() if stale is not None and g is stale]:
                    self._latest[k] = graph
                self._building.pop(key, None)  # a thread waiting on it finds the graph; later ones find it without
                self._forget_evicted(keep=key)
            return graph

    def _forget_evicted(self, keep: tuple[Any, ...]) -> None:
        """Drop the graphs (but ``keep``'s) running a subgraph whose entry the compile cache's memory let go,
        and the configs no graph is filed under any more: the cache's bound is theirs. Under ``_lock``."""
        self.graphs = {k: g for k, g in self.graphs.items() if k == keep or all(CACHE.holds(s.cache_key) for s in g.subgraphs if s.cache_key)}
        tokens = {k[0] for k in self.graphs}
        self._configs = {t: c for t, c in self._configs.items() if t in tokens}

    def _weights_digest(self, args: tuple[Any, ...], versions: WeightState) -> str:
        """The weights' content digest for plan keys, hashed again only when ``versions`` (each weight's
        address and version counter, ``_keys``) changed. Under the build lock."""
        if self._digest is None or self._digest[0] != versions:
            self._digest = versions, plan.weights_digest(self.gm, args, self.static)
        return self._digest[1]

    def _keys(self, args: tuple[Any, ...]) -> tuple[tuple[Any, ...], WeightState]:
        """The call's signature (the weights by address, an input by shape and dtype) and the weight
        state: address and version counter of every weight a build binds, the static inputs dynamo
        lifts and the module's own parameters and buffers (``compile`` exports the user's module itself).

        Runs on every call, over MobileNetV2's 263 lifted weights: one comprehension per field,
        not a branchy loop per argument (that loop took 0.25-0.45 ms of a 13 ms call, AMD EPYC Zen 3)."""
        static = self._static_order
        try:
            ptrs = tuple([args[i].data_ptr() for i in static])
            versions = tuple([args[i]._version for i in static])
        except (AttributeError, RuntimeError):  # a static non-tensor; an inference-mode tensor keeps no version
            ptrs = tuple(a.data_ptr() if isinstance(a, torch.Tensor) else a for a in (args[i] for i in static))
            versions = tuple(_version(args[i]) if isinstance(args[i], torch.Tensor) else -1 for i in static)
        if self._inputs[0] != len(args):  # the non-static positions, per argument count
            self._inputs = len(args), tuple(i for i in range(len(args)) if i not in self.static)
        others = tuple((tuple(a.shape), a.dtype) if isinstance(a, torch.Tensor) else a for a in (args[i] for i in self._inputs[1]))
        own = tuple((t.data_ptr(), _version(t)) for t in (*self.gm.parameters(), *self.gm.buffers()))
        return (ptrs, others), (ptrs, versions, own)

    def __call__(self, *args: Any) -> Any:
        return self.prepare(*args).module(*args)

    def _build(self, args: tuple[Any, ...], cfg: ServingConfig, versions: WeightState) -> CompiledGraph:
        weights = tuple(args[i] for i in self._static_order)
        key = plan.plan_key(self.gm, args, self.static, cfg.build_text, self._weights_digest(args, versions)) if plan.plannable(self.gm) else None
        planned = self._planned(key, cfg) if key else None
        if planned is not None:
            STATS.plan_hits += 1
            return CompiledGraph(planned[0], [planned[1]], weights, versions, cfg)
        split = partition(self.gm, args, self.static)
        fused = split.module
        subgraphs = [self._compile_partition(fused, part, cfg) for part in split.partitions]
        fused.recompile()
        if key and len(subgraphs) == 1 and subgraphs[0].runner == "tvm":
            found = plan.of_split(fused, subgraphs[0].cache_key, split.partitions[0].dynamic)
            if found is not None:
                plan.store(key, cfg.cache_dir, found)
        untuned = [s for s in subgraphs if s.runner == "pytorch" and not s.reason]
        if untuned:
            tasks, applied = sum(s.tasks for s in untuned), sum(len(s.applied) for s in untuned)
            warnings.warn(
                f"tunebench: {len(untuned)} of {len(subgraphs)} TVM subgraph(s) run in PyTorch: {applied}/{tasks} of their tasks have tuning records "
                f"for {cfg.target.name} (untuned TVM kernels are far slower). Tune the model, or pass options={{'fallback': 'never'}} to run them in TVM.",
                UntunedFallbackWarning,
                stacklevel=3,
            )
        return CompiledGraph(fused, subgraphs, weights, versions, cfg)

    def _planned(self, key: str, cfg: ServingConfig) -> tuple[torch.nn.Module, SubgraphInfo] | None:
        """The graph served as a plan recorded by an earlier build says, if its library is still cached."""
        found = plan.load(key, cfg.cache_dir)
        entry = CACHE.cached(found.entry_key, cfg.cache_dir) if found is not None else None
        if found is None or entry is None or entry.runner != "tvm":
            return None
        sub = TvmSubgraph(entry.module, found.inputs, True, cfg.num_threads)
        said = {"lowering": entry.lowering, "flop": entry.flop, "transferred": entry.transferred, "cache_key": found.entry_key}
        return PlannedGraph(sub, found.outputs), SubgraphInfo(found.name, "tvm", entry.tasks, entry.applied, **said)

    def _compile_partition(self, fused: torch.fx.GraphModule, part: Partition, cfg: ServingConfig) -> SubgraphInfo:
        key = _cache_key(part.module, part.bound, part.examples, cfg)
        try:
            entry = CACHE.get(key, cfg.cache_dir, lambda: _lower_and_build(part, cfg))
        except TunebenchError as e:
            warnings.warn(f"tunebench: subgraph {part.name} runs in PyTorch: {e}", LoweringFallbackWarning, stacklevel=4)
            return SubgraphInfo(part.name, "pytorch", 0, reason=str(e))
        if entry.runner == "tvm":
            setattr(fused, part.name, TvmSubgraph(entry.module, part.dynamic, part.tuple_out, cfg.num_threads))
        said = {"lowering": entry.lowering, "flop": entry.flop, "transferred": entry.transferred, "cache_key": key}
        return SubgraphInfo(part.name, entry.runner, entry.tasks, entry.applied, **said)


def _version(t: torch.Tensor) -> int:
    """A tensor's in-place write counter (-1 for an inference-mode tensor, which keeps none)."""
    try:
        return t._version
    except RuntimeError:
        return -1


def _check_options(options: dict[str, Any] | None) -> dict[str, Any]:
    """Reject unknown options (a typo must not silently compile with defaults); read logs once."""
    from .digest import read_for_serving

    opts = dict(options or {})
    unknown = sorted(set(opts) - set(OPTIONS))
    if unknown:
        raise TunebenchError(f"unknown tunebench option(s) {', '.join(map(repr, unknown))}; known options: {', '.join(OPTIONS)}")
    if "logs" in opts:
        opts["logs"] = read_for_serving(opts["logs"], opts.get("cache_dir"))
    return opts


def tunebench_backend(
    gm: torch.fx.GraphModule, example_inputs: list[Any], options: dict[str, Any] | None = None, mode: str | None = None
) -> Callable[..., Any]:
    """torch.compile backend (``backend="tunebench"``, registered by entry point).

    ``options``: ``target`` (avx2, avx512, native, JSON), ``logs`` (file, dir or list),
    ``cache_dir``, ``fallback`` ("untuned" or "never"), ``num_threads``, ``opt_level``, ``winograd``;
    each overrides the active ``apply_history_best`` block or ``enable`` setting.
    """
    if mode is not None:
        raise TunebenchError(f"the tunebench backend has no compile modes (got mode={mode!r}); pass settings with options={{...}}")
    opts = _check_options(options)
    # Dynamo lifts parameters and buffers to graph inputs and tags them as static.
    static = static_inputs(example_inputs)
    dispatcher = GraphDispatcher(gm, static, opts)
    dispatcher.config(current())  # bad option values fail now, not on the first call
    return dispatcher


def compile(model: torch.nn.Module, *example_inputs: Any, **options: Any) -> GraphDispatcher:
    """Ahead of time: torch.export ``model``, partition and build for ``example_inputs`` now (no dynamo).

    Returns a callable; ``.last.subgraphs`` says where each partition runs and which records it got.
    """
    dispatcher = GraphDispatcher(model, frozenset(), _check_options(options))  # its build step torch.exports the model
    dispatcher.prepare(*example_inputs)
    return dispatcher
