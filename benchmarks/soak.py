"""Soak: one process serving a model through the backend with an ``apply_history_best`` block per call.

The server shape issue 23 found leaking: ``torch.compile(model, backend="tunebench")`` once, then
every request as ``with apply_history_best(log): fast(x)`` (+12 MB and 7x the call time per
request before the fix, ResNet18 on the Intel emeraldrapids host). Here: N block-wrapped calls
(default 10,000) cycling over a handful of logs (by default two copies each of the shipped ResNet18
avx2 and avx512 logs: copies have equal content and must share one graph), then a phase with 8 threads doing the same. A log with no
record usable on this host is left out, and said so: it would serve untuned code and prove nothing.

Reported: RSS after warm-up, its peak over the single-thread phase and at the end of each phase;
calls/s; per log content, each block-wrapped call's time against the same call inside one block
(median, p90; the one-block calls are timed in bursts between chunks of block-wrapped calls, so
drift hits both alike); and what the cache compiled, loaded or planned after warm-up (must be
nothing). The issue's targets: RSS within 50 MB of its warm-up value, each call within 10% of the
same call inside one block, no rebuild after the first.

    nice -n 5 .venv/bin/python benchmarks/soak.py --json benchmarks/results/soak-resnet18-znver3.json
    .venv/bin/python benchmarks/soak.py --model tests/fixtures/tiny.py:tiny_conv --logs my.jsonl --calls 500
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LOGS = [ROOT / "tuning_logs/resnet18-avx2.jsonl.gz", ROOT / "tuning_logs/resnet18-avx512.jsonl.gz"]
COUNTERS = ("compiles", "disk_hits", "memory_hits", "plan_hits")  # any of them after warm-up is a rebuild
RSS_TARGET_MB, TIME_TARGET = 50.0, 1.10


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def summary(samples: list[float]) -> dict[str, float]:
    ms = sorted(s * 1e3 for s in samples)
    return {"median_ms": statistics.median(ms), "p90_ms": ms[min(len(ms) - 1, int(0.9 * len(ms)))], "n": len(ms)}


def usable_logs(paths: list[Path], copies: int, folder: Path) -> tuple[dict[str, list[Path]], list[str]]:
    """The logs to cycle over, grouped by config content (``token``): ``copies`` copies of each log
    with a record usable here; and why the others were left out."""
    from tunebench.serve.context import make_config

    groups: dict[str, list[Path]] = {}
    skipped = []
    for i, path in enumerate(paths):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cfg = make_config(path)
        if not cfg.best:
            foreign = "; ".join(str(w.message) for w in caught)
            skipped.append(f"{path.name}: no record usable on this host for {cfg.target.name} ({cfg.target.mcpu}){': ' + foreign if foreign else ''}")
            continue
        copied = [Path(shutil.copy(path, folder / f"{i}-{c}-{path.name}")) for c in range(copies)]
        groups.setdefault(cfg.token, []).extend(copied)
    return groups, skipped


class Soak:
    """The served model, the logs it cycles over, and the samples collected."""

    def __init__(self, fast: Any, x: Any, groups: dict[str, list[Path]]) -> None:
        self.fast, self.x, self.groups = fast, x, groups
        self.cycle = [p for paths in itertools.zip_longest(*groups.values()) for p in paths if p is not None]  # contents alternate
        self.content = {p: token for token, ps in groups.items() for p in ps}
        self.wrapped: dict[str, list[float]] = {t: [] for t in groups}  # per content: block-wrapped calls
        self.inside: dict[str, list[float]] = {t: [] for t in groups}  # per content: calls inside one block
        self._lock = threading.Lock()

    def wrapped_calls(self, n: int, start: int = 0) -> list[tuple[str, float]]:
        """``n`` calls, each in its own block, cycling over the logs; (content, seconds) per call."""
        import torch

        import tunebench

        out = []
        with torch.no_grad():
            for i in range(start, start + n):
                path = self.cycle[i % len(self.cycle)]
                t = time.perf_counter()
                with tunebench.apply_history_best(path):
                    self.fast(self.x)
                out.append((self.content[path], time.perf_counter() - t))
        return out

    def burst(self, calls: int) -> None:
        """Per content, ``calls`` calls inside one block: the time a call takes without a block of its own."""
        import torch

        import tunebench

        with torch.no_grad():
            for token, paths in self.groups.items():
                with tunebench.apply_history_best(paths[0]):
                    for _ in range(calls):
                        t = time.perf_counter()
                        self.fast(self.x)
                        self.inside[token].append(time.perf_counter() - t)

    def record(self, samples: list[tuple[str, float]]) -> None:
        with self._lock:
            for token, s in samples:
                self.wrapped[token].append(s)


def counters() -> dict[str, int]:
    import tunebench

    s = tunebench.stats()
    return {k: getattr(s, k) for k in (*COUNTERS, "tvm_runs")}


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from tunebench.serve import backend
    from tunebench.zoo import get_model

    if args.cache_dir:
        os.environ["TUNEBENCH_CACHE_DIR"] = str(args.cache_dir)
    folder = Path(tempfile.mkdtemp(prefix="tunebench-soak-"))
    try:
        groups, skipped = usable_logs(args.logs, args.copies, folder)
        for line in skipped:
            print(f"left out: {line}", flush=True)
        if not groups:
            raise SystemExit("no log has a record usable on this host: nothing to soak")
        model, (x,) = get_model(args.model)
        soak = Soak(torch.compile(model, backend="tunebench"), x, groups)
        with backend.watch() as graphs:
            t0 = time.perf_counter()
            soak.wrapped_calls(len(soak.cycle))  # the first block of each content compiles
            first_s = time.perf_counter() - t0
            check(soak, model, x)
            soak.wrapped_calls(args.warmup)
            soak.burst(args.burst)
            warm, warm_rss = counters(), rss_mb()
            print(f"warm-up: {first_s:.1f} s for the first blocks, {warm['compiles']} compiles; RSS {warm_rss:.0f} MB", flush=True)
            single = single_phase(soak, args)
            after_single = counters()
            threaded = thread_phase(soak, args)
            end = counters()
        served = str(backend.served(graphs))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    contents = {}
    for token, paths in groups.items():
        w, i = summary(soak.wrapped[token]), summary(soak.inside[token])
        ratio = {k: w[k] / i[k] for k in ("median_ms", "p90_ms")}
        names = sorted({p.name.split("-", 2)[2] for p in paths})  # the copies' names: "<log>-<copy>-<name>"
        contents[token[:12]] = {"logs": names, "copies": len(paths), "block_per_call": w, "inside_one_block": i, "ratio": ratio}
    rebuilt = {k: end[k] - warm[k] for k in COUNTERS}
    return {
        "model": args.model,
        "served": served,
        "graphs": len(graphs),
        "skipped": skipped,
        "warmup": {"first_blocks_s": first_s, "compiles": warm["compiles"], "rss_mb": warm_rss},
        "single": single,
        "threads": threaded,
        "contents": contents,
        "after_warmup": rebuilt,
        "after_single": {k: after_single[k] - warm[k] for k in COUNTERS},
        "targets": {
            "rss_flat_mb": single["rss_peak_mb"] - warm_rss,
            "rss_ok": single["rss_peak_mb"] - warm_rss <= RSS_TARGET_MB,
            "time_ok": all(c["ratio"]["median_ms"] <= TIME_TARGET and c["ratio"]["p90_ms"] <= TIME_TARGET for c in contents.values()),
            "no_rebuild": not any(rebuilt.values()) and len(graphs) == len(groups),
        },
    }


def check(soak: Soak, model: Any, x: Any) -> None:
    """Each content's build computes the model (a soak of a wrong answer would prove nothing)."""
    import torch

    import tunebench

    with torch.no_grad():
        want = model(x)
        for paths in soak.groups.values():
            with tunebench.apply_history_best(paths[0]):
                torch.testing.assert_close(soak.fast(x), want, rtol=1e-3, atol=1e-3)


def single_phase(soak: Soak, args: argparse.Namespace) -> dict[str, Any]:
    """``args.calls`` block-wrapped calls in chunks, a burst inside one block and an RSS sample after each."""
    done, busy, trace = 0, 0.0, []
    while done < args.calls:
        n = min(args.chunk, args.calls - done)
        t = time.perf_counter()
        samples = soak.wrapped_calls(n, start=done)
        busy += time.perf_counter() - t
        soak.record(samples)
        soak.burst(args.burst)
        done += n
        trace.append(round(rss_mb(), 1))
        print(f"{done:>6} calls: {n / sum(s for _, s in samples):.1f} calls/s, RSS {trace[-1]:.0f} MB", flush=True)
    return {"calls": done, "calls_per_s": done / busy, "rss_trace_mb": trace, "rss_peak_mb": max(trace), "rss_end_mb": trace[-1]}


def thread_phase(soak: Soak, args: argparse.Namespace) -> dict[str, Any]:
    """``args.threads`` threads, each ``args.thread_calls // args.threads`` block-wrapped calls."""
    if args.threads < 1 or args.thread_calls < 1:
        return {}
    each, before = args.thread_calls // args.threads, rss_mb()
    samples: list[list[tuple[str, float]]] = []
    done = threading.Lock()

    def serve(k: int) -> None:
        got = soak.wrapped_calls(each, start=k)
        with done:
            samples.append(got)

    threads = [threading.Thread(target=serve, args=(k,)) for k in range(args.threads)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t
    flat = [s for got in samples for _, s in got]
    out = {"threads": args.threads, "calls": len(flat), "calls_per_s": len(flat) / wall, "per_call": summary(flat)}
    out |= {"rss_before_mb": before, "rss_end_mb": rss_mb()}
    print(f"{args.threads} threads: {out['calls_per_s']:.1f} calls/s, RSS {before:.0f} -> {out['rss_end_mb']:.0f} MB", flush=True)
    return out


def report(doc: dict[str, Any]) -> None:
    host, r = doc["host"], doc["result"]
    print(f"\n{r['model']}: {r['served']}; host {host['cpu']} ({host['llvm_cpu']}, {host['cores']} cores)")
    s = r["single"]
    rss = f"RSS after warm-up {r['warmup']['rss_mb']:.0f} MB, peak {s['rss_peak_mb']:.0f}, end {s['rss_end_mb']:.0f}"
    print(f"single thread: {s['calls']} block-wrapped calls, {s['calls_per_s']:.1f} calls/s; {rss}")
    for token, c in r["contents"].items():
        w, i = c["block_per_call"], c["inside_one_block"]
        print(
            f"  {', '.join(c['logs'])} ({c['copies']} copies, config {token}): block per call {w['median_ms']:.2f} ms (p90 {w['p90_ms']:.2f}), "
            f"inside one block {i['median_ms']:.2f} ms (p90 {i['p90_ms']:.2f}): x{c['ratio']['median_ms']:.3f} (p90 x{c['ratio']['p90_ms']:.3f})"
        )
    if r["threads"]:
        t = r["threads"]
        rss = f"RSS {t['rss_before_mb']:.0f} -> {t['rss_end_mb']:.0f} MB"
        print(f"{t['threads']} threads: {t['calls']} calls, {t['calls_per_s']:.1f} calls/s, median {t['per_call']['median_ms']:.1f} ms; {rss}")
    print(f"after warm-up: {r['after_warmup']} (compiles {r['warmup']['compiles']} in warm-up), graphs {r['graphs']}")
    print(f"targets: {r['targets']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--logs", type=Path, nargs="+", default=LOGS)
    ap.add_argument("--copies", type=int, default=2, help="copies of each usable log to cycle over (equal content: one graph)")
    ap.add_argument("--calls", type=int, default=10_000, help="block-wrapped calls on one thread")
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--thread-calls", type=int, default=2_000, help="block-wrapped calls over all threads")
    ap.add_argument("--chunk", type=int, default=500, help="block-wrapped calls between bursts inside one block")
    ap.add_argument("--burst", type=int, default=25, help="calls per content inside one block, after each chunk")
    ap.add_argument("--warmup", type=int, default=50, help="block-wrapped calls after the first compiles, before the RSS baseline")
    ap.add_argument("--cache-dir", type=Path, help="the compile cache (default: tunebench's)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    from tunebench.target import host_fingerprint

    doc = {"command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d"), "host": host_fingerprint(), "result": run(args)}
    report(doc)
    if args.json:
        args.json.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
