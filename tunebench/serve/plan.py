"""Remembered splits: a graph that partitioning put wholly into one TVM subgraph is served by the
next process straight from the compile cache, without exporting and partitioning it again.

Measured (ResNet18, warm disk cache, AMD EPYC Zen 4, cProfile of the first call): of the 3.3 s
that ``torch.compile`` and the first call took, 1.7 s were ``partition`` (``torch.export`` of
dynamo's graph, core-ATen decompositions, the partitioner) only to find the one cache key it had
found before. A plan records that key and how the graph's inputs and outputs map onto the
subgraph's, under a key made of everything the split and the build depend on: the graph's code,
its weights by content, the inputs' shapes and dtypes, the serving config, and TVM's, PyTorch's
and tunebench's versions. Graphs with operators left in PyTorch are not planned (their split must
be rebuilt to run them); plans are small JSON files in ``<cache dir>/plans/``, named as the cache names
its own files (``cache.owned_name``), so ``tunebench cache clear`` tells them from a user's.
"""

from __future__ import annotations

import json
import operator
from contextlib import suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..files import atomic_write
from . import keys
from .cache import default_cache_dir, owned_name

PLAN_VERSION = 1


@dataclass(frozen=True)
class Plan:
    """A graph served by one TVM subgraph: the subgraph's compile-cache key, the graph inputs it
    takes (positions, in its order) and each graph output as an index into its outputs."""

    name: str  # the partition's, as the split named it (reported in coverage)
    entry_key: str
    inputs: list[int]
    outputs: list[int]


def plannable(gm: Any) -> bool:
    """Whether a plan can be kept for ``gm``: an fx graph, not a user's module (``tunebench.compile``),
    whose code is not text to hash."""
    return isinstance(gm, torch.fx.GraphModule)


def plan_key(gm: torch.fx.GraphModule, args: tuple[Any, ...], static: frozenset[int], config_text: str, weights: str) -> str:
    """The key a plan for this graph and call is stored under; ``weights`` is ``weights_digest``'s (the
    backend hashes the weights again only when one changed)."""
    inputs = "".join(f"|{i}:{tuple(a.shape)}:{a.dtype}:{i in static}|" if isinstance(a, torch.Tensor) else f"|{i}:{a!r}|" for i, a in enumerate(args))
    return keys.key(f"plan{PLAN_VERSION}", gm.code, inputs, config_text, weights)


def weights_digest(gm: torch.fx.GraphModule, args: tuple[Any, ...], static: frozenset[int]) -> str:
    """The weights a build bakes into its library, by content: the ``static`` inputs (dynamo's lifted
    parameters) and the constants the graph holds itself."""
    return keys.weights_digest([*((str(i), args[i]) for i in sorted(static)), *gm.named_parameters(), *gm.named_buffers()])


def of_split(fused: torch.fx.GraphModule, entry_key: str, dynamic: list[int]) -> Plan | None:
    """The plan of a split graph if all it does is call one partition on its own inputs and return
    that partition's outputs (as a tuple, dynamo's convention); else None. ``dynamic`` are the
    positions of the partition's arguments a call passes (the rest are weights, in the library,
    which a module's own parameters reach as ``get_attr`` nodes)."""
    nodes = [n for n in fused.graph.nodes if n.op not in ("placeholder", "output", "get_attr")]
    calls = [n for n in nodes if n.op == "call_module"]
    placeholders = [n for n in fused.graph.nodes if n.op == "placeholder"]
    if len(calls) != 1 or any(n.op != "call_module" and not _is_getitem(n, calls[0]) for n in nodes):
        return None
    call = calls[0]
    out = next(n for n in fused.graph.nodes if n.op == "output").args[0]
    passed = [call.args[j] for j in dynamic]
    if not isinstance(out, tuple) or not all(isinstance(a, torch.fx.Node) and a.op == "placeholder" for a in passed):
        return None
    if not all(o is call or (isinstance(o, torch.fx.Node) and _is_getitem(o, call)) for o in out):
        return None
    outputs = [0 if o is call else int(o.args[1]) for o in out]
    return Plan(str(call.target), entry_key, [placeholders.index(a) for a in passed], outputs)


def _is_getitem(node: torch.fx.Node, call: torch.fx.Node) -> bool:
    return node.op == "call_function" and node.target is operator.getitem and node.args[0] is call


def load(key: str, directory: Path | None) -> Plan | None:
    """The plan stored under ``key``, or None (none stored, or unreadable: the split is redone)."""
    try:
        raw = json.loads(_path(key, directory).read_text())
        return Plan(str(raw["name"]), str(raw["entry_key"]), [int(i) for i in raw["inputs"]], [int(i) for i in raw["outputs"]])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def store(key: str, directory: Path | None, plan: Plan) -> None:
    """Write the plan by a temp file renamed into place; a disk that refuses only costs the next process the split."""
    with suppress(OSError):
        atomic_write(_path(key, directory), json.dumps(asdict(plan)), typed=True)


def _path(key: str, directory: Path | None) -> Path:
    return (directory or default_cache_dir()) / "plans" / owned_name(key, "json")
