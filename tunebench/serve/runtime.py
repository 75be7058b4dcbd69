"""The runtime hand-off: a built model called with torch tensors, TVM's thread pool sized for it.

Inputs and outputs cross the PyTorch/TVM border by DLPack, without a copy.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import torch

from ..threads import set_tvm_threads
from .cache import STATS
from .spin import advise_once

if TYPE_CHECKING:
    from .choose import Coverage, LoweringChoice


class CompiledModel:
    """A Relax VM over a compiled executable, called with torch tensors, returning torch tensors.

    Inputs and outputs cross by DLPack, so no copy is made at the PyTorch/TVM border.
    """

    def __init__(self, executable: Any, coverage: Coverage, lowering: LoweringChoice | None = None) -> None:
        import tvm
        from tvm.runtime.vm import VirtualMachine

        self.executable = executable
        self.coverage = coverage
        self.lowering = lowering  # how the model was lowered (layout, Winograd shapes); None: as given
        self.vm = VirtualMachine(executable, tvm.cpu())
        self._main = self.vm["main"]

    def __call__(self, *inputs: Any) -> Any:
        import tvm

        args = [tvm.runtime.from_dlpack(x.detach().contiguous()) for x in inputs]
        out = self._main(*args)
        return to_torch(out, torch)


_pool = threading.local()  # TVM's thread pool is per calling thread, so is the size it was given


def use_threads(n: int) -> None:
    """Size this thread's TVM pool (only when it changes: reconfiguring restarts the workers)."""
    if getattr(_pool, "size", 0) != n:
        set_tvm_threads(n)
        _pool.size = n


class TvmSubgraph(torch.nn.Module):
    """Stands in for a partition: calls the Relax VM on the non-constant inputs, by DLPack."""

    def __init__(self, module: Any, dynamic: list[int], tuple_out: bool, num_threads: int | None) -> None:
        import tvm
        from tvm.runtime.vm import VirtualMachine  # the runtime's: no compiler needed (deploy.load)

        super().__init__()
        self._vm = VirtualMachine(module, tvm.cpu())
        self._main = self._vm["main"]
        self._lock = threading.Lock()  # the VM keeps its frames on the instance: one call at a time
        advise_once()
        self.dynamic, self.tuple_out, self.num_threads = dynamic, tuple_out, num_threads

    def forward(self, *args: Any) -> Any:
        import tvm

        use_threads(self.num_threads or torch.get_num_threads())
        inputs = [tvm.runtime.from_dlpack(args[j].detach().contiguous()) for j in self.dynamic]
        with self._lock:
            STATS.tvm_runs += 1
            out = to_torch(self._main(*inputs), torch)
        return (out,) if self.tuple_out and not isinstance(out, tuple) else out


class PlannedGraph(torch.nn.Module):
    """A graph served as its plan says (``tunebench.serve.plan``): one TVM subgraph called on the graph's
    inputs, its outputs returned in the graph's order."""

    def __init__(self, sub: TvmSubgraph, outputs: list[int]) -> None:
        super().__init__()
        self.sub, self.outputs = sub, outputs

    def forward(self, *args: Any) -> tuple[Any, ...]:
        out = self.sub(*args)
        return tuple(out[i] for i in self.outputs)


def to_torch(out: Any, torch: Any) -> Any:
    if hasattr(out, "__dlpack__"):
        return torch.from_dlpack(out)
    items = [to_torch(o, torch) for o in out]
    return items[0] if len(items) == 1 else tuple(items)
