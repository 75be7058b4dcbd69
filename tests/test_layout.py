"""Issue 7: convs in the blocked NCHW[x]c layout, and serving the lowering the log measured fastest."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.conftest import AVX2_HOSTS, AVX512_HOSTS, HOSTS, PATIENT, TINY, Host
from tunebench import api, target
from tunebench.errors import TunebenchError
from tunebench.logs.records import HistoryLog, Record, WorkloadEntry, read_log
from tunebench.lowering import layout
from tunebench.serve import build, choose, runtime
from tunebench.target import resolve_target

TARGET = {"kind": "llvm", "mcpu": "core-avx2", "num-cores": 2}


@pytest.mark.parametrize("host_name", [*AVX2_HOSTS, *AVX512_HOSTS])
def test_block_is_one_vector_of_fp32(fake_host: Callable[[str], Host], host_name: str) -> None:
    """The block follows the target, never the host: an avx512 log is lowered alike on every machine."""
    fake_host(host_name)
    assert layout.block(resolve_target("avx2", check=False)) == 8
    assert layout.block(resolve_target("avx512", check=False)) == 16
    assert layout.block(resolve_target("native")) == (16 if "avx512f" in HOSTS[host_name].flags else 8)


def test_blocked_lowering_matches_eager() -> None:
    from tunebench.zoo import get_model

    module, (x,) = get_model(TINY)
    lowered = api.lower_model(TINY, "avx2", layout="blocked")
    names = [t.name for t in lowered.tasks]
    # both convs blocked by 8: conv2 (8 -> 8 channels) and conv1, whose 3 input channels are one block
    assert sum(layout.TASK_MARK in n for n in names) == 2, names
    compiled = runtime.CompiledModel(build.build(lowered.relax_mod, lowered.target), choose.Coverage([]))
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), module(x), rtol=1e-4, atol=1e-4)
    with pytest.raises(TunebenchError, match="NCHW layout only"):
        api.lower_model(TINY, "avx2", winograd=True, layout="blocked")
    with pytest.raises(TunebenchError, match="unknown layout 'nhwc'"):
        api.lower_model(TINY, "avx2", layout="nhwc")


MOBILE = "tests/fixtures/tiny.py:tiny_mobile"


def _kernels(mod: Any) -> list[str]:
    """The PrimFuncs the lowered model calls, in order (a kernel per call)."""
    return re.findall(r"R\.call_tir\((?:cls\.)?(\w+)", mod["main"].script())


@pytest.mark.parametrize("preset", ["avx2", "avx512"])
def test_depthwise_and_stem_convs_stay_blocked(preset: str) -> None:
    """MobileNetV2's pattern blocked end to end: the 3-channel stem writes blocked output, the depthwise
    conv runs blocked (``_depthwise_nchwc``) and its ReLU6 fuses into the conv, so the activations
    change layout only at the model's input and output. A grouped conv that is not depthwise stays NCHW.
    AVX-512 is lowered and compiled on any host (run where the host has it)."""
    from tunebench.lowering import frontend
    from tunebench.zoo import get_model

    module, (x,) = get_model(MOBILE)
    spec = resolve_target(preset, check=False)
    mod = frontend.optimize(frontend.to_relax(frontend.export(module, (x,))), spec, layout="blocked")
    kernels = _kernels(mod)
    assert sum("layout_transform" in k for k in kernels) == 2, kernels  # in and out, nothing between
    assert kernels[1].startswith("fused_conv2d_NCHWc"), kernels  # the stem, right after the input's
    assert sum(layout.DEPTHWISE_MARK in k for k in kernels) == 1, kernels
    nchw = [k for k in kernels if "conv2d" in k and layout.TASK_MARK not in k]
    assert len(nchw) == 1 and nchw[0] == kernels[-1], kernels  # the 2-group conv, last
    assert not any("clip" in k or k.startswith(("maximum", "minimum")) for k in kernels), kernels  # ReLU6 fused
    executable = build.build(mod, spec)
    if preset == "avx2" or "avx512f" in target.cpu_flags():
        compiled = runtime.CompiledModel(executable, choose.Coverage([]))
        with torch.no_grad():
            torch.testing.assert_close(compiled(x), module(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("preset", ["avx2", "avx512"])
def test_channels_a_block_does_not_divide_take_half_a_block(preset: str) -> None:
    """24 channels between layers of 16, 48 and 32 (MobileNetV2's narrow stage): under AVX-512 the
    24-channel activations are blocked by 8 and each conv reads one block size and writes another,
    so no layout transform runs between the convs; under AVX2 every block is 8. Outputs match eager."""
    from tunebench.lowering import frontend
    from tunebench.zoo import get_model

    module, (x,) = get_model("tests/fixtures/tiny.py:tiny_narrow")
    spec = resolve_target(preset, check=False)
    mod = frontend.optimize(frontend.to_relax(frontend.export(module, (x,))), spec, layout="blocked")
    kernels = _kernels(mod)
    assert sum("layout_transform" in k for k in kernels) == 2, kernels  # the input's and the output's only
    assert all(layout.TASK_MARK in k for k in kernels if "conv2d" in k), kernels
    shapes = re.findall(r"out_ty=R\.Tensor\(\((\d+(?:, \d+)*)\)", mod["main"].script())
    blocks = {int(s.split(", ")[-1]) for s in shapes if s.count(",") == 4}  # the blocked activations' last axis
    assert blocks == ({1, 8, 16} if preset == "avx512" else {1, 8}), shapes  # 1: the input, NCHW reshaped
    assert "1, 3, 16, 16, 8" in shapes, shapes  # the 24 channels, blocked by 8 under either ISA
    if preset == "avx2" or "avx512f" in target.cpu_flags():
        compiled = runtime.CompiledModel(build.build(mod, spec), choose.Coverage([]))
        with torch.no_grad():
            torch.testing.assert_close(compiled(x), module(x), rtol=1e-4, atol=1e-4)


def _log(tasks: list, seconds: float, protocol: str, host: dict | None = None) -> HistoryLog:
    log = HistoryLog()
    for t in tasks:
        log.workloads[t.workload_key] = WorkloadEntry(t.workload_key, t.name, t.flop, "", t.weight)
        log.records.append(Record(t.workload_key, [], [], [seconds], None, TARGET, dict(host or {}), "0.27", protocol=protocol))
    return log


def test_the_lowering_the_log_measured_fastest_is_served() -> None:
    nchw = api.lower_model(TINY, "avx2", layout="nchw")
    blocked = api.lower_model(TINY, "avx2", layout="blocked")
    spec = nchw.target

    def pick(log: HistoryLog) -> choose.LoweringChoice:
        return choose.choose_lowering(nchw.source, nchw.relax_mod, "nchw", spec, log, choose.best_records(log, spec, warn=False))

    both = _log(nchw.tasks, 2e-3, "cold")  # the stem conv's task is the same workload in both
    both.extend(_log([t for t in blocked.tasks if t.workload_key not in both.workloads], 1e-4, "cold"))
    chosen = pick(both)
    assert chosen.layout == "blocked" and chosen.estimate[-1] < sum(t.weight * 2e-3 for t in nchw.tasks)
    # one blocked task without a record: the complete NCHW lowering wins
    partial = HistoryLog(workloads=both.workloads, records=both.records[:-1])
    assert pick(partial).layout == "nchw"
    # faster, but timed warm: never preferred to a lowering timed cold throughout
    warm = _log(nchw.tasks, 2e-3, "cold")
    warm.extend(_log([t for t in blocked.tasks if t.workload_key not in warm.workloads], 1e-4, "warm"))
    assert pick(warm).layout == "nchw"
    # faster, but timed on another kind of machine: never preferred to a lowering timed here throughout
    here = {"llvm_cpu": target.llvm_system_cpu(), "threads": spec.num_cores}
    local = _log(nchw.tasks, 2e-3, "cold", host=here)
    local.extend(_log([t for t in blocked.tasks if t.workload_key not in local.workloads], 1e-4, "cold"))
    assert pick(local).layout == "nchw"
    for r in local.records:  # once the blocked tasks are timed here too, speed decides again
        r.host = here
    assert pick(local).layout == "blocked"
    # a lowering given blocked finds the NCHW one too
    only_nchw = _log(nchw.tasks, 2e-3, "cold")
    assert choose.choose_lowering(nchw.source, blocked.relax_mod, "blocked", spec, only_nchw, choose.best_records(only_nchw, spec)).layout == "nchw"


def test_tune_blocked_then_serve_it(tmp_path: Path) -> None:
    from tunebench.zoo import get_model

    log_path = tmp_path / "blocked.jsonl"
    state = api.tune(TINY, "avx2", log=log_path, trials_per_task=2, measure=PATIENT)  # the default layout
    assert any(layout.TASK_MARK in s.task.name for s in state.states)
    log = read_log(log_path)
    assert layout.in_log(log)
    lowered = api.lower_model(TINY, "avx2", layout="nchw")  # NCHW, as serving lowers first
    compiled = build.compile_model(lowered.relax_mod, lowered.target, log, source=lowered.source)
    assert compiled.lowering is not None and compiled.lowering.layout == "blocked", compiled.lowering
    assert compiled.coverage.complete, str(compiled.coverage)
    module, (x,) = get_model(TINY)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), module(x), rtol=1e-4, atol=1e-4)
