"""Serving: the ``tunebench`` torch.compile backend and ``tunebench.compile`` (ahead of time).

As torch_tvm did, a captured graph is split: operators the Relax torch frontend converts form
TVM subgraphs, everything else stays in PyTorch, so a model with one unsupported op still runs.
Support is read from the frontend's own converter map, never from a hand-written list.

Each distinct call signature (input shapes and dtypes, the weights' storage, plus the active
``ServingConfig``) gets its own specialized graph: traced to core ATen with ``make_fx``, partitioned with torch.fx's
``CapabilityBasedPartitioner``, each TVM subgraph looked up in the compile cache. Parameters and
buffers are bound as constants (so constant folding and tuned workloads match ``tunebench
tune``); this is an inference backend, and later weight updates are not seen.

Never slower by surprise: by default a subgraph with a task lacking a tuning record runs in
PyTorch (untuned TVM kernels are naive), with one warning giving the coverage;
``fallback="never"`` runs it in TVM anyway.
"""

from __future__ import annotations

import functools
import hashlib
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from .cache import CACHE, STATS, Entry
from .context import ServingConfig, current, in_block, make_config
from .errors import TunebenchError

OPTIONS = ("target", "logs", "cache_dir", "fallback", "num_threads", "opt_level", "winograd")
# dtypes the Relax frontend and the LLVM CPU codegen handle for every supported op
_DTYPES = frozenset({torch.float32, torch.float16, torch.int64, torch.int32, torch.bool})


class UntunedFallbackWarning(UserWarning):
    """Subgraphs kept in PyTorch because some of their tasks have no tuning record."""


class LoweringFallbackWarning(UserWarning):
    """A subgraph TVM failed to lower or build; it runs in PyTorch instead."""


@functools.cache
def relax_convertible_ops() -> frozenset[str]:
    """ATen overload names (``convolution.default``...) the exported-program importer converts."""
    from tvm.relax.frontend.torch.exported_program_translator import ExportedProgramImporter

    return frozenset(ExportedProgramImporter().create_convert_map())


def _tensors(value: Any) -> list[Any] | None:
    """The tensors a node produces, or None if it produces anything else (SymInt, None...)."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)) and value and all(isinstance(v, torch.Tensor) for v in value):
        return list(value)
    return None


def _operator_support() -> Any:
    from torch.fx.passes.operator_support import OperatorSupportBase

    class RelaxSupport(OperatorSupportBase):
        """A node goes to TVM if the Relax frontend converts its op and its tensors have plain dtypes."""

        def is_node_supported(self, submodules: Any, node: torch.fx.Node) -> bool:
            if node.op != "call_function" or getattr(node.target, "__name__", None) not in relax_convertible_ops():
                return False
            produced = _tensors(node.meta.get("val"))
            consumed = [a.meta.get("val") for a in node.all_input_nodes]
            return produced is not None and all(t.dtype in _DTYPES for t in produced + [v for v in consumed if isinstance(v, torch.Tensor)])

    return RelaxSupport()


@dataclass
class SubgraphInfo:
    """Where one partition runs and which tuning records it got."""

    name: str
    runner: str  # "tvm" or "pytorch"
    tasks: int
    applied: list[str] = field(default_factory=list)  # workload keys with a record applied
    reason: str = ""
    lowering: str = ""  # choose.Lowering as text: the conv layout (and Winograd shapes) chosen from the log
    flop: float = 0.0  # FLOP per call of its tasks


@dataclass
class CompiledGraph:
    """A graph specialized for one call signature: the partitioned module and its subgraphs.

    ``weights`` holds the static inputs (parameters) it was built with: their addresses are part
    of the dispatcher's key, and holding them keeps another model's weights from reusing them.
    """

    module: torch.fx.GraphModule
    subgraphs: list[SubgraphInfo]
    weights: tuple[Any, ...] = ()

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

    def __str__(self) -> str:
        layout = f", {'; '.join(self.lowerings)}" if self.lowerings else ""
        return f"{self.tvm}/{self.tvm + self.pytorch} subgraphs in TVM, {self.tuned}/{self.tasks} tasks tuned{layout}"


def served(graphs: Iterable[CompiledGraph]) -> Served:
    """Sum the subgraphs of ``graphs`` (a model dynamo split at graph breaks has several)."""
    out = Served()
    for s in (s for g in graphs for s in g.subgraphs):
        in_tvm = s.runner == "tvm"
        out.tvm, out.pytorch = out.tvm + in_tvm, out.pytorch + (not in_tvm)
        out.tasks, out.tuned, out.flop = out.tasks + s.tasks, out.tuned + len(s.applied), out.flop + s.flop
        out.applied += len(s.applied) if in_tvm else 0
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


_threads = [0]


def _set_threads(n: int) -> None:
    """Size TVM's thread pool (only when it changes: reconfiguring restarts the workers)."""
    from .runtime import set_tvm_threads

    if n != _threads[0]:
        set_tvm_threads(n)
        _threads[0] = n


class TvmSubgraph(torch.nn.Module):
    """Stands in for a partition: calls the Relax VM on the non-constant inputs, by DLPack."""

    def __init__(self, module: Any, dynamic: list[int], tuple_out: bool, num_threads: int | None) -> None:
        import tvm
        from tvm import relax

        super().__init__()
        self._vm = relax.VirtualMachine(module, tvm.cpu())
        self._main = self._vm["main"]
        self.dynamic, self.tuple_out, self.num_threads = dynamic, tuple_out, num_threads

    def forward(self, *args: Any) -> Any:
        import tvm

        from .runtime import to_torch

        _set_threads(self.num_threads or torch.get_num_threads())
        STATS.tvm_runs += 1
        out = to_torch(self._main(*[tvm.runtime.from_dlpack(args[j].detach().contiguous()) for j in self.dynamic]), torch)
        return (out,) if self.tuple_out and not isinstance(out, tuple) else out


class _Positional(torch.nn.Module):
    """Wraps a graph module so torch.export sees plain positional inputs (its params included)."""

    def __init__(self, gm: torch.nn.Module) -> None:
        super().__init__()
        self.gm = gm

    def forward(self, *args: Any) -> Any:
        return self.gm(*args)


class _Bound(torch.nn.Module):
    """A partition with its constant inputs held as buffers, so export binds them as weights."""

    def __init__(self, sub: torch.fx.GraphModule, bound: dict[int, torch.Tensor], arity: int) -> None:
        super().__init__()
        self.sub, self.arity = sub, arity
        for j, t in bound.items():
            self.register_buffer(f"c{j}", t.detach())

    def forward(self, *dynamic: Any) -> Any:
        it = iter(dynamic)
        return self.sub(*[getattr(self, f"c{j}") if hasattr(self, f"c{j}") else next(it) for j in range(self.arity)])


def _cache_key(sub: torch.fx.GraphModule, bound: dict[int, torch.Tensor], examples: list[torch.Tensor], cfg: ServingConfig) -> str:
    """Graph code, weights (by content), input shapes/dtypes, target, records and versions."""
    import tvm

    h = hashlib.sha256(sub.code.encode())
    for j in sorted(bound):
        t = bound[j].detach()
        h.update(f"|{j}:{tuple(t.shape)}:{t.dtype}|".encode())
        h.update(t.reshape(-1).contiguous().view(torch.uint8).numpy().data)
    h.update(repr([(tuple(x.shape), str(x.dtype)) for x in examples]).encode())
    h.update(f"|{cfg.target.key()}|{cfg.fingerprint}|{cfg.opt_level}|{cfg.fallback}|{cfg.winograd}|{tvm.__version__}|{torch.__version__}".encode())
    return h.hexdigest()


def _lower_and_build(sub: torch.fx.GraphModule, bound: dict[int, torch.Tensor], examples: list[torch.Tensor], cfg: ServingConfig) -> Entry:
    import tvm

    from . import frontend
    from .build import apply_records, build
    from .choose import choose_lowering

    arity = len([n for n in sub.graph.nodes if n.op == "placeholder"])
    source = frontend.to_relax(frontend.export(_Bound(sub, bound, arity), tuple(examples)))
    lowering = choose_lowering(source, frontend.optimize(source, cfg.target), "nchw", cfg.target, cfg.log, cfg.best, cfg.winograd)
    scheduled, coverage = apply_records(lowering.mod, cfg.target, cfg.log, cfg.best)
    said = {"lowering": str(lowering), "flop": float(sum(t.total_flop for t in coverage.tasks))}
    if coverage.missing and cfg.fallback == "untuned":
        return Entry("pytorch", len(coverage.tasks), coverage.applied, **said)
    try:
        with tvm.transform.PassContext(opt_level=cfg.opt_level):
            executable = build(scheduled, cfg.target)
    except Exception as e:  # a TVM build error on a lowered subgraph: that subgraph stays in PyTorch
        raise TunebenchError(f"TVM cannot build it: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}") from e
    return Entry("tvm", len(coverage.tasks), coverage.applied, executable, **said)


class GraphDispatcher:
    """The callable the backend returns: one ``CompiledGraph`` per call signature and config."""

    def __init__(self, gm: torch.nn.Module, static: frozenset[int], options: dict[str, Any]) -> None:
        self.gm, self.static, self.options = gm, static, options
        self.graphs: dict[tuple[Any, ...], CompiledGraph] = {}
        self._configs: dict[int, ServingConfig] = {}
        self._latest: dict[tuple[Any, ...], CompiledGraph] = {}  # per signature, the graph last served
        self.last: CompiledGraph | None = None

    def config(self, base: ServingConfig) -> ServingConfig:
        """``base`` (the active block or ``enable``) overridden by this compile's options."""
        if not self.options:
            return base
        if base.token not in self._configs:
            o = self.options
            self._configs[base.token] = make_config(
                o.get("logs", base.log),
                o.get("target", None if "logs" in o else base.target),  # None: the target the new logs were tuned for
                opt_level=o.get("opt_level", base.opt_level),
                fallback=o.get("fallback", base.fallback),
                cache_dir=o.get("cache_dir", base.cache_dir),
                num_threads=o.get("num_threads", base.num_threads),
                winograd=o.get("winograd", base.winograd),
            )
        return self._configs[base.token]

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
        signature = tuple(_arg_key(a, i in self.static) for i, a in enumerate(args))
        graph = self.graphs.get((base.token, *signature))
        if graph is None and not in_block():  # after the block: the kernels this shape was compiled with
            graph = self._latest.get(signature)
        if graph is None:
            graph = self.graphs[(base.token, *signature)] = self._build(args, self.config(base))
        self._latest[signature] = graph
        self.last = graph
        for seen in _watchers:
            if not any(g is graph for g in seen):
                seen.append(graph)
        return graph

    def __call__(self, *args: Any) -> Any:
        return self.prepare(*args).module(*args)

    def _build(self, args: tuple[Any, ...], cfg: ServingConfig) -> CompiledGraph:
        from torch.fx.passes.infra.partitioner import CapabilityBasedPartitioner

        from .frontend import export

        # torch.export + core ATen decompositions, as ``tunebench tune`` lowers: equal ops give
        # equal TIR workloads, so the records tuned on the whole model match these subgraphs.
        aten = export(_Positional(self.gm), args).run_decompositions().module()
        placeholders = [n.name for n in aten.graph.nodes if n.op == "placeholder"]
        static = {placeholders[i]: args[i] for i in self.static}
        fused = CapabilityBasedPartitioner(aten, _operator_support(), allows_single_node_partition=True).partition_and_fuse(prefix="tvm_")
        subgraphs = []
        for node in list(fused.graph.nodes):
            if node.op == "call_module" and node.target.startswith("tvm_"):
                subgraphs.append(self._compile_partition(fused, node, static, cfg))
        fused.recompile()
        untuned = [s for s in subgraphs if s.runner == "pytorch" and not s.reason]
        if untuned:
            tasks, applied = sum(s.tasks for s in untuned), sum(len(s.applied) for s in untuned)
            warnings.warn(
                f"tunebench: {len(untuned)} of {len(subgraphs)} TVM subgraph(s) run in PyTorch: {applied}/{tasks} of their tasks have tuning records "
                f"for {cfg.target.name} (untuned TVM kernels are far slower). Tune the model, or pass options={{'fallback': 'never'}} to run them in TVM.",
                UntunedFallbackWarning,
                stacklevel=3,
            )
        return CompiledGraph(fused, subgraphs, tuple(args[i] for i in sorted(self.static)))

    def _compile_partition(self, fused: torch.fx.GraphModule, node: torch.fx.Node, static: dict[str, Any], cfg: ServingConfig) -> SubgraphInfo:
        sub = fused.get_submodule(node.target)
        bound: dict[int, torch.Tensor] = {}
        dynamic: list[int] = []
        for j, a in enumerate(node.args):
            if a.op == "get_attr":
                bound[j] = functools.reduce(getattr, a.target.split("."), fused)
            elif a.op == "placeholder" and a.name in static:
                bound[j] = static[a.name]
            else:
                dynamic.append(j)
        examples = [torch.zeros(node.args[j].meta["val"].shape, dtype=node.args[j].meta["val"].dtype) for j in dynamic]
        key = _cache_key(sub, bound, examples, cfg)
        try:
            entry = CACHE.get(key, cfg.cache_dir, lambda: _lower_and_build(sub, bound, examples, cfg))
        except TunebenchError as e:
            warnings.warn(f"tunebench: subgraph {node.target} runs in PyTorch: {e}", LoweringFallbackWarning, stacklevel=4)
            return SubgraphInfo(node.target, "pytorch", 0, reason=str(e))
        if entry.runner == "tvm":
            output = next(n for n in sub.graph.nodes if n.op == "output").args[0]
            setattr(fused, node.target, TvmSubgraph(entry.module, dynamic, isinstance(output, (tuple, list)), cfg.num_threads))
        return SubgraphInfo(node.target, entry.runner, entry.tasks, entry.applied, lowering=entry.lowering, flop=entry.flop)


def _arg_key(arg: Any, static: bool) -> Any:
    """One argument's part of a dispatcher key: a weight by address, an input by shape and dtype."""
    if not isinstance(arg, torch.Tensor):
        return arg
    return arg.data_ptr() if static else (tuple(arg.shape), arg.dtype)


def _check_options(options: dict[str, Any] | None) -> dict[str, Any]:
    """Reject unknown options (a typo must not silently compile with defaults); read logs once."""
    from .records import read_log

    opts = dict(options or {})
    unknown = sorted(set(opts) - set(OPTIONS))
    if unknown:
        raise TunebenchError(f"unknown tunebench option(s) {', '.join(map(repr, unknown))}; known options: {', '.join(OPTIONS)}")
    if "logs" in opts:
        opts["logs"] = read_log(opts["logs"])
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
    static = frozenset(i for i, x in enumerate(example_inputs) if isinstance(x, torch.nn.Parameter) or getattr(x, "_dynamo_static_input_type", None))
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
