"""The runtime hand-off: a built model called with torch tensors, TVM's thread pool sized for it.

Inputs and outputs cross the PyTorch/TVM border by DLPack, without a copy.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .choose import Coverage, Lowering


def set_tvm_threads(n: int) -> int:
    """Size TVM's thread pool to ``n`` threads sharing this process's CPUs; return the size it took.

    TVM's default is half the hardware threads (1 on a 2-vCPU VM), and ``config_threadpool`` in its
    default mode (1, "big cores") stays at that count here; mode -3 (threads share the listed cores,
    with max concurrency ``n``) does resize it. The environment variable covers worker processes.
    """
    import tvm

    os.environ["TVM_NUM_THREADS"] = str(n)
    cpus = [str(c) for c in sorted(os.sched_getaffinity(0))]
    tvm.get_global_func("runtime.config_threadpool")(-3, n, cpus, n)
    return int(tvm.get_global_func("runtime.NumThreads")())


class CompiledModel:
    """A Relax VM over a compiled executable, called with torch tensors, returning torch tensors.

    Inputs and outputs cross by DLPack, so no copy is made at the PyTorch/TVM border.
    """

    def __init__(self, executable: Any, coverage: Coverage, lowering: Lowering | None = None) -> None:
        import tvm
        from tvm import relax

        self.executable = executable
        self.coverage = coverage
        self.lowering = lowering  # how the model was lowered (layout, Winograd shapes); None: as given
        self.vm = relax.VirtualMachine(executable, tvm.cpu())
        self._main = self.vm["main"]

    def __call__(self, *inputs: Any) -> Any:
        import torch
        import tvm

        args = [tvm.runtime.from_dlpack(x.detach().contiguous()) for x in inputs]
        out = self._main(*args)
        return to_torch(out, torch)


def to_torch(out: Any, torch: Any) -> Any:
    if hasattr(out, "__dlpack__"):
        return torch.from_dlpack(out)
    items = [to_torch(o, torch) for o in out]
    return items[0] if len(items) == 1 else tuple(items)
