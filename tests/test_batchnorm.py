"""Issue 22: batch norms folded into the convs before them, and older logs' schedules serving the folded convs."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch import nn

from tests.conftest import TINY
from tests.test_layout import MOBILE, _log
from tunebench.logs.records import WorkloadEntry
from tunebench.logs.traces import op_signature, refitted, relatives, replay
from tunebench.lowering import batchnorm, frontend
from tunebench.lowering.batchnorm import fold_batch_norms
from tunebench.lowering.tasks import extract_tasks
from tunebench.search.measure import import_tensor_intrinsics
from tunebench.target import resolve_target
from tunebench.zoo import get_model


class NormsAround(nn.Module):
    """A batch norm on the input (no conv before it: it stays) and one after each conv, with
    statistics and affine parameters other than the identity."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.BatchNorm2d(3)
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1, groups=2, bias=False), nn.BatchNorm2d(8)
        for bn in (self.first, self.bn1, self.bn2):
            for t in (bn.weight, bn.bias, bn.running_mean):
                t.data.uniform_(-1.0, 1.0)
            bn.running_var.data.uniform_(0.2, 3.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(self.first(x))))))


def test_each_batch_norm_after_a_conv_folds_into_it_and_the_output_stays_eagers() -> None:
    from tunebench.serve import build, choose, runtime

    torch.manual_seed(0)
    module, x = NormsAround().eval(), torch.randn(1, 3, 12, 12)
    spec = resolve_target("avx2", check=False)
    source = frontend.to_relax(frontend.export(module, (x,)))
    assert fold_batch_norms(source)["main"].script().count("R.nn.batch_norm(") == 1  # the input's: no conv before it
    assert source["main"].script().count("R.nn.batch_norm(") == 3  # folding copies: the imported module is lowered other ways too
    mod = frontend.optimize(source, spec, layout="blocked", fold=True)
    kernels = re.findall(r"R\.call_tir\((?:cls\.)?(\w+)", mod["main"].script())
    convs = [k for k in kernels if "conv2d" in k]
    assert len(convs) == 2 and not any("divide" in k or "subtract" in k for k in convs), kernels
    compiled = runtime.CompiledModel(build.build(mod, spec), choose.Coverage([]))
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), module(x), rtol=1e-4, atol=1e-4)


def test_a_schedule_tuned_with_the_batch_norm_in_the_epilogue_serves_the_folded_conv() -> None:
    """A log of the default lowering holds the stem conv with its batch norm decomposed in the epilogue:
    that workload is the folded stem's nearest relative, its schedule does not replay on the folded
    task as recorded (the epilogue's blocks are gone) but applies through the conv's anchor block,
    and computes what the unscheduled folded task computes."""
    import tvm
    import tvm_ffi
    from tvm.s_tir import meta_schedule as ms

    module, (x,) = get_model(MOBILE)
    spec = resolve_target("avx2", check=False)
    exported = frontend.export(module, (x,))
    unfolded_mod = frontend.optimize(frontend.to_relax(exported), spec, layout="blocked")
    unfolded = {t.workload_key: t for t in extract_tasks(unfolded_mod, spec)}
    folded = extract_tasks(frontend.optimize(fold_batch_norms(frontend.to_relax(exported)), spec, layout="blocked"), spec)
    stem = next(t for t in folded if t.name.startswith("fused_conv2d_NCHWc_add"))
    known = {k: WorkloadEntry(k, t.name, t.flop, ms.database.Workload(t.mod).as_json()[1], t.weight) for k, t in unfolded.items()}
    twin = unfolded[relatives(stem.name, stem.flop, known)[0]]
    assert "_subtract_divide_multiply_add" in twin.name and op_signature(twin.name) == op_signature(stem.name)

    import_tensor_intrinsics()  # TuneContext would import every backend's: minutes with torch loaded
    ctx = ms.TuneContext(mod=twin.mod, target=spec.tvm(), space_generator="post-order-apply", task_name=twin.name, num_threads=2, rand_state=1)
    trace = ctx.generate_design_space()[0].trace.as_json(remove_postproc=False)
    assert replay(trace, stem.mod) is None
    sch = refitted(trace, stem.mod, known[twin.workload_key], spec.tvm())
    assert sch is not None and not tvm_ffi.structural_equal(sch.mod, stem.mod)

    from tvm.s_tir.meta_schedule.arg_info import ArgInfo

    rng = np.random.default_rng(0)
    infos = ArgInfo.from_prim_func(stem.mod["main"])
    inputs = [rng.standard_normal([int(d) for d in a.shape]).astype(a.dtype) for a in infos]
    outs = []
    for m in (sch.mod, stem.mod):
        args = [tvm.runtime.tensor(a) for a in inputs]
        tvm.compile(m, target=spec.tvm())["main"](*args)
        outs.append(args[-1].numpy())
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-5, atol=1e-5)


def test_a_folded_conv_takes_its_own_twins_schedule_before_another_stages_of_closer_flop() -> None:
    """ResNet's stages do equal work per 3x3 conv; with the batch norm in the epilogue the stage with
    fewer output elements is nearer a folded conv in FLOP than the conv's own unfolded twin."""
    conv = 2 * 56 * 56 * 64 * 64 * 9  # FLOP of a 3x3 conv in stage 1, and in stage 2 (28x28, 128 channels)
    own = WorkloadEntry("own", "fused_conv2d_NCHWc1_subtract1_divide1_multiply1_add2_relu1", conv + 5 * 56 * 56 * 64, "", 2)
    other = WorkloadEntry("other", "fused_conv2d_NCHWc4_subtract2_divide2_multiply2_add5_relu2", conv + 5 * 28 * 28 * 128, "", 2)
    folded_flop = conv + 2 * 56 * 56 * 64
    assert abs(other.flop - folded_flop) < abs(own.flop - folded_flop)
    assert relatives("fused_conv2d_NCHWc1_add1_relu1", folded_flop, {"own": own, "other": other}) == ["own", "other"]


def test_serving_folds_the_batch_norms_when_the_logs_folded_tasks_are_faster() -> None:
    """Folding is a lowering the log chooses, as the layout is: a log holding the folded convs
    (``tune --fold-bn``) serves them folded when their estimate wins, unfolded when it loses or a
    folded task has no record; a model without a batch norm never lowers a folded candidate."""
    from tunebench import api
    from tunebench.errors import TunebenchError
    from tunebench.serve import choose

    torch.manual_seed(0)
    module, x = NormsAround().eval(), torch.randn(1, 3, 12, 12)
    plain = api.lower_model(module, "avx2", example_inputs=(x,), layout="blocked")
    folded = api.lower_model(module, "avx2", example_inputs=(x,), layout="blocked", fold_bn=True)
    spec = plain.target
    new = [t for t in folded.tasks if t.workload_key not in {u.workload_key for u in plain.tasks}]
    assert new and all("conv2d" not in t.name or "subtract" not in t.name for t in new)

    def pick(folded_seconds: float, drop: int = 0) -> choose.LoweringChoice:
        log = _log(plain.tasks, 2e-3, "cold")
        assert not batchnorm.in_log(log)
        log.extend(_log(new, folded_seconds, "cold"))
        log.records = log.records[: len(log.records) - drop]
        return choose.choose_lowering(plain.source, plain.relax_mod, "blocked", spec, log, choose.best_records(log, spec, warn=False))

    faster = pick(1e-4)
    assert faster.folded and faster.layout == "blocked" and "batch norms folded" in str(faster)
    assert {t.workload_key for t in extract_tasks(faster.mod, spec)} == {t.workload_key for t in folded.tasks}
    assert not pick(1e-2).folded
    assert not pick(1e-4, drop=1).folded  # a folded task without a record

    tiny = api.lower_model(TINY, "avx2", layout="blocked")  # no batch norm: folding changes nothing
    assert batchnorm.folded_or_none(tiny.source) is None and batchnorm.folded_or_none(plain.source) is not None
    with pytest.raises(TunebenchError, match="--fold-bn or --winograd"):
        api.lower_model(module, "avx2", example_inputs=(x,), layout="nchw", winograd=True, fold_bn=True)
