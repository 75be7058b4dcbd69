"""Partitioning: which operators of a model's core-ATen graph go to TVM, and which stay in PyTorch.

Its one job is to split a graph the same way for serving (``backend``) and for tuning
(``api.lower_model``): the tasks tuned are then the ones the served subgraphs look up. As
torch_tvm did, the operators the Relax torch frontend converts form TVM partitions (torch.fx's
``CapabilityBasedPartitioner``) and everything else stays in PyTorch, so a model with one
unsupported op still runs. Support is read from the frontend's own converter map, never from a
hand-written list.
"""

from __future__ import annotations

import functools
import operator
from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch

# dtypes the Relax frontend and the LLVM CPU codegen handle for every supported op
_DTYPES = frozenset({torch.float32, torch.float16, torch.int64, torch.int32, torch.bool})
NOT_CONVERTED = "not converted by the Relax frontend"


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


def unsupported(node: torch.fx.Node) -> str:
    """Why ``node`` cannot go to TVM, or "" if it can: the Relax frontend must convert its op and
    its tensors must have plain dtypes."""
    if node.op != "call_function":
        return "not an operator call"
    if getattr(node.target, "__name__", None) not in relax_convertible_ops():
        return NOT_CONVERTED
    produced = _tensors(node.meta.get("val"))
    if produced is None:
        return "produces no tensor"
    consumed = [v for v in (a.meta.get("val") for a in node.all_input_nodes) if isinstance(v, torch.Tensor)]
    odd = sorted({str(t.dtype).removeprefix("torch.") for t in produced + consumed if t.dtype not in _DTYPES})
    return f"unsupported dtype {', '.join(odd)}" if odd else ""


def _operator_support() -> Any:
    from torch.fx.passes.operator_support import OperatorSupportBase

    class RelaxSupport(OperatorSupportBase):
        """A node goes to TVM when ``unsupported`` finds no reason against it."""

        def is_node_supported(self, submodules: Any, node: torch.fx.Node) -> bool:
            return not unsupported(node)

    return RelaxSupport()


class Positional(torch.nn.Module):
    """Wraps a graph module so torch.export sees plain positional inputs (its params included)."""

    def __init__(self, gm: torch.nn.Module) -> None:
        super().__init__()
        self.gm = gm

    def forward(self, *args: Any) -> Any:
        return self.gm(*args)


class Bound(torch.nn.Module):
    """A partition with its constant inputs held as buffers, so export binds them as weights."""

    def __init__(self, sub: torch.fx.GraphModule, bound: dict[int, torch.Tensor], arity: int) -> None:
        super().__init__()
        self.sub, self.arity = sub, arity
        for j, t in bound.items():
            self.register_buffer(f"c{j}", t.detach())

    def forward(self, *dynamic: Any) -> Any:
        it = iter(dynamic)
        return self.sub(*[getattr(self, f"c{j}") if hasattr(self, f"c{j}") else next(it) for j in range(self.arity)])


@dataclass
class Partition:
    """One TVM partition of a fused graph, with what lowering it needs."""

    name: str  # its submodule in the fused graph (tvm_0, tvm_1...)
    module: torch.fx.GraphModule
    bound: dict[int, torch.Tensor]  # constant inputs (weights) by position
    dynamic: list[int]  # positions of the inputs a call passes
    examples: list[torch.Tensor]  # zeros shaped like the dynamic inputs
    tuple_out: bool  # returns a tuple (the fused graph unpacks it)

    def source(self) -> Any:
        """The partition as imported to Relax, its constants bound as weights (constant folding and
        the tuned workloads then match the whole-model lowering's)."""
        from .frontend import export, to_relax

        arity = len([n for n in self.module.graph.nodes if n.op == "placeholder"])
        return to_relax(export(Bound(self.module, self.bound, arity), tuple(self.examples)))


@dataclass
class Partitioned:
    """A core-ATen graph split for TVM: ``module`` calls the ``partitions`` and runs the rest itself."""

    module: torch.fx.GraphModule
    partitions: list[Partition]


def partition(model: torch.nn.Module, example_inputs: tuple[Any, ...], static: frozenset[int] = frozenset()) -> Partitioned:
    """torch.export ``model`` to core ATen (as ``tunebench tune`` lowers: equal ops give equal TIR
    workloads) and fuse its TVM-convertible operators into partitions.

    ``static`` are the positions of inputs that are weights (dynamo lifts parameters to inputs):
    partitions bind them as constants, like the module's own parameters.
    """
    from torch.fx.passes.infra.partitioner import CapabilityBasedPartitioner

    from .frontend import export

    aten = _unchecked(export(Positional(model), example_inputs).run_decompositions())
    placeholders = [n.name for n in aten.graph.nodes if n.op == "placeholder"]
    weights = {placeholders[i]: example_inputs[i] for i in static}
    fused = CapabilityBasedPartitioner(aten, _operator_support(), allows_single_node_partition=True).partition_and_fuse(prefix="tvm_")
    parts = [_partition(fused, n, weights) for n in fused.graph.nodes if n.op == "call_module" and n.target.startswith("tvm_")]
    return Partitioned(fused, parts)


def _unchecked(exported: Any) -> torch.fx.GraphModule:
    """The exported program as a module that runs its graph and nothing else per call.

    ``ExportedProgram.module()`` re-checks every call's inputs against the export's specs and
    guards (pytree walks over each of the graph's inputs: 0.1-0.3 ms of a 1.1 ms bert_tiny call,
    Zen 4, cProfile). What it checks is already held before a call gets here: dynamo's guards and the
    dispatcher's signature key (shape, dtype and weight address per input) pick the build."""
    aten = exported.module(check_guards=False)
    aten._forward_pre_hooks.clear()
    aten._forward_hooks.clear()  # its only other hooks: a paired enter/exit for nn.Module-typed inputs, none here
    return aten


def _partition(fused: torch.fx.GraphModule, node: torch.fx.Node, weights: dict[str, Any]) -> Partition:
    """The partition ``node`` calls: its inputs split into constants (attributes, weights) and the rest."""
    sub = fused.get_submodule(node.target)
    bound: dict[int, torch.Tensor] = {}
    dynamic: list[int] = []
    for j, a in enumerate(node.args):
        if a.op == "get_attr":
            bound[j] = functools.reduce(getattr, a.target.split("."), fused)
        elif a.op == "placeholder" and a.name in weights:
            bound[j] = weights[a.name]
        else:
            dynamic.append(j)
    examples = [torch.zeros(node.args[j].meta["val"].shape, dtype=node.args[j].meta["val"].dtype) for j in dynamic]
    output = next(n for n in sub.graph.nodes if n.op == "output").args[0]
    return Partition(node.target, sub, bound, dynamic, examples, isinstance(output, (tuple, list)))


@dataclass(frozen=True)
class PytorchOp:
    """An operator a partitioned graph runs in PyTorch, how many times, and why."""

    op: str  # aten.i0.default
    reason: str
    count: int

    def __str__(self) -> str:
        return f"{self.op} x{self.count}: {self.reason}"


def pytorch_ops(fused: torch.fx.GraphModule) -> list[PytorchOp]:
    """The operators left outside the TVM partitions, one entry per distinct op and reason
    (tuple unpacking of a partition's outputs is plumbing, not an op, and is left out)."""
    left = Counter(
        (str(n.target), unsupported(n) or "left out of the partitions")
        for n in fused.graph.nodes
        if n.op == "call_function" and n.target is not operator.getitem
    )
    return [PytorchOp(op, reason, count) for (op, reason), count in left.items()]


def static_inputs(example_inputs: list[Any]) -> frozenset[int]:
    """Positions of the inputs dynamo lifted from parameters and buffers (it tags them static)."""
    return frozenset(i for i, x in enumerate(example_inputs) if isinstance(x, torch.nn.Parameter) or getattr(x, "_dynamo_static_input_type", None))


def as_served(model: torch.nn.Module, example_inputs: tuple[Any, ...]) -> list[Partitioned]:
    """The partitions ``torch.compile(model, backend="tunebench")`` serves: the graph(s) dynamo captures,
    each split as the backend splits it. Dynamo's graph can differ from ``torch.export`` of the module
    (BERT: 3 of its 23 data-movement tasks fused otherwise), so tuning these serves every task."""
    captured: list[Partitioned] = []

    def capture(gm: torch.fx.GraphModule, graph_inputs: list[Any]) -> Any:
        static = static_inputs(graph_inputs)

        def first_call(*args: Any) -> Any:
            captured.append(partition(gm, args, static))
            return gm(*args)

        return first_call

    torch._dynamo.reset()
    try:
        with torch.no_grad():
            torch.compile(model, backend=capture)(*example_inputs)
    finally:
        torch._dynamo.reset()
    return captured
