"""A server that opens an ``apply_history_best`` block per request: the small version of
``benchmarks/soak.py`` (ResNet18, 10,000 calls). Blocks with equal logs and settings share one
graph, nothing is built, loaded or planned again after the first block of each config, memory stays
flat, and what the backend keeps per config is bounded by the compile cache.
"""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

import tunebench
from tests.conftest import rewritten
from tunebench.serve import backend, cache, keys
from tunebench.serve.context import activate, make_config
from tunebench.zoo import get_model

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "tests/fixtures/tiny.py") + ":tiny_conv"
CALLS = 300

pytestmark = pytest.mark.usefixtures("fresh_serving")  # tests.conftest: counters, builds and cache start empty


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def served_per_block(fast: torch.nn.Module, logs: list[Path], x: torch.Tensor, calls: int) -> torch.Tensor:
    """``calls`` calls, each in its own block, cycling over ``logs`` (no_grad here: it is per thread)."""
    out = x
    with torch.no_grad():
        for i in range(calls):
            with tunebench.apply_history_best(logs[i % len(logs)]):
                out = fast(x)
    return out


def test_a_block_per_request_shares_graphs_and_rebuilds_nothing(tiny_log: Path, tmp_path: Path) -> None:
    # two copies of one log (one config), and the same schedules timed "on another machine" (another config)
    logs = [Path(shutil.copy(tiny_log, tmp_path / f"copy{i}.jsonl")) for i in range(2)]
    logs.append(rewritten(tiny_log, tmp_path / "elsewhere.jsonl", host={"llvm_cpu": "elsewhere"}))
    model, (x,) = get_model(TINY)
    fast = torch.compile(model, backend="tunebench")
    with backend.watch() as graphs:
        served_per_block(fast, logs, x, len(logs))  # the first block of each config builds
        with ThreadPoolExecutor(8) as pool:  # each serving thread's first call (TVM sizes a pool per thread)
            list(pool.map(lambda _: served_per_block(fast, logs, x, len(logs)), range(8)))
        warm, warm_rss = cache.stats(), rss_mb()
        out = served_per_block(fast, logs, x, CALLS)
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda _: served_per_block(fast, logs, x, CALLS // 8), range(8)))
        end, end_rss = cache.stats(), rss_mb()
    with torch.no_grad():
        torch.testing.assert_close(out, model(x), rtol=1e-3, atol=1e-3)
    assert warm.compiles == 2 and len(graphs) == 2, "the two copies of one log should share one graph"
    rebuilt = {k: getattr(end, k) - getattr(warm, k) for k in ("compiles", "disk_hits", "memory_hits", "plan_hits")}
    assert rebuilt == dict.fromkeys(rebuilt, 0), "a block after the first of its config built, loaded or planned again"
    assert end.tvm_runs - warm.tvm_runs == CALLS + 8 * (CALLS // 8)
    assert end_rss - warm_rss < 50, f"RSS grew {end_rss - warm_rss:.0f} MB over {2 * CALLS} block-wrapped calls"


def test_graphs_live_as_long_as_the_cache_holds_their_builds(monkeypatch: pytest.MonkeyPatch) -> None:
    """New logs and settings keep coming to a server: the dispatcher keeps graphs (and the configs,
    locks and VMs with them) only of builds the compile cache's memory still holds."""
    monkeypatch.setattr(cache.CACHE, "max_bytes", 1)  # memory holds the newest entry only
    model, (x,) = get_model(TINY)
    aot = tunebench.compile(model, x, fallback="never")  # built under the default config
    with torch.no_grad(), activate(make_config(opt_level=2)):
        torch.testing.assert_close(aot(x), model(x), rtol=1e-3, atol=1e-3)
    assert cache.STATS.compiles == 2 and list(cache.CACHE.memory) == [aot.last.subgraphs[0].cache_key]
    assert list(aot.graphs.values()) == [aot.last] and len(aot._configs) == 1
    assert aot._building == {} and cache.CACHE._key_locks == {}


def test_a_new_config_hashes_the_weights_only_if_they_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A config that differs only in threads is served by the plan of the first one's build: its
    key's weight digest is reused, not hashed again, until a weight changes."""
    hashed: list[int] = []
    real = keys.tensor_bytes
    monkeypatch.setattr(keys, "tensor_bytes", lambda t: hashed.append(t.numel()) or real(t))
    model, (x,) = get_model(TINY)
    fast = torch.compile(model, backend="tunebench", options={"fallback": "never"})
    with torch.no_grad():
        with activate(make_config(num_threads=1)):
            fast(x)
        first = len(hashed)
        with activate(make_config(num_threads=2)):
            torch.testing.assert_close(fast(x), model(x), rtol=1e-3, atol=1e-3)
        assert (cache.STATS.plan_hits, len(hashed)) == (1, first), "the second config hashed the weights again"
        model.conv1.weight.mul_(-1.0)
        with activate(make_config(num_threads=2)), pytest.warns(backend.WeightsChangedWarning):
            torch.testing.assert_close(fast(x), model(x), rtol=1e-3, atol=1e-3)
    assert len(hashed) > first
