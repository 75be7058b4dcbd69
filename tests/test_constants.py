"""Constant kernels folded once per distinct kernel (``lowering.constants``), to the results Relax's FoldConstant gives."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tunebench.lowering import constants, frontend
from tunebench.lowering.tasks import extract_tasks
from tunebench.target import resolve_target
from tunebench.zoo import get_model

TINY_MOBILE = "tests/fixtures/tiny.py:tiny_mobile"


def _constants(mod: Any) -> list[np.ndarray]:
    from tvm import ir

    out = []
    for block in mod["main"].body.blocks:
        for binding in block.bindings:
            for arg in getattr(binding.value, "args", []):
                out += [x.value.numpy() for x in getattr(arg, "fields", [arg]) if isinstance(x, ir.expr.Constant)]
    return out


def test_each_distinct_constant_kernel_is_built_once_and_folds_as_foldconstant_does(monkeypatch: pytest.MonkeyPatch) -> None:
    import tvm

    model, inputs = get_model(TINY_MOBILE)
    source = frontend.to_relax(frontend.export(model, inputs))
    spec = resolve_target("avx2")
    builds: list[Any] = []
    real_compile = tvm.compile
    monkeypatch.setattr(tvm, "compile", lambda mod, *a, **k: builds.append(mod) or real_compile(mod, *a, **k))
    ours = frontend.optimize(source, spec, layout="blocked")
    folded = len(builds)
    calls: list[Any] = []
    monkeypatch.setattr(constants, "fold_constants", lambda mod: calls.extend(_constant_calls(mod)) or mod)  # FoldConstant alone, as before
    theirs = frontend.optimize(source, spec, layout="blocked")

    assert [t.workload_key for t in extract_tasks(ours, spec)] == [t.workload_key for t in extract_tasks(theirs, spec)]
    ours_c, theirs_c = _constants(ours), _constants(theirs)
    assert len(ours_c) == len(theirs_c) > 0
    for a, b in zip(ours_c, theirs_c, strict=True):
        np.testing.assert_array_equal(a, b)
    # the batch-norm parameters of 5 convs are shaped alike for each channel count: fewer kernels than calls
    assert 0 < folded < len(calls), (folded, len(calls))


def _constant_calls(mod: Any) -> list[Any]:
    """The kernel calls of ``mod``'s main whose arguments are all constants: FoldConstant builds a kernel for each."""
    from tvm import ir

    call_tir = ir.Op.get("relax.call_tir")
    values = [b.value for block in mod["main"].body.blocks for b in block.bindings]
    return [v for v in values if isinstance(v, ir.expr.Call) and v.op.same_as(call_tir) and all(isinstance(a, ir.expr.Constant) for a in v.args[1].fields)]
