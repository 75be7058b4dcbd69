"""One threading model for PyTorch and TVM in one process: bound how long idle OpenMP threads spin.

After each parallel region, libgomp's threads (PyTorch's eager ops) busy-wait for more work before
sleeping: 300,000 spins by default, forever with ``OMP_WAIT_POLICY=ACTIVE``, none with ``PASSIVE``.
On 2 cores a spinning thread takes a core from TVM's pool when a tuned subgraph runs right after an
eager op, and a sleeping one costs eager a wake-up. Measured (``benchmarks/threading_model.py``,
ResNet18 on a 2-vCPU Zen 4): TVM calls after eager ones 1.24x slower with the default, TVM 3.3x
slower under ACTIVE, eager 1.49x slower after TVM calls under PASSIVE; with ``GOMP_SPINCOUNT=10000``
every policy stayed within 2% of each runtime alone. libgomp reads its environment once, when
torch loads it, so ``import tunebench`` sets that default only if torch is not imported yet (a
user's own ``GOMP_SPINCOUNT`` always wins); otherwise the backend says once how to get it.
"""

from __future__ import annotations

import logging
import os
import sys

SPIN_COUNT = "10000"
MARK = "TUNEBENCH_SET_GOMP_SPINCOUNT"  # inherited with the value: a child process can tell who set it
_state = {"told": False}


def bound_openmp_spin() -> None:
    """Default ``GOMP_SPINCOUNT`` before libgomp loads (see module docstring)."""
    if "torch" not in sys.modules and "GOMP_SPINCOUNT" not in os.environ:
        os.environ["GOMP_SPINCOUNT"] = SPIN_COUNT
        os.environ[MARK] = SPIN_COUNT


def openmp_spin() -> str:
    """What libgomp's idle threads do in this process, for benchmark records."""
    if "GOMP_SPINCOUNT" in os.environ:
        how = "set by tunebench" if os.environ.get(MARK) == os.environ["GOMP_SPINCOUNT"] else "set by the user"
        return f"GOMP_SPINCOUNT={os.environ['GOMP_SPINCOUNT']} ({how})"
    return f"libgomp default for OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}"


def advise_once() -> None:
    """Log once, at the first TVM build, if libgomp spins unbounded beside TVM's pool."""
    if _state["told"] or "GOMP_SPINCOUNT" in os.environ:
        return
    _state["told"] = True
    logging.getLogger("tunebench").warning(
        "tunebench: torch was imported before tunebench, so PyTorch's OpenMP threads spin after each op (%s) and slow the "
        "TVM subgraphs that follow (1.24x measured on 2 cores); set GOMP_SPINCOUNT=%s in the environment, or import tunebench first",
        openmp_spin(),
        SPIN_COUNT,
    )
