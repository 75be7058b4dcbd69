"""Warm start: how long a new process takes to its first ResNet18 output when the disk cache holds the build.

A server restarts, or a second worker starts: the compile cache (``~/.cache/tunebench``) already
holds the TVM library and the log's serving digest. One process fills a fresh cache directory;
then ``--runs`` fresh processes each time their stages from the interpreter's start: importing
torch, importing tunebench and TVM, ``apply_history_best`` (reading the log), and
``torch.compile`` + the first call (dynamo's trace, the backend's export and partition, the cache
load), each reported as a median over the runs, with the cache counters of the last run.

    .venv/bin/python benchmarks/warm_start.py --runs 5 --json benchmarks/results/warm-start-znver4.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("import torch", "import tunebench + tvm", "apply_history_best", "compile + first call", "total")

CHILD = """
import time
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
import tvm, tunebench
from tunebench.zoo import get_model
t2 = time.perf_counter()
model, (x,) = get_model({model!r})
t3 = time.perf_counter()
with tunebench.apply_history_best({log!r}):
    t4 = time.perf_counter()
    fast = torch.compile(model, backend="tunebench")
    with torch.no_grad():
        fast(x)
t5 = time.perf_counter()
from tunebench.cache import STATS
import json
print(json.dumps({{"import torch": t1 - t0, "import tunebench + tvm": t2 - t1, "model": t3 - t2, "apply_history_best": t4 - t3,
                  "compile + first call": t5 - t4, "total": t5 - t0, "compiles": STATS.compiles, "disk_hits": STATS.disk_hits}}))
"""


def _child(model: str, log: str, cache_dir: str) -> dict[str, float]:
    env = {**os.environ, "TUNEBENCH_CACHE_DIR": cache_dir}
    proc = subprocess.run([sys.executable, "-c", CHILD.format(model=model, log=log)], env=env, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--log", default="tuning_logs/resnet18-avx2.jsonl.gz")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    from tunebench.target import host_fingerprint

    with tempfile.TemporaryDirectory() as cache_dir:
        cold = _child(args.model, args.log, cache_dir)
        runs = [_child(args.model, args.log, cache_dir) for _ in range(args.runs)]
    host = host_fingerprint()
    print(f"{args.model}, {args.log}; host {host['cpu']} ({host['llvm_cpu']}); cold process (empty cache): {cold['total']:.2f} s")
    medians = {s: statistics.median(r[s] for r in runs) for s in STAGES}
    for s in STAGES:
        print(f"  {s:<24} median {medians[s]:6.2f} s   (runs: {', '.join(f'{r[s]:.2f}' for r in runs)})")
    print(f"  last run: {runs[-1]['compiles']} compiles, {runs[-1]['disk_hits']} disk hits")
    if args.json:
        doc = {"model": args.model, "log": args.log, "host": host, "date": time.strftime("%Y-%m-%d"), "cold": cold, "runs": runs, "medians": medians}
        args.json.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
