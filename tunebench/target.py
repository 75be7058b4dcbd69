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

# LLVM feature name -> the /proc/cpuinfo flag of the same instructions, for the vector-ISA features
# the ISA check looks at. Each cpuinfo name was checked against Linux's arch/x86/include/asm/cpufeatures.h
# (a feature is listed in cpuinfo only under the quoted name there). Features absent from this table are
# never checked, on purpose: LLVM also reports tuning pseudo-features ("fast-gather"), and some real ones
# have no cpuinfo name at all (amx-fp16, avxifma), so checking them would refuse hosts that can run the code.
LLVM_TO_CPUINFO: dict[str, str] = {
    "avx": "avx",
    "avx2": "avx2",
    "fma": "fma",
    "f16c": "f16c",
    "bmi": "bmi1",
    "bmi2": "bmi2",
    "avx512f": "avx512f",
    "avx512cd": "avx512cd",
    "avx512bw": "avx512bw",
    "avx512dq": "avx512dq",
    "avx512vl": "avx512vl",
    "avx512ifma": "avx512ifma",
    "avx512vbmi": "avx512vbmi",
    "avx512vbmi2": "avx512_vbmi2",
    "avx512vnni": "avx512_vnni",
    "avx512bitalg": "avx512_bitalg",
    "avx512vpopcntdq": "avx512_vpopcntdq",
    "avx512bf16": "avx512_bf16",
    "avx512fp16": "avx512_fp16",
    "avx512vp2intersect": "avx512_vp2intersect",
    "avxvnni": "avx_vnni",
    "amx-tile": "amx_tile",
    "amx-int8": "amx_int8",
    "amx-bf16": "amx_bf16",
}
PRESETS = ("host", "avx2", "avx512", "native")


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
    """The CPU's marketing name, for host fingerprints and the message refusing a target it cannot run."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.cache
def physical_cores() -> int:
    """Physical cores: hyper-threads share FMA units, so TVM's thread pool should not count them.
    Asked once (psutil reads sysfs: 2 ms, paid per ``apply_history_best`` block before)."""
    import psutil

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


def llvm_system_cpu() -> str:
    """The host CPU as LLVM names it (``znver4``, ``rocketlake``): what ``native`` compiles for and what
    picks the AVX-512 preset. One function, so tests can fake the host's CPU model in one place."""
    from tvm.target import codegen

    return str(codegen.llvm_get_system_cpu())


def host_key() -> tuple[Any, ...]:
    """What resolving a preset and judging records depend on of this host: a serving config made
    for one host is not another's (``context.make_config`` reuses configs by it; tests fake hosts)."""
    return (cpu_flags(), llvm_system_cpu(), physical_cores())


def host_fingerprint() -> dict[str, Any]:
    """What a measurement depends on: CPU, its vector ISA, core count, TVM version."""
    import tvm

    vector_flags = sorted(f for f in cpu_flags() if f.startswith(("avx", "fma", "amx")))
    return {
        "cpu": cpu_model(),
        "llvm_cpu": llvm_system_cpu(),
        "isa": vector_flags,
        "cores": physical_cores(),
        "tvm": tvm.__version__,
    }


def canonical(config: dict[str, Any]) -> str:
    """Canonical JSON of a target dict: equal targets give equal keys in logs and caches."""
    return json.dumps(config, sort_keys=True, separators=(",", ":"))


@functools.cache
def _required_flags(key: str) -> tuple[str, ...]:
    """``required_flags`` for one canonical target: asking LLVM means building a TVM Target, so once per config."""
    import tvm
    from tvm.target import codegen

    try:
        features = set(codegen.llvm_get_cpu_features(tvm.target.Target(json.loads(key))))
    except (ValueError, TypeError, RuntimeError) as e:  # TVM reports a bad target dict as ValueError
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise TunebenchError(f"target {key} is not a valid TVM target: {reason}") from None
    return tuple(flag for feature, flag in LLVM_TO_CPUINFO.items() if feature in features)


def required_flags(config: dict[str, Any]) -> tuple[str, ...]:
    """The cpuinfo flags code generated for ``config`` may use, as LLVM's own feature list for its mcpu and
    mattr says (so ``sapphirerapids`` or ``"mattr": ["+avx512f"]`` count, not only the presets' mcpus).

    Only the features of ``LLVM_TO_CPUINFO`` are reported; non-LLVM targets need none.
    """
    if config.get("kind") != "llvm":
        return ()
    return _required_flags(identity(config))  # the thread count changes no instruction


def missing_flags(config: dict[str, Any], host_flags: frozenset[str] | None = None) -> list[str]:
    """Flags code for the target dict ``config`` (a preset's or any log record's) may use that the host
    (or ``host_flags``) lacks: running it would die with SIGILL rather than an error message.

    Empty when there is nothing to check against (no /proc/cpuinfo flags: not Linux on x86).
    """
    flags = cpu_flags() if host_flags is None else host_flags
    return lacking(required_flags(config), flags) if flags else []


def lacking(needed: list[str] | tuple[str, ...], host_flags: frozenset[str] | None = None) -> list[str]:
    """Of the cpuinfo flags ``needed``, those the host (or ``host_flags``) lacks; none when there is
    nothing to check against (no /proc/cpuinfo flags: not Linux on x86)."""
    flags = cpu_flags() if host_flags is None else host_flags
    return [f for f in needed if flags and f not in flags]


def runnable(config: dict[str, Any], host_flags: frozenset[str] | None = None) -> bool:
    """Whether this CPU (or ``host_flags``) can execute code built for the record or log target
    ``config``: an LLVM target whose instructions it has. A target TVM cannot parse is not."""
    if config.get("kind") != "llvm":
        return False
    try:
        return not missing_flags(config, host_flags)
    except TunebenchError:
        return False


def identity(config: dict[str, Any]) -> str:
    """What makes two targets the same for records: the codegen, not ``num-cores``.

    The thread count is a run setting: a schedule tuned with 2 threads compiles and runs with 4,
    so resume, carry-over and serving match records across core counts (their timings are kept
    apart by ``records.Record.measured_class``, which does count threads).
    """
    return canonical({k: v for k, v in config.items() if k != "num-cores"})


def measurement_class(llvm_cpu: str, threads: Any) -> str:
    """The kind of machine a latency belongs to: LLVM's name for the CPU and the threads timed with.

    Latencies are comparable within a class only: another CPU's or another thread count's times
    say which schedules are worth trying here, not which is fastest here. Records store the parts
    (``records.Record.measured_class``); the name is built here, beside the host it describes.
    """
    return f"{llvm_cpu} x{threads if threads else '?'}"


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

    @property
    def identity(self) -> str:
        """What this target's records are matched by (``identity``: the codegen, not the thread count)."""
        return identity(self.config)

    def measurement_class(self) -> str:
        """This machine timing with this target's threads, as ``records.Record.measured_class`` names
        a record's: the class whose records are bests here, all others' being priors."""
        return measurement_class(llvm_system_cpu(), self.num_cores)

    def missing_flags(self, host_flags: frozenset[str] | None = None) -> list[str]:
        """ISA flags this target needs that the host (or ``host_flags``) lacks."""
        return missing_flags(self.config, host_flags)

    def check_runnable(self) -> TargetSpec:
        """Raise before compiling anything if this CPU cannot execute code for the target."""
        missing = self.missing_flags()
        if missing:
            mattr = self.config.get("mattr")
            what = f"mcpu {self.mcpu or 'generic'}" + (f", mattr {','.join(mattr)}" if mattr else "")
            raise TunebenchError(
                f"target {self.name!r} ({what}) needs {', '.join(missing)}, which this CPU "
                f"({cpu_model()}) lacks; use --target avx2 or --target native"
            )
        return self


def host_preset(host_flags: frozenset[str] | None = None) -> tuple[str, str]:
    """(preset, why): the widest vector ISA this CPU runs, the default of ``tune`` and ``make tune``.

    AVX-512 doubles the lanes per FMA where the host has it (the peers use it there); tuning AVX2
    code on such a host leaves half the vector width unused.
    """
    flags = cpu_flags() if host_flags is None else host_flags
    if flags and not lacking(required_flags({"kind": "llvm", "mcpu": _avx512_mcpu()}), flags):
        return "avx512", f"the widest vector ISA this CPU ({cpu_model()}) runs"
    return "avx2", f"this CPU ({cpu_model()}) has no AVX-512" if flags else "no CPU flags to read: the portable preset"


# LLVM CPU names of AMD's cores; every other x86 name LLVM gives a host is Intel's (or generic).
AMD_CPUS = ("znver", "bdver", "btver", "barcelona", "amdfam10", "athlon", "opteron", "k8")


def class_distance(measured: str, here: str) -> tuple[int, int, int, int]:
    """How far timings of the machine class ``measured`` are from this one's (``measurement_class``
    names, "<llvm cpu> x<threads>"): (another class, another vendor, another vector width, other threads).

    A class no log holds ranks the others' records by this before their own clocks: the nearest
    machine's fastest schedule is likelier fast here than the fastest machine's.
    """
    if measured == here:
        return (0, 0, 0, 0)
    (cpu_a, _, threads_a), (cpu_b, _, threads_b) = measured.rpartition(" x"), here.rpartition(" x")
    vendor = cpu_a.startswith(AMD_CPUS) != cpu_b.startswith(AMD_CPUS)
    return (1, int(vendor), int(_wide(cpu_a) != _wide(cpu_b)), int(threads_a != threads_b))


@functools.cache
def _wide(llvm_cpu: str) -> bool:
    """Whether LLVM's CPU ``llvm_cpu`` has AVX-512 (False for a name LLVM does not know: asking
    LLVM about one prints an error line and answers for a generic CPU)."""
    import tvm
    from tvm.target import codegen

    known = codegen.llvm_get_cpu_archlist(tvm.target.Target({"kind": "llvm"}))
    return llvm_cpu in known and "avx512f" in required_flags({"kind": "llvm", "mcpu": llvm_cpu})


def _avx512_mcpu() -> str:
    return "znver4" if llvm_system_cpu().startswith("znver") else "skylake-avx512"


def _native_config() -> dict[str, Any]:
    """LLVM's name for this CPU, minus the features that name implies and this CPU lacks, as clang's
    ``-march=native`` asks the CPU itself: a VM may hide some (an ``emeraldrapids`` guest without AMX),
    and ``native`` must be the one target the host always runs."""
    config: dict[str, Any] = {"kind": "llvm", "mcpu": llvm_system_cpu()}
    missing = set(missing_flags(config))
    if missing:
        config["mattr"] = [f"-{feature}" for feature, flag in LLVM_TO_CPUINFO.items() if flag in missing]
    return config


def resolve_target(name: str | TargetSpec, num_cores: int | None = None, check: bool = True) -> TargetSpec:
    """Turn a preset name (``host``: ``host_preset``, ``avx2``, ``avx512``, ``native``) or a JSON target dict into a TargetSpec.

    ``check`` refuses targets the host cannot run; tools that only read logs pass ``False``.
    """
    if isinstance(name, TargetSpec):
        return name.check_runnable() if check else name
    cores = num_cores or physical_cores()
    if name == "host":
        name = host_preset()[0]
    if name == "avx2":
        config: dict[str, Any] = {"kind": "llvm", "mcpu": "core-avx2"}
    elif name == "avx512":
        config = {"kind": "llvm", "mcpu": _avx512_mcpu()}
    elif name == "native":
        config = _native_config()
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


def same_preset(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two target dicts are one preset's two mcpus (``avx512``: Intel's ``skylake-avx512`` and AMD's
    ``znver4``): the same vector width, so the same workloads and schedules, whichever vendor tuned them."""
    return preset_of(a) == preset_of(b) in PRESETS


def preset_of(config: dict[str, Any]) -> str:
    """The short name for a target dict as logs store it, for file names and tables."""
    mcpu = config.get("mcpu", "")
    return {"core-avx2": "avx2", "skylake-avx512": "avx512", "znver4": "avx512"}.get(mcpu, mcpu or "llvm")
