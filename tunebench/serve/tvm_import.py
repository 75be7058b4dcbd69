"""Importing TVM without its first-error cost: type lookups answered from the FFI registry's list.

``import tvm`` registers a Python class for every object type its Python code names. For a type
the loaded libraries lack (the compiler's under ``TVM_USE_RUNTIME_LIB=1``, disco's without its
extra runtime), tvm_ffi's ``_object_type_key_to_index`` answers None, but only after a C++
lookup has raised an error inside the library, and the first such error makes libbacktrace read
the symbol tables of every library loaded, libtorch's among them. Measured on AMD EPYC Zen 4
(gdb on the stalled import): with the runtime alone, 0.63 s of the 0.75 s ``import tvm`` after
torch; 0.13 s with this lookup. The registry lists its type keys (``ffi.GetRegisteredTypeKeys``),
so a key it does not list is answered None without asking C++: the same answer, no backtrace.
With the compiler library loaded the saving is nil: ``Op.get`` of op names the compiler lacks
(TVMScript printer registration) raises the same first error, and loading the 259 MB library
costs its own half second; serving from a saved artifact (``deploy``) needs only the runtime.
"""

from __future__ import annotations

import importlib.abc
import sys
from typing import Any


def fast_type_lookup() -> None:
    """Answer tvm_ffi's lookups of unregistered type keys from the registry's list (idempotent)."""
    from tvm_ffi import core, get_global_func

    original = core._object_type_key_to_index
    listed = get_global_func("ffi.GetRegisteredTypeKeys", allow_missing=True)
    if listed is None or getattr(original, "answers_from_list", False):
        return
    known: set[str] = set()

    def lookup(type_key: str) -> int | None:
        if type_key not in known:
            known.update(listed())  # libraries loaded since the last look register more types
            if type_key not in known:
                return None
        return original(type_key)

    lookup.answers_from_list = True  # type: ignore[attr-defined]
    core._object_type_key_to_index = lookup


class _BeforeTvm(importlib.abc.MetaPathFinder):
    """Installs ``fast_type_lookup`` when ``tvm`` is first imported, then leaves the import to the others."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> None:
        if name == "tvm":
            sys.meta_path.remove(self)
            fast_type_lookup()


def on_tvm_import() -> None:
    """Have the first ``import tvm`` of this process use ``fast_type_lookup`` (nothing if TVM is in already)."""
    if "tvm" not in sys.modules and not any(isinstance(f, _BeforeTvm) for f in sys.meta_path):
        sys.meta_path.insert(0, _BeforeTvm())
