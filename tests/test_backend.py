"""Serving: torch.compile backend, partitioning, compile cache, apply_history_best, foreign records.

Inputs are tiny (untuned TVM kernels are naive); one small tuning run is shared by the session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import pytest
import torch

import tunebench
from models._init import seeded_init
from models.mobilenet import MobileNetV2
from tests.conftest import HOSTS, Host, rewritten
from tunebench.logs.records import read_log, unusable_reason
from tunebench.serve import backend, cache
from tunebench.serve.choose import ForeignRecordWarning
from tunebench.target import TargetSpec
from tunebench.zoo import get_model

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "tests/fixtures/tiny.py") + ":tiny_conv"
SMALL_INPUTS = {"bert_tiny": (1, 16)}


pytestmark = pytest.mark.usefixtures("fresh_serving")  # tests.conftest: counters, builds and cache start empty


def tiny() -> tuple[torch.nn.Module, torch.Tensor]:
    model, (x,) = get_model(TINY)
    return model, x


def small_input(name: str) -> torch.Tensor:
    if name in SMALL_INPUTS:
        return torch.randint(0, 1000, SMALL_INPUTS[name], dtype=torch.int64)
    return torch.randn(1, 3, 32, 32)


def check_close(got: torch.Tensor, want: torch.Tensor) -> None:
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3)


class MiniMobileNet(MobileNetV2):
    """The zoo's MobileNetV2 code with two of its seven stages (a strided block, then one with the residual
    add): the operators the full model hands the backend, without compiling its 17 blocks."""

    SETTINGS: ClassVar[list[tuple[int, int, int, int]]] = [(1, 16, 1, 1), (6, 24, 2, 2)]


def _model(name: str) -> torch.nn.Module:
    return seeded_init(MiniMobileNet()) if name == "mini_mobilenet" else get_model(name)[0]


# resnet34 and resnet50 are left out: after torch.export they use exactly resnet18's operators, so they would
# partition alike, and mobilenet_v2 only adds hardtanh and depthwise convs, which its mini version has;
# test_foundation lowers and runs every full zoo model.
@pytest.mark.parametrize("name", ["resnet18", "bert_tiny", "mini_mobilenet"])
def test_zoo_model_matches_eager_in_tvm(name: str) -> None:
    model = _model(name)
    x = small_input(name)
    compiled = torch.compile(model, backend="tunebench", options={"fallback": "never"})
    with torch.no_grad():
        got, want = compiled(x), model(x)
    check_close(got, want)
    assert cache.STATS.tvm_runs == 1 and cache.STATS.compiles == 1  # the whole model is one TVM subgraph


class WithErfcx(torch.nn.Module):
    """special_erfcx has no Relax converter: the convs around it must still go to TVM."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.conv2 = torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(4, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv2(torch.special.erfcx(self.conv1(x))))


def test_unsupported_op_stays_in_pytorch() -> None:
    assert "special_erfcx.default" not in backend.relax_convertible_ops()
    model, x = WithErfcx().eval(), torch.randn(1, 3, 12, 12)
    with pytest.raises(tunebench.TunebenchError, match="special_erfcx"):  # the whole-model path really cannot lower it
        tunebench.lower_model(model, "avx2", example_inputs=(x,), layout="nchw").whole()
    compiled = tunebench.compile(model, x, fallback="never")
    check_close(compiled(x), model(x))
    graph = compiled.last
    assert [s.runner for s in graph.subgraphs] == ["tvm", "tvm"]
    pytorch_ops = [str(n.target) for n in graph.module.graph.nodes if n.op == "call_function"]
    assert "aten.special_erfcx.default" in pytorch_ops
    assert cache.STATS.tvm_runs == 2  # compile() builds without running; one call ran both TVM subgraphs


def test_untuned_subgraphs_run_in_pytorch_by_default() -> None:
    model, x = tiny()
    with pytest.warns(backend.UntunedFallbackWarning, match="0/2 of their tasks"):
        got = torch.compile(model, backend="tunebench")(x)
    check_close(got, model(x))
    assert cache.STATS.tvm_runs == 0


def test_unknown_option_is_an_error() -> None:
    model, x = tiny()
    with pytest.raises(Exception, match=r"unknown tunebench option.*'fallbak'"):
        torch.compile(model, backend="tunebench", options={"fallbak": "never"})(x)


def test_shape_cache_compiles_once_per_shape() -> None:
    model, x = tiny()
    compiled = torch.compile(model, backend="tunebench", options={"fallback": "never", "num_threads": 1})
    with torch.no_grad():
        compiled(x)
        compiled(x)
        assert (cache.STATS.compiles, cache.STATS.tvm_runs) == (1, 2)
        x2 = torch.randn(2, 3, 8, 8)
        check_close(compiled(x2), model(x2))
        assert cache.STATS.compiles == 2
        check_close(compiled(x), model(x))
        assert cache.STATS.compiles == 2 and cache.STATS.tvm_runs == 4
    import tvm

    assert tvm.runtime.num_threads() == 1  # the num_threads option sized TVM's pool


def test_each_model_instance_is_served_its_own_weights() -> None:
    # dynamo hands the first compile's dispatcher a second instance of the same class: its build must not be reused
    cls, x = type(tiny()[0]), torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        for seed in (0, 1):
            torch.manual_seed(seed)
            model = cls().eval()
            check_close(torch.compile(model, backend="tunebench", options={"fallback": "never"})(x), model(x))
    assert cache.STATS.compiles == 2


def test_in_place_weight_updates_are_seen() -> None:
    """load_state_dict and in-place writes keep the addresses dynamo guards on: the version counters catch them."""
    model, x = tiny()
    compiled = torch.compile(model, backend="tunebench", options={"fallback": "never"})
    aot = tunebench.compile(model, x, fallback="never")  # exports the user's module itself: its parameters are watched
    with torch.no_grad():
        compiled(x), aot(x)
        model.conv2.weight.mul_(-2.0)
        with pytest.warns(backend.WeightsChangedWarning):
            check_close(compiled(x), model(x))
        with pytest.warns(backend.WeightsChangedWarning):
            check_close(aot(x), model(x))
        torch.manual_seed(7)
        model.load_state_dict(type(model)().state_dict())
        with pytest.warns(backend.WeightsChangedWarning):
            check_close(compiled(x), model(x))
        with warnings.catch_warnings():
            warnings.simplefilter("error", backend.WeightsChangedWarning)
            check_close(compiled(x), model(x))  # rebuilt once, not on every call


def test_threads_share_one_compiled_model() -> None:
    """8 threads call one compiled model from the first call on: one build, every output its eager value."""
    from concurrent.futures import ThreadPoolExecutor

    model, _ = tiny()
    compiled = torch.compile(model, backend="tunebench", options={"fallback": "never"})
    xs = [torch.randn(1, 3, 16, 16) for _ in range(8)]
    with torch.no_grad():
        want = [model(x) for x in xs]

    def serve(i: int) -> list[torch.Tensor]:
        with torch.no_grad():
            return [compiled(xs[i]) for _ in range(5)]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(serve, range(8)))
    for got, expected in zip(results, want, strict=True):
        for out in got:
            check_close(out, expected)
    assert cache.STATS.compiles == 1 and cache.STATS.tvm_runs == 40


def test_compiling_leaves_the_module_in_its_mode() -> None:
    model, x = tiny()
    model.train()
    tunebench.compile(model, x, fallback="never")
    assert all(m.training for m in model.modules()), "export switched the user's module to eval mode"


CHILD = """
import json, sys, torch
sys.path.insert(0, {fixtures!r})
from tiny import tiny_conv
model, (x,) = tiny_conv()
with torch.no_grad():
    out = torch.compile(model, backend="tunebench", options={{"fallback": "never"}})(x)  # entry point: no tunebench import
from tunebench.serve.cache import STATS
counts = {{name: getattr(STATS, name) for name in ("compiles", "disk_hits", "tvm_runs", "plan_hits")}}
print(json.dumps({{**counts, "out": out.flatten().tolist()}}))
"""


def run_child(cache_dir: Path) -> dict:
    code = CHILD.format(fixtures=str(ROOT / "tests/fixtures"))
    env = {**os.environ, "TUNEBENCH_CACHE_DIR": str(cache_dir)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_fresh_process_loads_from_disk_cache(tmp_path: Path) -> None:
    model, x = tiny()
    with torch.no_grad():
        want = torch.compile(model, backend="tunebench", options={"fallback": "never", "cache_dir": str(tmp_path / "c")})(x)
    assert cache.STATS.compiles == 1 and list((tmp_path / "c").glob("*.so"))
    assert cache.STATS.plan_hits == 0 and len(list((tmp_path / "c" / "plans").glob("*.json"))) == 1
    child = run_child(tmp_path / "c")
    # served by the remembered split (one TVM subgraph, the whole graph): no export or partitioning
    assert (child["compiles"], child["disk_hits"], child["tvm_runs"], child["plan_hits"]) == (0, 1, 1, 1)
    assert child["out"] == want.flatten().tolist()
    for so in (tmp_path / "c").glob("*.so"):  # the library evicted: the plan is no use, the graph is split and built again
        so.unlink()
    torch._dynamo.reset()  # here as in a fresh process: plans are read from disk, builds from the emptied memory cache
    cache.CACHE.memory.clear()
    cache.STATS.reset()
    with torch.no_grad():
        got = torch.compile(model, backend="tunebench", options={"fallback": "never", "cache_dir": str(tmp_path / "c")})(x)
    assert (cache.STATS.compiles, cache.STATS.plan_hits) == (1, 0) and got.flatten().tolist() == want.flatten().tolist()


def test_corrupt_cache_entry_is_rebuilt(tmp_path: Path) -> None:
    model, x = tiny()
    options = {"fallback": "never", "cache_dir": str(tmp_path / "c")}
    with torch.no_grad():
        torch.compile(model, backend="tunebench", options=options)(x)
        for so in (tmp_path / "c").glob("*.so"):
            so.write_bytes(b"not a library")
        torch._dynamo.reset()
        cache.CACHE.memory.clear()
        with pytest.warns(cache.CacheWarning, match="unusable"):
            got = torch.compile(model, backend="tunebench", options=options)(x)
    check_close(got, model(x))
    assert cache.STATS.compiles == 2 and cache.STATS.disk_hits == 0


def test_tuned_records_are_applied(tiny_log: Path) -> None:
    model, x = tiny()
    best = set(read_log(tiny_log).best())
    assert best
    with tunebench.apply_history_best(tiny_log) as cfg:
        assert set(cfg.best) == best
        compiled = tunebench.compile(model, x)  # default policy: runs in TVM only because every task is tuned
        check_close(compiled(x), model(x))
        assert [s.runner for s in compiled.last.subgraphs] == ["tvm"]
        assert set(compiled.last.applied) == best
        assert compiled.last.coverage() == f"1/1 subgraphs in TVM, {len(best)}/2 tasks tuned, nchw layout"  # the lowering served, from the log
        with torch.no_grad(), backend.watch() as graphs:
            check_close(torch.compile(model, backend="tunebench")(x), model(x))
    assert cache.STATS.tvm_runs == 2  # the dynamo graph ran in TVM too: under the default policy, proof all its tasks got records
    assert str(backend.served(graphs)) == compiled.last.coverage(), "watch() sees the graph dynamo's call was served by"


def test_a_shape_compiled_in_the_block_keeps_its_tuned_build_after_it(tiny_log: Path) -> None:
    """Compile and warm up inside the block, serve after it: no recompile, the tuned build runs."""
    model, x = tiny()
    torch._dynamo.reset()
    with tunebench.apply_history_best(tiny_log):
        fast = torch.compile(model, backend="tunebench")
        with torch.no_grad(), backend.watch() as inside:
            fast(x)
    compiles, runs = cache.STATS.compiles, cache.STATS.tvm_runs
    with torch.no_grad(), backend.watch() as after:
        check_close(fast(x), model(x))
    assert cache.STATS.compiles == compiles, "a call after the block recompiled"
    assert cache.STATS.tvm_runs == runs + 1
    assert len(after) == 1 and after[0] is inside[0] and after[0].applied, "served by another build than the block's tuned one"


def test_enable_sets_records_for_the_script(tiny_log: Path) -> None:
    model, x = tiny()
    tunebench.enable(logs=tiny_log, opt_level=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", backend.UntunedFallbackWarning)
        assert tunebench.compile(model, x).last.applied


def test_foreign_isa_records_are_skipped(tiny_log: Path, tmp_path: Path, fake_host: Callable[[str], Host]) -> None:
    foreign = rewritten(tiny_log, tmp_path / "foreign.jsonl", target={"mcpu": "skylake-avx512"})
    record = read_log(foreign).records[0]
    skylake = TargetSpec("avx512", {"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": 2})
    assert unusable_reason(record, skylake, host_flags=HOSTS["xeon"].flags) == ""
    assert unusable_reason(record, skylake, host_flags=HOSTS["zen3"].flags).startswith("CPU lacks avx512")  # the host lacks AVX-512
    fake_host("zen3")  # an AVX2-only host: the log's target is not runnable, serving falls back to avx2

    model, x = tiny()
    with pytest.warns(ForeignRecordWarning, match="skylake-avx512"), tunebench.apply_history_best(foreign) as cfg:
        assert cfg.best == {}
        compiled = tunebench.compile(model, x, fallback="never")
        assert compiled.last.applied == [] and compiled.last.subgraphs[0].runner == "tvm"
        check_close(compiled(x), model(x))


class ManyOutputs(torch.nn.Module):
    """Outputs in another order than computed, one twice, and the input itself."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y = self.conv(x)
        z = torch.relu(y) * 2
        return (z, y, z, x)


def test_remembered_split_serves_the_graph_outputs_in_order(tmp_path: Path) -> None:
    """A new process (here: dynamo and memory reset) serves a graph whose split is remembered from
    the cached library alone, without exporting or partitioning, each output where the graph puts it."""
    torch.manual_seed(0)
    model, x = ManyOutputs().eval(), torch.randn(1, 3, 8, 8)
    options = {"fallback": "never", "cache_dir": str(tmp_path / "c")}
    with torch.no_grad():
        first = torch.compile(model, backend="tunebench", options=options)(x)
        torch._dynamo.reset()
        cache.CACHE.memory.clear()
        again = torch.compile(model, backend="tunebench", options=options)(x)
        want = model(x)
    assert (cache.STATS.compiles, cache.STATS.plan_hits, cache.STATS.disk_hits) == (1, 1, 1)
    for got in (first, again):
        for g, w in zip(got, want, strict=True):
            check_close(g, w)
