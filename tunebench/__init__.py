"""tunebench: tune PyTorch models for x86 CPUs with Apache TVM (Relax + MetaSchedule).

The package imports nothing heavy: torch and TVM load on first use of a function that needs
them, so ``tunebench --help`` stays fast. Imported before torch, it bounds how long PyTorch's
OpenMP threads spin beside TVM's pool (``spin``), and has a runtime-only TVM import skip a
0.6 s error backtrace (``tvm_import``).
"""

from __future__ import annotations

import importlib
from typing import Any

from .serve.spin import bound_openmp_spin
from .serve.tvm_import import on_tvm_import

bound_openmp_spin()
on_tvm_import()
__version__ = "0.1.0"

_LAZY = {
    "get_model": "tunebench.zoo",
    "resolve_target": "tunebench.target",
    "host_fingerprint": "tunebench.target",
    "lower_model": "tunebench.lowering.model",
    "tune": "tunebench.api",
    "compare_siblings": "tunebench.api",
    "refine": "tunebench.api",
    "read_log": "tunebench.logs.records",
    "TunebenchError": "tunebench.errors",
    "apply_history_best": "tunebench.serve.context",
    "apply": "tunebench.serve.context",
    "enable": "tunebench.serve.context",
    "disable": "tunebench.serve.context",
    "compile": "tunebench.serve.backend",
    "stats": "tunebench.serve.cache",
    "save": "tunebench.serve.deploy",
    "load": "tunebench.serve.deploy",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tunebench' has no attribute {name!r}")


__all__ = [*_LAZY, "__version__"]
