"""PyTorch and TVM in one process: does each runtime slow the other down when their calls interleave?

Both keep worker threads that spin after a parallel region (libgomp for PyTorch's ops, TVM's own
pool for the tuned subgraphs); on 2 cores a spinning pool steals the other's cores. Per
``OMP_WAIT_POLICY`` value (unset, PASSIVE, ACTIVE; each in a fresh process, since libgomp reads it
once), ResNet18 served through ``torch.compile(backend="tunebench")`` with the shipped log is timed
in rounds of three blocks: eager alone (consecutive calls), tunebench alone, then the two
interleaved call by call (eager right after a TVM call and vice versa). Rounds spread drift over
the blocks. Reported: median and p90 per block, and interleaved / alone per runtime (the issue's
target: within 10%).

    .venv/bin/python benchmarks/threading_model.py --rounds 6 --calls 10 --json benchmarks/results/threading-znver4.json
    .venv/bin/python benchmarks/threading_model.py --torch-first ...   # torch imported first: libgomp's defaults
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
POLICIES = ("unset", "PASSIVE", "ACTIVE")
USER_SPIN = os.environ.get("GOMP_SPINCOUNT")  # before this process imports tunebench, which may set it
BLOCKS = ("eager alone", "tunebench alone", "eager interleaved", "tunebench interleaved")


def _stats(samples: list[float]) -> dict[str, float]:
    ms = sorted(x * 1e3 for x in samples)
    return {"median_ms": statistics.median(ms), "p90_ms": ms[min(len(ms) - 1, int(0.9 * len(ms)))], "n": len(ms)}


def child(model_name: str, log: str, rounds: int, calls: int, torch_first: bool) -> dict[str, Any]:
    """Run in the process whose environment carries the policy: time the blocks, return their stats.
    tunebench is imported first (so it can bound libgomp's spinning, ``tunebench.serve.spin``) unless ``torch_first``."""
    import importlib

    for name in ("torch", "tunebench") if torch_first else ("tunebench", "torch"):  # torch loads libgomp
        importlib.import_module(name)
    import torch

    import tunebench
    from tunebench.serve import backend
    from tunebench.serve.spin import openmp_spin
    from tunebench.zoo import get_model

    model, (x,) = get_model(model_name)
    with tunebench.apply_history_best(log):
        fast = torch.compile(model, backend="tunebench")
        with torch.no_grad(), backend.watch() as graphs:
            torch.testing.assert_close(fast(x), model(x), rtol=1e-3, atol=1e-3)
    served = str(backend.served(graphs))
    samples: dict[str, list[float]] = {b: [] for b in BLOCKS}

    def timed(fn: Any, block: str) -> None:
        t = time.perf_counter()
        fn(x)
        samples[block].append(time.perf_counter() - t)

    with torch.no_grad():
        for _ in range(3):  # warm up both, after the block as a server would
            model(x), fast(x)
        for _ in range(rounds):
            for _ in range(calls):
                timed(model, "eager alone")
            for _ in range(calls):
                timed(fast, "tunebench alone")
            for _ in range(calls):
                timed(model, "eager interleaved")
                timed(fast, "tunebench interleaved")
    out = {b: _stats(s) for b, s in samples.items()}
    out["served"] = served
    out["openmp_spin"] = openmp_spin()
    return out


def _run_policy(policy: str, args: argparse.Namespace) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    if USER_SPIN is not None:
        env["GOMP_SPINCOUNT"] = USER_SPIN
    if policy != "unset":
        env["OMP_WAIT_POLICY"] = policy
    cmd = [sys.executable, __file__, "--child", "--model", args.model, "--log", args.log, "--rounds", str(args.rounds), "--calls", str(args.calls)]
    cmd += ["--torch-first"] if args.torch_first else []
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"child ({policy}) failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--log", default="tuning_logs/resnet18-avx2.jsonl.gz")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--calls", type=int, default=10)
    ap.add_argument("--policies", default=",".join(POLICIES))
    ap.add_argument("--json", type=Path)
    ap.add_argument("--torch-first", action="store_true", help="import torch before tunebench (libgomp's default spinning stays)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.model, args.log, args.rounds, args.calls, args.torch_first)))
        return
    from tunebench.target import host_fingerprint

    results = {p: _run_policy(p, args) for p in args.policies.split(",")}
    host = host_fingerprint()
    print(f"{args.model}, {args.log}, {args.rounds} rounds x {args.calls} calls per block; host {host['cpu']} ({host['llvm_cpu']})")
    print(f"{'OMP_WAIT_POLICY':<16}" + "".join(f"{b:>26}" for b in BLOCKS) + f"{'eager int/alone':>17}{'tvm int/alone':>15}")
    for policy, r in results.items():
        cells = "".join(f"{r[b]['median_ms']:>15.2f} (p90 {r[b]['p90_ms']:6.2f})" for b in BLOCKS)
        e = r["eager interleaved"]["median_ms"] / r["eager alone"]["median_ms"]
        t = r["tunebench interleaved"]["median_ms"] / r["tunebench alone"]["median_ms"]
        print(f"{policy:<16}{cells}{e:>17.2f}{t:>15.2f}")
        print(f"{'':<16}served: {r['served']}; {r['openmp_spin']}")
    if args.json:
        doc = {"model": args.model, "log": args.log, "rounds": args.rounds, "calls": args.calls, "torch_first": args.torch_first, "host": host}
        doc["date"] = time.strftime("%Y-%m-%d")
        doc["results"] = results
        args.json.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
