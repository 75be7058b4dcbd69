"""TVM's thread pool sized for this process: serving and the search's side-by-side timing both call kernels here."""

from __future__ import annotations

import os


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
