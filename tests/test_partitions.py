"""Tuning a model in the parts the backend serves: ops the Relax frontend lacks stay in PyTorch,
the rest is tuned partition by partition; and tuning one model at several batch sizes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import tunebench
from tests.conftest import PATIENT
from tunebench import api
from tunebench.cli import app
from tunebench.logs.records import read_log
from tunebench.lowering.tasks import Task, merge_tasks
from tunebench.serve import backend, cache
from tunebench.zoo import get_model

ROOT = Path(__file__).resolve().parents[1]
PARTS = str(ROOT / "tests/fixtures/partitioned.py") + ":conv_i0_conv"
ONLY_I0 = str(ROOT / "tests/fixtures/partitioned.py") + ":only_i0"
TINY = str(ROOT / "tests/fixtures/tiny.py") + ":tiny_conv"
I0_LINE = "aten.i0.default x1: not converted by the Relax frontend"


pytestmark = pytest.mark.usefixtures("fresh_serving")  # tests.conftest: counters, builds and cache start empty


def test_partitioned_model_is_tuned_then_served_in_tvm(tmp_path: Path) -> None:
    assert "i0.default" not in backend.relax_convertible_ops()  # else the model would lower whole
    log = tmp_path / "parts.jsonl"
    state = api.tune(PARTS, "avx2", log=log, trials=8, trials_per_task=4, layout="nchw", measure=PATIENT)
    lowered = api.lower_model(PARTS, "avx2", layout="nchw")
    assert state.new_trials == 8 and len(lowered.tasks) == 2  # one conv task per partition
    assert sorted(part.name for part in lowered.lowerings) == ["tvm_0", "tvm_1"]
    assert [str(op) for op in lowered.pytorch_ops] == [I0_LINE]
    assert set(read_log(log).best()) == {t.workload_key for t in lowered.tasks}

    model, (x,) = get_model(PARTS)
    with tunebench.apply_history_best(log), backend.watch() as graphs, torch.no_grad():
        got = torch.compile(model, backend="tunebench")(x)  # fallback "untuned": TVM only with every task tuned
        want = model(x)
    served = backend.served(graphs)
    assert (served.tvm, served.pytorch, served.tuned, served.tasks) == (2, 0, 2, 2)
    assert cache.STATS.tvm_runs == 2
    assert "aten.i0.default" in [str(n.target) for g in graphs for n in g.module.graph.nodes if n.op == "call_function"]
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3)
    assert not list((tmp_path / "cache").glob("plans/*")), "a split with ops in PyTorch must be redone, not planned"


def test_whole_model_module_of_a_partitioned_model_is_a_clear_error() -> None:
    lowered = api.lower_model(PARTS, "avx2", layout="nchw")
    with pytest.raises(tunebench.TunebenchError, match=r"ops TVM cannot lower \(aten\.i0\.default.*torch\.compile"):
        lowered.whole()


def test_model_with_no_convertible_op_is_an_error() -> None:
    with pytest.raises(tunebench.TunebenchError, match=r"no op of the model can be lowered by TVM \(in PyTorch: aten\.i0\.default"):
        api.lower_model(ONLY_I0, "avx2", layout="nchw")


def test_tasks_command_lists_the_ops_left_in_pytorch() -> None:
    result = CliRunner().invoke(app, ["tasks", PARTS, "--layout", "nchw"])
    assert result.exit_code == 0, result.output
    assert "2 tuning tasks" in result.output
    assert "2 TVM partitions" in result.output and I0_LINE in result.output


def test_batches_tune_the_union_of_their_tasks() -> None:
    per_batch = [{t.workload_key for t in api.lower_model(TINY, "avx2", layout="nchw", batch=[b]).tasks} for b in (1, 2)]
    both = api.lower_model(TINY, "avx2", layout="nchw", batch=[1, 2])
    assert per_batch[0].isdisjoint(per_batch[1])  # the batch is part of every workload
    assert [t.workload_key for t in both.tasks] == list(dict.fromkeys(t.workload_key for t in both.tasks))
    assert {t.workload_key for t in both.tasks} == per_batch[0] | per_batch[1]
    assert [x.example_inputs[0].shape[0] for x in both.lowerings] == [1, 2]


def test_merge_sums_weights_and_keeps_names_distinct() -> None:
    def task(name: str, key: str, weight: int, flop: float = 1.0) -> Task:
        return Task(name, "conv2d_nchw", flop, weight, key, None)

    merged = merge_tasks([[task("fused_conv", "a", 1), task("fused_add", "b", 2)], [task("fused_conv", "c", 1, 5.0), task("fused_add", "b", 3)]])
    assert [(t.name, t.workload_key, t.weight) for t in merged] == [("fused_add", "b", 5), ("fused_conv_1", "c", 1), ("fused_conv", "a", 1)]


def test_as_served_lowers_the_graph_dynamo_captures() -> None:
    """``--as-served``: the tasks of the partitions torch.compile serves; for a model that exports whole alike, the same workloads."""
    served = api.lower_model(TINY, "avx2", layout="nchw", served=True)
    whole = api.lower_model(TINY, "avx2", layout="nchw")
    assert {t.workload_key for t in served.tasks} == {t.workload_key for t in whole.tasks}
    assert [lo.name for lo in served.lowerings] == ["tvm_0"] and not served.pytorch_ops


def test_split_graph_runs_without_export_input_checks() -> None:
    """The fused graph is called on every served call: it keeps none of ``ExportedProgram.module()``'s
    per-call input checks (pytree walks over every weight), and still computes the model."""
    from tunebench.lowering.partition import partition

    module, (x,) = get_model(TINY)
    split = partition(module, (x,))
    assert not split.module._forward_pre_hooks and not split.module._forward_hooks
    assert "_guards_fn" not in split.module.code
    with torch.no_grad():
        torch.testing.assert_close(split.module(x), module(x))


def test_serving_from_the_cache_prints_no_torch_deprecation() -> None:
    """A graph with ops left in PyTorch is exported and split again by every process that serves it
    (only whole-TVM graphs are planned); torch 2.13's ``run_decompositions`` then printed
    ``FutureWarning: isinstance(treespec, LeafSpec) is deprecated``, noise a user cannot act on.
    Caught here although pyproject ignores FutureWarning for the suite."""
    import warnings

    model, (x,) = get_model(PARTS)
    options = {"fallback": "never"}
    with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.compile(model, backend="tunebench", options=options)(x)
        torch._dynamo.reset()
        cache.CACHE.memory.clear()  # as a new process does: the builds come from disk
        torch.testing.assert_close(torch.compile(model, backend="tunebench", options=options)(x), model(x), rtol=1e-3, atol=1e-3)
    assert (cache.STATS.compiles, cache.STATS.disk_hits) == (2, 2)
    assert [str(w.message) for w in caught if issubclass(w.category, FutureWarning)] == []
