"""Shared fixtures: one real tuning run of the two-conv model serves every test that needs a log.

Tuning is the slow part of the suite (process pools start, the evolutionary search runs), so the
log is made once per session; tests that change a log copy it first.

The suite runs on hosts that differ session to session (AVX2-only AMD Zen 3, AVX-512 AMD Zen 4,
AVX-512 + AMX Intel Xeon). A test whose outcome depends on the host's ISA, CPU model or core count
fakes the host with ``fake_host``; nothing else may assume more than AVX2.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tunebench.search.settings import MeasureConfig

TINY = "tests/fixtures/tiny.py:tiny_conv"
# Generous timeouts: on a loaded 2-core machine a fresh build worker alone can take 30 s to import TVM,
# and a timed-out build leaves no usable record.
PATIENT = MeasureConfig(build_timeout=300, run_timeout=60)


@pytest.fixture(scope="session", autouse=True)
def shared_measurement_pools() -> Iterator[None]:
    """Every search in the session reuses one builder's and one runner's worker processes: starting
    them was most of each short search's time (``tunebench.search.measure.shared_pools``)."""
    from tunebench.search.measure import shared_pools

    with shared_pools():
        yield


@pytest.fixture(scope="session")
def tiny_log(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """4 trials on each of tiny_conv's 2 tasks (NCHW layout), every task with at least one successful record.

    Tuned once per test run: under pytest-xdist the workers share it (the first one tunes, the others
    wait on the lock and read it), since starting a real search's worker processes is most of its
    minute. Tests only read it; those that change a log copy it first.
    """
    from tunebench import api
    from tunebench.files import locked
    from tunebench.logs.records import read_log

    run_dir = tmp_path_factory.getbasetemp()
    folder = (run_dir.parent if worker_id != "master" else run_dir) / "tiny-log"  # xdist: the run's folder above the workers'
    tuned = folder / "tuned"
    with locked(folder / "tuning.lock"):
        if not tuned.exists():
            work = folder / "tuning"  # renamed when whole: a worker never reads a half-tuned log (or its cost model)
            state = api.tune(TINY, "avx2", log=work / "tiny.jsonl", trials=8, trials_per_task=4, layout="nchw", measure=PATIENT)
            assert state.new_trials == 8
            work.rename(tuned)
    path = tuned / "tiny.jsonl"
    tasks = {t.workload_key for t in api.lower_model(TINY, "avx2", layout="nchw").tasks}
    assert set(read_log(path).best()) == tasks, "the tiny tuning run left a task without a successful record"
    return path


@pytest.fixture
def fresh_serving(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A serving test starts with empty counters, no in-memory builds, no ``enable`` and its own disk cache."""
    import torch

    import tunebench
    from tunebench.serve import cache

    monkeypatch.setenv("TUNEBENCH_CACHE_DIR", str(tmp_path / "cache"))
    torch._dynamo.reset()
    cache.CACHE.memory.clear()
    cache.STATS.reset()
    tunebench.disable()


# The /proc/cpuinfo flags of a real AMD EPYC Zen 4 KVM guest (LLVM: znver4), verbatim: every name the ISA
# check compares is one a kernel really prints.
_ZEN4_CPUINFO = """fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht syscall nx
    mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc rep_good nopl xtopology nonstop_tsc cpuid extd_apicid tsc_known_freq
    pni pclmulqdq ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt tsc_deadline_timer aes xsave avx f16c rdrand
    hypervisor lahf_lm cmp_legacy cr8_legacy abm sse4a misalignsse 3dnowprefetch osvw topoext vmmcall fsgsbase
    tsc_adjust bmi1 avx2 smep bmi2 erms invpcid avx512f avx512dq rdseed adx smap avx512ifma clflushopt clwb avx512cd
    sha_ni avx512bw avx512vl xsaveopt xsavec xgetbv1 xsaves avx512_bf16 clzero xsaveerptr arat avx512vbmi umip
    avx512_vbmi2 gfni vaes vpclmulqdq avx512_vnni avx512_bitalg avx512_vpopcntdq rdpid fsrm"""
ZEN4_FLAGS = frozenset(_ZEN4_CPUINFO.split())
# Zen 3 (EPYC 7003): the same without AVX-512 and GFNI.
ZEN3_FLAGS = frozenset(f for f in ZEN4_FLAGS if not f.startswith("avx512") and f != "gfni")
# Intel Xeon with AVX-512 and AMX (Sapphire Rapids class), as cpuinfo names its extra vector extensions.
XEON_FLAGS = ZEN4_FLAGS | {"avx512_fp16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16"}


@dataclass(frozen=True)
class Host:
    """A machine the suite may run on: what /proc/cpuinfo, LLVM and psutil would say there."""

    name: str
    flags: frozenset[str]
    llvm_cpu: str
    cores: int = 2


HOSTS = {
    "zen3": Host("zen3", ZEN3_FLAGS, "znver3"),  # AVX2 only
    "haswell": Host("haswell", ZEN3_FLAGS, "haswell"),  # AVX2 only, not AMD: the avx512 preset is skylake-avx512
    "zen4": Host("zen4", ZEN4_FLAGS, "znver4"),
    "xeon": Host("xeon", XEON_FLAGS, "rocketlake", cores=3),  # no machine here has 3 cores: a fake count shows
    # an Intel guest whose hypervisor hides AMX from cpuinfo while LLVM still names the CPU emeraldrapids (2026-12-02)
    "emr_guest": Host("emr_guest", XEON_FLAGS - {"amx_tile", "amx_int8", "amx_bf16"}, "emeraldrapids"),
}
AVX2_HOSTS = ("zen3", "haswell")
AVX512_HOSTS = ("zen4", "xeon")


@pytest.fixture
def fake_host(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], Host]:
    """``fake_host(name)`` makes tunebench see the host ``HOSTS[name]``: its cpuinfo flags, LLVM CPU name,
    physical cores and model name, in ``tunebench.target`` and in every tunebench module that imported
    those functions by name (``from .target import cpu_flags``), so no code path still reads the real CPU."""
    import tunebench
    import tunebench.target as target

    # Import every tunebench module first: one first imported under the fake would keep it after the test.
    for info in pkgutil.walk_packages(tunebench.__path__, "tunebench."):  # the stage packages' modules too
        importlib.import_module(info.name)

    def fake(name: str) -> Host:
        host = HOSTS[name]
        fakes: dict[str, Callable[[], object]] = {
            "cpu_flags": lambda: host.flags,
            "llvm_system_cpu": lambda: host.llvm_cpu,
            "physical_cores": lambda: host.cores,
            "cpu_model": lambda: f"fake {host.name}",
        }
        real = {attr: getattr(target, attr) for attr in fakes}
        for module in [m for n, m in sys.modules.items() if n == "tunebench" or n.startswith("tunebench.")]:
            for attr, value in fakes.items():
                if getattr(module, attr, None) is real[attr] or module is target:
                    monkeypatch.setattr(module, attr, value)
        return host

    return fake


def rewritten(src: Path, dst: Path, target: dict | None = None, host: dict | None = None) -> Path:
    """A copy of log ``src`` with fields of every record's target and host replaced: the same
    schedules for another mcpu, or "timed" on another machine (then at another time, so a merge
    does not take them for duplicates of the originals)."""
    import json

    lines = []
    for line in src.read_text().splitlines():
        obj = json.loads(line)
        if obj["type"] == "record":
            obj["target"] = {**obj["target"], **(target or {})}
            if host:
                obj["host"], obj["time"] = {**obj["host"], **host}, obj["time"] + 1.0
        lines.append(json.dumps(obj))
    dst.write_text("\n".join(lines) + "\n")
    return dst
