"""Targets: named x86 LLVM presets, the host fingerprint logs carry, and the ISA check.

TVM 0.27 only accepts JSON-dict targets (``"llvm -mcpu=..."`` strings are rejected), so
presets build the dict. A target whose instructions this CPU lacks is refused before anything
is compiled or measured: running it would end in SIGILL, not in an error message.
"""

from __future__ import annotations

import functools
import json
import os
import platform
from dataclasses import dataclass
from typing import Any

from .errors import TunebenchError

# ISA flags (as /proc/cpuinfo names them) that code generated for each mcpu may use.
_AVX2_FLAGS = ("avx", "avx2", "fma", "f16c", "bmi1", "bmi2")
_AVX512_FLAGS = (*_AVX2_FLAGS, "avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl")
MCPU_FLAGS: dict[str, tuple[str, ...]] = {
    "core-avx2": _AVX2_FLAGS,
    "haswell": _AVX2_FLAGS,
    "skylake-avx512": _AVX512_FLAGS,
    "znver4": (*_AVX512_FLAGS, "avx512vnni", "avx512_bf16"),
}
PRESETS = ("avx2", "avx512", "native")


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The host's ISA flags from /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@functools.cache
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def physical_cores() -> int:
    """Physical cores: hyper-threads share FMA units, so TVM's thread pool should not count them."""
    import psutil

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


def host_fingerprint() -> dict[str, Any]:
    """What a measurement depends on: CPU, its vector ISA, core count, TVM version."""
    import tvm
    from tvm.target import codegen

    vector_flags = sorted(f for f in cpu_flags() if f.startswith(("avx", "fma", "amx")))
    return {
        "cpu": cpu_model(),
        "llvm_cpu": str(codegen.llvm_get_system_cpu()),
        "isa": vector_flags,
        "cores": physical_cores(),
        "tvm": tvm.__version__,
    }


def canonical(config: dict[str, Any]) -> str:
    """Canonical JSON of a target dict: equal targets give equal keys in logs and caches."""
    return json.dumps(config, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class TargetSpec:
    """A resolved target: the preset name users typed and the TVM target dict it means."""

    name: str
    config: dict[str, Any]

    @property
    def mcpu(self) -> str:
        return str(self.config.get("mcpu", ""))

    @property
    def num_cores(self) -> int:
        return int(self.config["num-cores"])

    def tvm(self) -> Any:
        import tvm

        return tvm.target.Target(self.config)

    def key(self) -> str:
        return canonical(self.config)

    def missing_flags(self, host_flags: frozenset[str] | None = None) -> list[str]:
        """ISA flags this target needs that the host (or ``host_flags``) lacks."""
        flags = cpu_flags() if host_flags is None else host_flags
        if not flags:  # not Linux: nothing to check against
            return []
        return [f for f in MCPU_FLAGS.get(self.mcpu, ()) if f not in flags]

    def check_runnable(self) -> TargetSpec:
        """Raise before compiling anything if this CPU cannot execute code for the target."""
        missing = self.missing_flags()
        if missing:
            raise TunebenchError(
                f"target {self.name!r} (mcpu {self.mcpu}) needs {', '.join(missing)}, which this CPU "
                f"({cpu_model()}) lacks; use --target avx2 or --target native"
            )
        return self


def _avx512_mcpu() -> str:
    from tvm.target import codegen

    return "znver4" if str(codegen.llvm_get_system_cpu()).startswith("znver") else "skylake-avx512"


def resolve_target(name: str | TargetSpec, num_cores: int | None = None, check: bool = True) -> TargetSpec:
    """Turn a preset name (``avx2``, ``avx512``, ``native``) or a JSON target dict into a TargetSpec.

    ``check`` refuses targets the host cannot run; tools that only read logs pass ``False``.
    """
    if isinstance(name, TargetSpec):
        return name.check_runnable() if check else name
    cores = num_cores or physical_cores()
    if name == "avx2":
        config: dict[str, Any] = {"kind": "llvm", "mcpu": "core-avx2"}
    elif name == "avx512":
        config = {"kind": "llvm", "mcpu": _avx512_mcpu()}
    elif name == "native":
        from tvm.target import codegen

        config = {"kind": "llvm", "mcpu": str(codegen.llvm_get_system_cpu())}
    elif name.lstrip().startswith("{"):
        try:
            config = dict(json.loads(name))
        except ValueError as e:
            raise TunebenchError(f"target {name!r} is not valid JSON: {e}") from None
        if config.get("kind") != "llvm":
            raise TunebenchError(f"target {name!r}: tunebench tunes CPU (kind 'llvm') targets only")
        name = "custom"
    else:
        raise TunebenchError(f"unknown target {name!r}; choose one of: {', '.join(PRESETS)}, or a JSON target dict")
    config.setdefault("num-cores", cores)
    spec = TargetSpec(name, config)
    return spec.check_runnable() if check else spec


def preset_of(config: dict[str, Any]) -> str:
    """The short name for a target dict as logs store it, for file names and tables."""
    mcpu = config.get("mcpu", "")
    return {"core-avx2": "avx2", "skylake-avx512": "avx512", "znver4": "avx512"}.get(mcpu, mcpu or "llvm")
