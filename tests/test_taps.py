"""Issue 22's padded-tap lever: padded convs that multiply only the taps inside the image (``lowering.taps``)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tests.conftest import PATIENT, TINY
from tunebench import api
from tunebench.logs.records import read_log
from tunebench.lowering import layout, taps
from tunebench.serve import build, choose, runtime

MOBILE = "tests/fixtures/tiny.py:tiny_mobile"


def test_taps_lowering_guards_padded_convs_only_and_matches_eager() -> None:
    """The stem and depthwise convs (padded) get the valid-tap compute; the 1x1 convs keep the
    blocked layout's own workloads, so their records serve either lowering. Outputs match eager."""
    from tunebench.zoo import get_model

    blocked = api.lower_model(MOBILE, "avx2", layout="blocked")
    valid = api.lower_model(MOBILE, "avx2", layout="taps")
    guarded = [t.name for t in valid.tasks if taps.TASK_MARK in t.name]
    assert len(guarded) == 2 and any(layout.DEPTHWISE_MARK in n for n in guarded), guarded
    shared = {t.workload_key for t in valid.tasks} & {t.workload_key for t in blocked.tasks}
    assert len(shared) == len(valid.tasks) - 2, [t.name for t in valid.tasks]
    assert taps.in_log(_log_of(valid.tasks)) and not taps.in_log(_log_of(blocked.tasks))
    module, (x,) = get_model(MOBILE)
    compiled = runtime.CompiledModel(build.build(valid.relax_mod, valid.target), choose.Coverage([]))
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), module(x), rtol=1e-4, atol=1e-4)


def _log_of(tasks: list[Any]) -> Any:
    from tunebench.logs.records import HistoryLog, WorkloadEntry

    return HistoryLog(workloads={t.workload_key: WorkloadEntry(t.workload_key, t.name, t.flop, "", t.weight) for t in tasks})


def test_build_option_splits_the_guarded_kernel_and_leaves_the_plain_one_alone() -> None:
    """Under ``build_config`` the valid-tap conv compiles to other code (its border loops split off)
    with the same results, while the plain blocked conv compiles to the very same code; and a build
    worker's start-up leaves that option on for every build it runs."""
    import tvm

    spec = api.lower_model(TINY, "avx2", layout="taps").target

    def conv_task(lay: str) -> Any:
        tasks = api.lower_model(TINY, "avx2", layout=lay).tasks
        return next(t for t in tasks if layout.TASK_MARK in t.name)  # both convs are padded

    def compiled(task: Any, option: bool) -> tuple[str, Any]:
        with tvm.transform.PassContext(opt_level=3), (taps.build_config() if option else contextlib.nullcontext()):
            lib = tvm.compile(task.mod, target=spec.tvm()).mod
        return lib.inspect_source("asm"), lib

    for lay, differs in (("taps", True), ("blocked", False)):
        task = conv_task(lay)
        (plain, lib0), (split, lib1) = compiled(task, False), compiled(task, True)
        assert (plain != split) is differs, lay
        outs = [_run(lib, task) for lib in (lib0, lib1)]
        np.testing.assert_allclose(outs[0], outs[1], rtol=1e-5, atol=1e-5)
    probe = "from tunebench.search.measure import start_worker; start_worker(); import tvm; print(dict(tvm.transform.PassContext.current().config))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert "partition_const_loop" in out, out


def _run(lib: Any, task: Any) -> np.ndarray:
    import tvm
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo

    rng = np.random.default_rng(0)
    infos = [a.as_json() for a in ArgInfo.from_prim_func(task.mod["main"])]  # ["TENSOR", dtype, shape]
    args = [tvm.runtime.tensor(rng.uniform(-1, 1, [int(d) for d in shape]).astype(str(dtype))) for _, dtype, shape in infos]
    lib["main"](*args)
    return args[-1].numpy()


def test_tune_taps_then_serve_it(tmp_path: Path) -> None:
    """A log tuned with ``layout="taps"`` covers that lowering alone, so serving (which lowers NCHW
    first) picks it; the served model matches eager."""
    from tunebench.zoo import get_model

    log_path = tmp_path / "taps.jsonl"
    api.tune(TINY, "avx2", log=log_path, trials_per_task=2, layout="taps", measure=PATIENT)
    log = read_log(log_path)
    assert taps.in_log(log)
    lowered = api.lower_model(TINY, "avx2", layout="nchw")
    compiled = build.compile_model(lowered.relax_mod, lowered.target, log, source=lowered.source)
    assert compiled.lowering is not None and compiled.lowering.layout == "taps", compiled.lowering
    assert compiled.coverage.complete, str(compiled.coverage)
    module, (x,) = get_model(TINY)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), module(x), rtol=1e-4, atol=1e-4)
